"""Redis connections for the two kinds of process, with timeouts that suit each."""

from __future__ import annotations

import redis
import redis.asyncio

from service.secret import Secret

# Short timeouts in the ingress: an outage must become a quick 503, not a hung request.
_CONNECT_TIMEOUT, _SOCKET_TIMEOUT = 2.0, 5.0


def connect_service(url: Secret) -> redis.asyncio.Redis:
    """The ingress's client: used on the event loop by the intake and /readyz."""
    return redis.asyncio.Redis.from_url(
        url.reveal(), socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_SOCKET_TIMEOUT, health_check_interval=30
    )


def connect_service_sync(url: Secret) -> redis.Redis:
    """A blocking client for work that runs in a thread: the queue gauges read at scrape time."""
    return redis.Redis.from_url(
        url.reveal(), socket_connect_timeout=_CONNECT_TIMEOUT, socket_timeout=_SOCKET_TIMEOUT, health_check_interval=30
    )


def connect_worker(url: Secret) -> redis.Redis:
    """A connection for an RQ worker: no socket timeout, because rq blocks on BLMOVE for minutes."""
    return redis.Redis.from_url(url.reveal(), socket_connect_timeout=5.0, health_check_interval=30)
