"""What the simulator pretends to be: one Capture application of one Akamai customer.

The identifiers and credentials are fake; tests and the ``dev`` demo pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """An API client as Capture knows it: an id and a secret."""

    client_id: str
    client_secret: str


@dataclass(slots=True)
class SimulatorConfig:
    """Start-up settings; the fields that faults and tests change at run time live in ``Faults``."""

    # The public base URL the simulator is reached at (``http://127.0.0.1:PORT``); it becomes the
    # ``jku`` and ``iss`` of the tokens it signs, so it is set once the port is known.
    base_url: str = "http://127.0.0.1:8900"
    customer_id: str = "b18fc81d-457e-4a40-ac87-2b78bd946fa2"
    application_id: str = "zzyn9gy9r8xdy5zkru4y54syk6"
    # The Capture API client (entity, entity.find, versions, webhooks/*).
    api_client: ClientCredentials = field(
        default_factory=lambda: ClientCredentials("sim-api-client-000000000000000", "sim-api-secret-00000000000000000")
    )
    # The Akamai configuration client that may fetch a bearer token for the v3 subscription API.
    config_client: ClientCredentials = field(
        default_factory=lambda: ClientCredentials("sim-config-client-000000000000", "sim-config-secret-0000000000000")
    )
    entity_types: tuple[str, ...] = ("user",)
    # Capture answers code 510 past this many simultaneous API calls; None means no limit.
    max_concurrent_calls: int | None = None
    # The HTTP status of Capture API error envelopes: "ok" answers 200 with ``stat: error`` as
    # Janrain's own client tests show; "mapped" answers 4xx/5xx by code (402 -> 401, 310 -> 404,
    # 510 -> 510, 500 -> 500 ...), as some tenants and proxies do. Clients must handle both.
    error_http_status: Literal["ok", "mapped"] = "ok"
    # Lifetime of the bearer tokens of the v3 API (Akamai: one hour).
    token_ttl: float = 3600.0
    # Subscriptions per page of the v3 list.
    page_size: int = 25
    # How far the janrain-signed ``Date`` header may be from the simulator's clock.
    signature_skew: float = 300.0
    # How many RSA keys the JWK page publishes (Akamai creates three per subscriber).
    key_count: int = 3
