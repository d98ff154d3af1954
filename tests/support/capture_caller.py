"""A separate process that calls the Capture simulator through ``capture_client``, for tests
that need several processes sharing one limiter (``python -m tests.support.capture_caller``).

Prints one JSON line: ``{"ok": n, "errors": {reason: n}}``.
"""

from __future__ import annotations

import argparse
import json
import sys

import redis

from service.settings import from_mapping
from workers.capture_errors import CaptureError
from workers.capture_setup import capture_client


def main() -> int:
    """Make ``--calls`` calls of ``/entity`` for ``--uuid`` and report how they went."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--capture-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--uuid", required=True)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--max-concurrency", type=int, default=2)
    parser.add_argument("--timeout", default="5s")
    parser.add_argument("--retry-deadline", default="30s")
    args = parser.parse_args()
    settings = from_mapping(
        {
            "redis_url": args.redis_url,
            "capture": {
                "base_url": args.capture_url,
                "client_id": args.client_id,
                "client_secret": args.client_secret,
                "max_concurrency": args.max_concurrency,
                "timeout": args.timeout,
                "retry_deadline": args.retry_deadline,
            },
        },
        {},
    )
    assert settings.capture is not None
    ok, errors = 0, dict[str, int]()
    connection = redis.Redis.from_url(settings.redis_url.reveal())
    with capture_client(settings.capture, connection=connection) as client:
        sys.stdout.write(json.dumps({"started": True}) + "\n")
        sys.stdout.flush()
        for _ in range(args.calls):
            try:
                client.entity(uuid=args.uuid)
                ok += 1
            except CaptureError as exc:
                errors[exc.reason] = errors.get(exc.reason, 0) + 1
    sys.stdout.write(json.dumps({"ok": ok, "errors": errors}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
