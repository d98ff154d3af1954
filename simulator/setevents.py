"""What Akamai and Janrain put on the wire for one profile change.

Webhooks v3 (protocol reference 3.1-3.3): one Security Event Token per request, signed RS256,
header ``{"alg","jku","kid","typ":"secevent+jwt"}``, claims ``aud`` (a list of one URL), ``iat``,
``iss`` (the URL form), ``toe``, ``jti`` and ``events`` holding exactly one event. The member
order follows the reference's vector 6.4 (a).

Legacy webhooks (2.1, 6.3): a JSON array of ``{"uuid","datetime","entityType","hash"}``. Only
``uuid`` and ``hash`` are confirmed names; no action key is sent, because a legacy webhook is
registered per event type and the reference shows none.
"""

from __future__ import annotations

import re
import uuid as uuid_module
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from simulator.config import SimulatorConfig
from simulator.keys import KeyRing
from simulator.profiles import ProfileChange, capture_time

V3_HEADERS = {
    "User-Agent": "Akamai Identity Cloud Webhooks/3.0",
    "Accept": "*/*",
    "Content-Type": "application/secevent+jwt",
}
# The reference knows nothing of legacy headers beyond a JSON body.
LEGACY_HEADERS = {"Content-Type": "application/json"}
JWT_TYP = "secevent+jwt"  # RFC 8417
_REGION_HOST = re.compile(r"v1\.api\.([a-z]+)\.janrain\.com")


@dataclass(frozen=True, slots=True)
class SignedEvent:
    """A v3 token and the claims inside it."""

    token: str
    claims: dict[str, Any]

    @property
    def jti(self) -> str:
        """The delivery's unique id (the receiver's dedup key)."""
        return str(self.claims["jti"])

    @property
    def kind(self) -> str:
        """The event type: ``entityCreated``, ``entityUpdated``, ``entityDeleted`` or ``test``."""
        return str(next(iter(self.claims["events"])))

    @property
    def event_id(self) -> str:
        """The ``id`` inside the event."""
        return str(next(iter(self.claims["events"].values()))["id"])


def jwk_url(config: SimulatorConfig) -> str:
    """The JWK page; every token names it as ``jku``."""
    return f"{config.base_url.rstrip('/')}/{config.customer_id}/login/jwk"


def issuer(config: SimulatorConfig) -> str:
    """The ``iss`` of current Akamai tokens: the customer's webhooks URL."""
    return f"{config.base_url.rstrip('/')}/{config.customer_id}/webhooks"


def global_sub(config: SimulatorConfig, entity_type: str, uuid: str) -> str:
    """``capture-v1://<region>.janraincapture.com/<appId>/<entityType>/<uuid>``.

    The region comes from a ``v1.api.<region>.janrain.com`` base URL, else ``us``.
    """
    match = _REGION_HOST.fullmatch(urlsplit(config.base_url).hostname or "")
    region = match.group(1) if match else "us"
    return f"capture-v1://{region}.janraincapture.com/{config.application_id}/{entity_type}/{uuid}"


def token_header(config: SimulatorConfig, kid: str) -> dict[str, str]:
    """The JWS header, members in Akamai's order."""
    return {"alg": "RS256", "jku": jwk_url(config), "kid": kid, "typ": JWT_TYP}


def change_event(change: ProfileChange, config: SimulatorConfig, *, event_id: str | None = None) -> dict[str, Any]:
    """The ``events`` claim for one profile change; ``attributes`` on updates only."""
    body: dict[str, Any] = {
        "captureApplicationId": config.application_id,
        "captureClientId": config.api_client.client_id,
        "entityType": change.entity_type,
        "globalSub": global_sub(config, change.entity_type, change.uuid),
        "sub": change.uuid,
    }
    if change.kind == "entityUpdated":
        body["attributes"] = list(change.attributes)
    body["id"] = event_id or str(uuid_module.uuid4())
    return {change.kind: body}


def set_claims(
    config: SimulatorConfig, audience: str, events: dict[str, Any], *, now: float, toe: float, jti: str | None = None
) -> dict[str, Any]:
    """The top-level claims of a Security Event Token (no ``exp``, as Akamai sends none)."""
    return {
        "aud": [audience],
        "iat": int(now),
        "iss": issuer(config),
        "toe": int(toe),
        "jti": jti or str(uuid_module.uuid4()),
        "events": events,
    }


def sign_change(
    change: ProfileChange, config: SimulatorConfig, keys: KeyRing, *, audience: str, now: float
) -> SignedEvent:
    """The token Akamai would send to ``audience`` for this change."""
    claims = set_claims(config, audience, change_event(change, config), now=now, toe=change.at)
    return _signed(config, keys, claims)


def sign_test_event(config: SimulatorConfig, keys: KeyRing, *, audience: str, now: float) -> SignedEvent:
    """The test notification: ``events.test = {"id": <uuid>}``."""
    claims = set_claims(config, audience, {"test": {"id": str(uuid_module.uuid4())}}, now=now, toe=now)
    return _signed(config, keys, claims)


def _signed(config: SimulatorConfig, keys: KeyRing, claims: dict[str, Any]) -> SignedEvent:
    # One read of the signing key, so a rotation in between cannot split header kid and signature.
    signer = keys.signing_key
    return SignedEvent(keys.sign(token_header(config, signer.kid), claims, key=signer), claims)


def legacy_element(change: ProfileChange, callback_hash: str) -> dict[str, str]:
    """One element of a legacy delivery's JSON array."""
    return {
        "uuid": change.uuid,
        "datetime": capture_time(change.at),
        "entityType": change.entity_type,
        "hash": callback_hash,
    }
