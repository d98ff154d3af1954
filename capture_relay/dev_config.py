"""The sample configuration ``capture-relay dev`` writes into its working folder, with its comments.

The file is rewritten at every start, because the ports are picked then; the ingress and both
workers read it, and ``capture-relay rules check`` / ``rules explain`` accept it as it is.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from simulator.config import ClientCredentials

CONFIG_NAME = "capture-relay.yaml"
ARCHIVE_NAME = "archive.jsonl"


@dataclass(frozen=True, slots=True)
class DevSecrets:
    """Secrets made up for one run: the destinations' signing secret and the legacy callback hash."""

    signing_secret: str
    callback_hash: str

    @classmethod
    def generate(cls) -> DevSecrets:
        """Fresh random values (the demo's are throw-away, never reused)."""
        raw = base64.b64encode(secrets.token_bytes(24)).decode("ascii")
        return cls(signing_secret=f"whsec_{raw}", callback_hash=secrets.token_hex(20))


@dataclass(frozen=True, slots=True)
class DevAddresses:
    """Where each part of the stack listens; all of it on 127.0.0.1."""

    redis_url: str
    simulator: str  # base URL: the Capture API, the JWK page, the control API
    customer_id: str  # the Akamai customer in the simulator's v3 paths
    ingress_port: int
    receiver: str  # base URL of the local receiver: /crm and /archive

    @property
    def ingress(self) -> str:
        """The ingress's base URL."""
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def v3_webhook_url(self) -> str:
        """The ingress's v3 route, which the tokens name as their audience."""
        return f"{self.ingress}/webhooks/capture/v3"

    @property
    def legacy_webhook_url(self) -> str:
        """The ingress's legacy route."""
        return f"{self.ingress}/webhooks/capture/legacy"


def render_config(
    addresses: DevAddresses, api_client: ClientCredentials, dev_secrets: DevSecrets, *, shown_path: str
) -> str:
    """The annotated YAML text of the demo's configuration; ``shown_path`` is the file as the user names it."""
    return _TEMPLATE.format(
        config_hint=shown_path,
        redis_url=addresses.redis_url,
        simulator=addresses.simulator,
        customer=addresses.customer_id,
        audience=addresses.v3_webhook_url,
        callback_hash=dev_secrets.callback_hash,
        client_id=api_client.client_id,
        client_secret=api_client.client_secret,
        ingress_port=addresses.ingress_port,
        receiver=addresses.receiver,
        signing_secret=dev_secrets.signing_secret,
        archive=ARCHIVE_NAME,
    )


_TEMPLATE = """\
# capture-relay dev: the configuration the demo runs with.
#
# `capture-relay dev` writes this file at every start (the ports are picked free each time) and
# starts the ingress and both workers with it. Every key is described in docs/configuration.md,
# the routes in docs/routing.md. Try the rules without running anything:
#   capture-relay rules check   --config {config_hint}
#   capture-relay rules explain --config {config_hint} --event EVENT.json --record RECORD.json
#
# The secrets below were made up for this run and are written out so that the file works as it
# is. In a real deployment each one is a ${{VAR}} or ${{file:/path}} reference, never a literal
# (see deploy/examples/capture-relay.yaml).

# The private redis-server `dev` started. It keeps nothing on disk: every run starts empty.
redis_url: {redis_url}

sources:
  # Akamai Webhooks v3: Security Event Tokens signed with RS256. Here the Capture simulator signs
  # them, and publishes its public keys on this JWK page, as Akamai does per customer.
  v3:
    jwks_url: {simulator}/{customer}/login/jwk
    issuer: {simulator}/{customer}/webhooks
    # The URL the tokens are addressed to: a token minted for another endpoint is refused.
    audience: {audience}
  # Legacy Capture webhooks: no signature, only this shared callback hash in every element.
  legacy:
    callback_hashes: ["{callback_hash}"]

# Where the workers fetch each changed record (webhooks say which record changed, never its
# values): the simulator's Capture API, with its API client.
capture:
  base_url: {simulator}
  client_id: {client_id}
  client_secret: {client_secret}

server:
  host: 127.0.0.1
  port: {ingress_port}

worker:
  # Two jobs at once per worker process is plenty for the demo (production default: 8).
  concurrency: 2
  maintenance_interval: 10s

logging:
  # JSON lines, one per outcome: `dev` reads the workers' (logs/worker-*.log) to print what they did.
  format: json

# Both destinations are the local receiver `dev` runs. Each destination has its own queue of
# retries, rate limit and circuit breaker, so one that is down never holds up the other.
# Both are `http`, so the demo needs nothing but Redis (docs/destinations.md has the database and
# bus types); the JSON-lines file is written by the receiver: every body posted to /archive is
# appended as one line to {archive}.
destinations:
  crm:
    type: http
    url: {receiver}/crm
    # Standard Webhooks signing (webhook-id, webhook-timestamp, webhook-signature); the receiver
    # checks every signature with this secret.
    signing_secret: {signing_secret}
  archive:
    type: http
    url: {receiver}/archive
    signing_secret: {signing_secret}

# Tried in order for every event; each destination gets the event from the first matching route
# that names it, shaped by that route.
routes:
  # Only email changes reach the CRM, and in a small shape: three fields, the email replaced by
  # its SHA-256 (the CRM can match it against its own without reading it), givenName renamed.
  - name: email-changes-to-crm
    on: [entityUpdated]
    changed_any: [email]
    to: [crm]
    fields: [uuid, email, givenName]
    hash: [email]
    rename: {{givenName: firstName}}

  # Every creation, change and deletion, whole, to the archive.
  - name: everything-to-archive
    on: [entityCreated, entityUpdated, entityDeleted]
    to: [archive]
"""
