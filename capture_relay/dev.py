"""``capture-relay dev``: Redis, the ingress and a worker on this machine, with nothing to set up.

The legacy route is switched on with a callback hash made up at start; v3 needs a JWKS, which
the Capture simulator will provide once it exists. The hash reaches the worker process through
the environment, not a file.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx2
import uvicorn
import yaml
from rq.job import Job
from rq.serializers import JSONSerializer

from capture_relay.cli import serve_until_stopped, server_config
from capture_relay.embedded_redis import RedisServer
from service.events import job_id_for
from service.logs import configure_logging
from service.redisconn import connect_service_sync
from service.secret import Secret
from service.settings import load

HASH_VARIABLE = "CAPTURE_RELAY_DEV_CALLBACK_HASH"
SAMPLE_UUID = "6b004bc5-179c-45c2-815d-31b06169371d"


def _dev_config(redis_url: str, port: int) -> dict[str, object]:
    return {
        "redis_url": redis_url,
        "sources": {"legacy": {"callback_hashes": [f"${{{HASH_VARIABLE}}}"]}},
        "server": {"host": "127.0.0.1", "port": port},
        "worker": {"maintenance_interval": "10s"},
        "logging": {"format": "console"},
    }


def run_dev(*, port: int, once: bool, environ: Mapping[str, str]) -> int:
    """Run the stack until Ctrl-C (or, with ``once``, until a sample event was processed)."""
    callback_hash = secrets.token_hex(20)
    env = {**environ, HASH_VARIABLE: callback_hash}
    with RedisServer() as redis_server, tempfile.TemporaryDirectory(prefix="capture-relay-dev-") as tmp:
        config_path = Path(tmp) / "capture-relay.yaml"
        config_path.write_text(yaml.safe_dump(_dev_config(redis_server.url, port)), encoding="utf-8")
        settings = load(config_path, env)
        configure_logging(settings.logging.level, settings.logging.format)
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "capture_relay", "worker", "--config", str(config_path)], env=env
        )
        server = uvicorn.Server(server_config(settings, "127.0.0.1", port))
        outcome: list[int] = []
        demo = threading.Thread(
            target=_demo, args=(server, redis_server.url, port, callback_hash, once, outcome), daemon=True
        )
        demo.start()
        try:
            started = serve_until_stopped(server)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
    if not started:
        _say(f"the ingress could not listen on 127.0.0.1:{port}; pick another with --port")
        return 1
    return outcome[0] if outcome else 0


def _demo(
    server: uvicorn.Server, redis_url: str, port: int, callback_hash: str, once: bool, outcome: list[int]
) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/webhooks/capture/legacy"
    body = [{"uuid": SAMPLE_UUID, "datetime": time.strftime("%Y-%m-%d %H:%M:%S.000000 +0000"), "hash": callback_hash}]
    try:
        response = httpx2.post(url, json=body, timeout=5)
    except httpx2.HTTPError as exc:
        _say(f"\nsample legacy webhook could not be sent: {exc}")
        processed = False
    else:
        _say(f"\nsample legacy webhook -> HTTP {response.status_code} {response.text}")
        answer = response.json() if response.status_code == 200 else {}
        processed = answer.get("status") == "accepted" and _wait_for_job(redis_url, answer["event_ids"][0])
    _say(f"worker processed the sample event: {'yes' if processed else 'NO'}")
    _say(
        "\nsend your own (Ctrl-C stops everything):\n"
        f"  curl -si {url} -H 'Content-Type: application/json' \\\n"
        f'    -d \'[{{"uuid": "{SAMPLE_UUID}", "hash": "{callback_hash}"}}]\'\n'
        f"  metrics: http://127.0.0.1:{port}/metrics   readiness: http://127.0.0.1:{port}/readyz\n"
    )
    if once:
        outcome.append(0 if processed else 1)
        server.should_exit = True


def _wait_for_job(redis_url: str, event_id: str, timeout: float = 30.0) -> bool:
    connection = connect_service_sync(Secret(redis_url))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            job = Job.fetch(job_id_for("legacy", event_id), connection=connection, serializer=JSONSerializer)
            if job.get_status() == "finished":
                return True
            time.sleep(0.1)
        return False
    finally:
        connection.close()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
