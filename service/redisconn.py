"""Redis connections for the two kinds of process, with timeouts that suit each."""

from __future__ import annotations

import redis

from service.secret import Secret


def connect_service(url: Secret) -> redis.Redis:
    """A connection pool for the ingress: short timeouts, so an outage becomes a quick 503."""
    return redis.Redis.from_url(
        url.reveal(),
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
    )


def connect_worker(url: Secret) -> redis.Redis:
    """A connection for an RQ worker: no socket timeout, because rq blocks on BLMOVE for minutes."""
    return redis.Redis.from_url(url.reveal(), socket_connect_timeout=5.0, health_check_interval=30)
