"""``capture-relay simulate``: its help, its exit codes, and a real process answering /entity."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx2
import pytest

from capture_relay.cli import main
from capture_relay.embedded_redis import free_port

COMMAND = [sys.executable, "-m", "capture_relay", "simulate"]
OPTIONS = ["--fault", "capture_error:510:times=1", "--error-http-status", "mapped"]


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    """``simulate --help`` describes the simulator's, the faults' and the emitter's options and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main(["simulate", "--help"])

    out = capsys.readouterr().out
    assert exited.value.code == 0
    for option in ("--port", "--latency", "--max-concurrent-calls", "--fault", "--error-http-status", "--emit-to"):
        assert option in out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        pytest.param(["--fault", "capture_error:999"], "capture_error:999", id="bad-fault"),
        pytest.param(["--latency", "-1"], "--latency", id="negative-latency"),
        pytest.param(["--max-concurrent-calls", "0"], "--max-concurrent-calls", id="limit-zero"),
        pytest.param(["--emit-to", "not-a-url"], "not-a-url", id="bad-target"),
    ],
)
def test_bad_options_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], named: str) -> None:
    """A bad value is exit 2 with one line on stderr naming it; nothing is started."""
    status = main(["simulate", "--port", str(free_port()), *argv])

    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1
    assert named in err


def test_a_taken_port_exits_1() -> None:
    """When the port is in use the command fails with 1 instead of uvicorn's own status."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = subprocess.run([*COMMAND, "--port", str(port)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 1


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"simulate exited early:\n{process.communicate()[0]}")
        try:
            if httpx2.get(f"{url}/__sim/stats", timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("simulate never became ready")


def test_simulate_serves_the_capture_api() -> None:
    """Started as a process, it prints its credentials and answers /entity with them, faults included."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*COMMAND, "--port", str(port), "--client-id", "cli-id", "--client-secret", "cli-secret", *OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_ready(url, process)
        created = httpx2.post(f"{url}/__sim/profiles", json={"attributes": {"email": "ada@example.com"}}, timeout=5)
        params = {"type_name": "user", "uuid": created.json()["uuid"], "attributes": '["email"]'}
        storm = httpx2.post(f"{url}/entity", data=params, auth=("cli-id", "cli-secret"), timeout=5)
        entity = httpx2.post(f"{url}/entity", data=params, auth=("cli-id", "cli-secret"), timeout=5)
        wrong = httpx2.post(f"{url}/entity", data=params, auth=("cli-id", "nope"), timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)

    assert (storm.status_code, storm.json()["code"]) == (510, 510)
    assert entity.json() == {"result": {"email": "ada@example.com"}, "stat": "ok"}
    assert (wrong.status_code, wrong.json()["code"]) == (401, 402)
    assert "cli-id" in output
    assert "cli-secret" in output
    assert f"{url}/b18fc81d-457e-4a40-ac87-2b78bd946fa2/login/jwk" in output
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean stop
