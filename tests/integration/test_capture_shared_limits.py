"""Several worker processes share one Capture concurrency cap through Redis, as the simulator
sees it; and a process killed while holding a call slot does not keep it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from capture_relay.embedded_redis import RedisServer
from tests.support.simulator import API_CLIENT, RunningSimulator, capture_config
from workers.capture_setup import call_limiter, capture_client

ROOT = Path(__file__).resolve().parents[2]


def start_callers(
    sim: RunningSimulator, redis_url: str, uuid: str, *, count: int, **options: str
) -> list[subprocess.Popen[str]]:
    command = [
        sys.executable, "-m", "tests.support.capture_caller",
        "--capture-url", sim.url, "--redis-url", redis_url,
        "--client-id", API_CLIENT.client_id, "--client-secret", API_CLIENT.client_secret,
        "--uuid", uuid,
    ]  # fmt: skip
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", value]
    return [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]


def results(processes: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def test_processes_together_never_exceed_the_cap(capture_sim: RunningSimulator, redis_server: RedisServer) -> None:
    uuid = capture_sim.sim.store.create("user", {"email": "shared@example.com"})["uuid"]
    # Capture itself would answer 510 past three calls; with the shared cap it never has to.
    capture_sim.faults({"latency": 0.04, "max_concurrent_calls": 3})
    reports = results(start_callers(capture_sim, redis_server.url, uuid, count=4, calls="25", max_concurrency="3"))
    stats = capture_sim.stats()
    assert [report["ok"] for report in reports] == [25] * 4
    assert 2 <= stats["max_in_flight"] <= 3
    assert "510" not in stats["answers"]["code"]

    # The same load with a cap above Capture's limit: the simulator sees more and answers 510
    # (which the clients retry), so the assertions above can fail.
    capture_sim.reset_stats()
    results(start_callers(capture_sim, redis_server.url, uuid, count=4, calls="25", max_concurrency="8"))
    assert capture_sim.stats()["max_in_flight"] > 3


def test_a_killed_holder_gives_its_slot_back_when_its_lease_ends(
    capture_sim: RunningSimulator, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    uuid = capture_sim.sim.store.create("user", {"email": "killed@example.com"})["uuid"]
    capture_sim.faults({"max_concurrent_calls": None, "rules": [{"kind": "delay", "seconds": 5, "times": 1}]})
    (holder,) = start_callers(
        capture_sim, redis_server.url, uuid, count=1, calls="1", max_concurrency="1", timeout="1s"
    )
    deadline = time.monotonic() + 30
    while capture_sim.stats()["in_flight"] < 1:
        assert time.monotonic() < deadline, "the holder never called"
        time.sleep(0.01)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=10)
    killed_at = time.monotonic()

    config = capture_config(capture_sim.url, max_concurrency=1, timeout="1s", retry_deadline="20s")
    assert call_limiter(config, redis_client).holders() == 1  # the dead process still holds it
    with capture_client(config, connection=redis_client) as client:
        record = client.entity(uuid=uuid)
    waited = time.monotonic() - killed_at
    assert record["email"] == "killed@example.com"
    # The lease is 3 x timeout + 5 s = 8 s from the holder's start: the slot was held, then recovered.
    assert 4 < waited < 12
    assert call_limiter(config, redis_client).holders() == 0
