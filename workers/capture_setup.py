"""Build the Capture clients from the configuration, with their HTTP pool and shared limiter.

The clients are opened once per process (worker start-up, the ``register`` command) and shared
by its threads; the context managers close what they opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from urllib.parse import urlsplit

import httpx2
import redis

from service.settings import CaptureApi
from workers.akamai_api import SubscriptionsClient
from workers.capture_api import CaptureClient
from workers.capture_auth import ClientCredentials
from workers.capture_calls import ApiCaller, CaptureApiMetrics, RetryPolicy
from workers.limits import CallLimiter


def _http(timeout: float, connections: int) -> httpx2.Client:
    # Redirects are not followed: a Capture answer that redirects is a misconfiguration, and
    # following it could send credentials to another host.
    return httpx2.Client(
        timeout=httpx2.Timeout(timeout),
        follow_redirects=False,
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
        headers={"User-Agent": f"capture-relay/{version('capture-relay')}"},
    )


def call_limiter(config: CaptureApi, connection: redis.Redis) -> CallLimiter:
    """The limiter all processes calling this Capture application share (keyed by its host)."""
    return CallLimiter(
        connection,
        name=urlsplit(config.base_url).netloc,
        max_concurrency=config.max_concurrency,
        rate=config.rate_limit,
        # Longer than any attempt can last (connect, send and the bounded read each take at most
        # the timeout), so a live call never loses its slot; a crashed holder's comes back then.
        lease=3 * config.timeout + 5,
    )


@contextmanager
def capture_client(
    config: CaptureApi, *, connection: redis.Redis, metrics: CaptureApiMetrics | None = None
) -> Iterator[CaptureClient]:
    """A ``CaptureClient`` under the shared limits; its connection pool is closed on exit."""
    with _http(config.timeout, max(config.max_concurrency, 1)) as http:
        yield CaptureClient(
            config.base_url,
            ClientCredentials(config.client_id, config.client_secret),
            http=http,
            caller=ApiCaller(
                policy=RetryPolicy(deadline=config.retry_deadline),
                limiter=call_limiter(config, connection),
                metrics=metrics,
            ),
            auth=config.auth,
            entity_type=config.entity_type,
            timeout=config.timeout,
        )


@contextmanager
def subscriptions_client(
    config: CaptureApi, *, metrics: CaptureApiMetrics | None = None
) -> Iterator[SubscriptionsClient]:
    """A client of the v3 subscription API named in ``capture.webhooks_api``.

    Raises:
        ValueError: when ``capture.webhooks_api`` is not configured.
    """
    api = config.webhooks_api
    if api is None:
        raise ValueError("capture.webhooks_api is not configured")
    # Akamai's v3 APIs answer within 10 s; one registration job needs no shared limiter.
    with _http(config.timeout, 2) as http:
        yield SubscriptionsClient(
            api.base_url,
            api.customer_id,
            ClientCredentials(api.client_id, api.client_secret),
            http=http,
            caller=ApiCaller(policy=RetryPolicy(deadline=config.retry_deadline), metrics=metrics),
            timeout=config.timeout,
        )
