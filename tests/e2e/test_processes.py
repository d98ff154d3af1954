"""Real processes: `capture-relay serve` and `worker`, observed only over HTTP, Redis and stdout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx2
import pytest
import redis
import yaml
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from capture_relay.embedded_redis import RedisServer, free_port
from tests.support.servers import JwksEndpoint
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, claims, sign

COMMAND = [sys.executable, "-m", "capture_relay"]


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


def _wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early:\n{process.communicate()[0]}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture
def config_file(tmp_path: Path, redis_server: RedisServer, jwks: tuple[JwksEndpoint, str]) -> Path:
    """A config like an operator's, with the secret hash taken from the environment."""
    path = tmp_path / "capture-relay.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "redis_url": redis_server.url,
                "sources": {
                    "v3": {"jwks_url": jwks[1], "issuer": ISSUER, "audience": AUDIENCE},
                    "legacy": {"callback_hashes": ["${LEGACY_HASH}"]},
                },
                "worker": {"maintenance_interval": "5s", "metrics_port": free_port()},
            }
        )
    )
    return path


@pytest.fixture
def clean_redis(redis_client: redis.Redis) -> redis.Redis:
    """The shared private Redis, empty."""
    return redis_client


def test_serve_and_worker_process_a_v3_event(
    config_file: Path, signing_key: SigningKey, clean_redis: redis.Redis
) -> None:
    """A token posted to `serve` is stored, run by `worker`, and both log JSON lines naming the event."""
    port = free_port()
    env = {"CAPTURE_RELAY_CONFIG": str(config_file), "LEGACY_HASH": "h" * 40}
    server = _spawn("serve", "--port", str(port), env=env)
    worker = _spawn("worker", env=env)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        response = httpx2.post(
            f"http://127.0.0.1:{port}/webhooks/capture/v3",
            content=sign(claims(), signing_key),
            headers={"Content-Type": "application/secevent+jwt"},
        )
        event_id = response.json()["event_ids"][0]
        job = Job(f"event-v3-{event_id}", connection=clean_redis, serializer=JSONSerializer)
        deadline = time.monotonic() + 20
        while job.get_status(refresh=True) != JobStatus.FINISHED and time.monotonic() < deadline:
            time.sleep(0.1)
        status = job.get_status(refresh=True)
        metrics_port = yaml.safe_load(config_file.read_text())["worker"]["metrics_port"]
        worker_metrics = httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        server_log = _stop(server)
        worker_log = _stop(worker)

    assert response.status_code == 202
    assert status == JobStatus.FINISHED
    # uvicorn re-raises SIGTERM after a graceful shutdown, so its status says "terminated".
    assert server.returncode in (0, -signal.SIGTERM)
    assert worker.returncode == 0
    server_lines = [json.loads(line) for line in server_log.splitlines()]
    worker_lines = [json.loads(line) for line in worker_log.splitlines()]
    assert any(line["event"] == "webhook.accepted" and line["event_id"] == event_id for line in server_lines)
    assert any(line["event"] == "event.processed" and line["event_id"] == event_id for line in worker_lines)
    assert any(line["event"] == "Application shutdown complete." for line in server_lines)
    assert 'capture_relay_events_processed_total{outcome="unrouted",type="entityUpdated"} 1.0' in worker_metrics
    assert any("warm shut down requested" in line["event"] for line in worker_lines)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("sources:\n  v3: {}\n", "sources.v3.jwks_url: field required"),
        ("redis_url: ${NOT_SET_ANYWHERE}\n", "redis_url: environment variable NOT_SET_ANYWHERE is not set"),
        ("ingest:\n  max_body_size: lots\n", "ingest.max_body_size: 'lots' is not a size"),
        ("sources: [\n", "not valid YAML at line"),
    ],
    ids=["missing-key", "missing-variable", "bad-size", "bad-yaml"],
)
def test_invalid_config_exits_2_naming_the_key(tmp_path: Path, content: str, expected: str) -> None:
    """A bad config stops `serve` with status 2 and a message that names the key, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(content)

    result = subprocess.run([*COMMAND, "serve", "--config", str(path)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_config_exits_2() -> None:
    """`worker` without --config or CAPTURE_RELAY_CONFIG says how to give one."""
    env = {key: value for key, value in os.environ.items() if key != "CAPTURE_RELAY_CONFIG"}

    result = subprocess.run([*COMMAND, "worker"], capture_output=True, text=True, timeout=30, env=env)

    assert result.returncode == 2
    assert "pass --config FILE or set CAPTURE_RELAY_CONFIG" in result.stderr


def test_version() -> None:
    """`capture-relay version` prints the version of pyproject.toml (the installed one, kept in step)."""
    result = subprocess.run([*COMMAND, "version"], capture_output=True, text=True, timeout=30)

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    assert (result.returncode, result.stdout.strip()) == (0, project["project"]["version"])


def test_serve_on_a_taken_port_exits_1(config_file: Path) -> None:
    """`serve` on a port something else holds logs why and exits 1 (not uvicorn's private status 3)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        result = subprocess.run(
            [*COMMAND, "serve", "--config", str(config_file), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "LEGACY_HASH": "h" * 40},
        )

    assert result.returncode == 1
    assert "address already in use" in result.stdout


def test_worker_without_redis_says_so_in_one_line(tmp_path: Path) -> None:
    """A worker that cannot reach Redis exits 1 with one line naming the masked URL, no traceback."""
    path = tmp_path / "config.yaml"
    path.write_text(f"redis_url: redis://:hunter2@127.0.0.1:{free_port()}/0\n")

    result = subprocess.run([*COMMAND, "worker", "--config", str(path)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 1
    assert "capture-relay: cannot reach Redis at redis://:****@127.0.0.1:" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_worker_with_an_unusable_destination_names_its_key_in_one_line(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A DSN that validated as a string but that libpq cannot read stops the deliveries worker at
    start (exit 2), naming the key, without a traceback and without the password it holds."""
    path = tmp_path / "config.yaml"
    config = {
        "redis_url": redis_server.url,
        "destinations": {"mirror": {"type": "postgres", "dsn": "postgresql://x:p%zzhunter2@db/app", "table": "t"}},
        "routes": [{"name": "r", "on": ["entityDeleted"], "to": ["mirror"]}],
    }
    path.write_text(yaml.safe_dump(config))

    result = subprocess.run(
        [*COMMAND, "worker", "--config", str(path), "--queue", "deliveries", "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert "capture-relay: destinations.mirror.dsn: not a PostgreSQL URI" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_serve_without_any_source_exits_2(tmp_path: Path) -> None:
    """An ingress with no source would answer 404 to everything; it refuses to start."""
    path = tmp_path / "config.yaml"
    path.write_text("redis_url: redis://127.0.0.1:6399/0\n")

    result = subprocess.run([*COMMAND, "serve", "--config", str(path)], capture_output=True, text=True, timeout=30)

    assert result.returncode == 2
    assert "sources: no webhook source is configured" in result.stderr
