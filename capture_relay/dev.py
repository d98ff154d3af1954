"""``capture-relay dev``: the whole system on this machine, with a short story played through it.

It starts a private Redis, the Capture simulator, the ingress, an events worker, a deliveries
worker and a local receiver (``dev_stack``), writes the sample configuration into a visible
working folder (``dev_config``), plays the story (``dev_story``) and prints what really
happened at each step (``dev_observe``, ``dev_report``). Then it stops everything, or with
``--keep-running`` stays up, printing what it sees, until SIGINT, SIGTERM or SIGHUP.

Exit status: 0 when every step had its expected outcome, 1 when one did not or the stack did
not start, 130 when stopped by a signal before the story ended.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from capture_relay.dev_report import INDENT, Observer, describe
from capture_relay.dev_stack import Ports, Stack, StackStartError, running_stack, shown_path
from capture_relay.dev_story import Story
from capture_relay.embedded_redis import RedisBinaryNotFoundError

EXIT_OK, EXIT_FAILURE, EXIT_INTERRUPTED = 0, 1, 130
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class DevOptions:
    """What the command line asked for."""

    directory: Path
    ports: Ports
    keep_running: bool = False
    scripted: bool = False


class StopRequestedError(BaseException):
    """A stop signal arrived; a BaseException so that no ``except Exception`` on the way swallows it."""


def run_dev(options: DevOptions, environ: Mapping[str, str]) -> int:
    """Start the stack, play the story, then stop (or stay up with ``keep_running``); the exit status."""
    story_ok: bool | None = None
    started = time.monotonic()
    try:
        with _stop_on_signals():
            with running_stack(options.directory, options.ports, environ) as stack:
                try:
                    _say(_introduction(stack, time.monotonic() - started))
                    observer = Observer(stack)
                    story_ok = Story(stack, observer, _say, _pauser(options.scripted)).play()
                    _say(_verdict(story_ok))
                    if options.keep_running:
                        _say(_how_to_play(stack))
                        _follow(observer)
                finally:
                    _say("\nstopping every process dev started ...")
            _say("stopped.")
    except StopRequestedError:
        _say("stopped.")
    except (StackStartError, RedisBinaryNotFoundError) as exc:
        _say(f"capture-relay dev: {exc}")
        return EXIT_FAILURE
    except OSError as exc:  # the working folder cannot be written, most likely
        _say(f"capture-relay dev: {exc}; pick another working folder with --dir")
        return EXIT_FAILURE
    if story_ok is None:
        return EXIT_INTERRUPTED
    return EXIT_OK if story_ok else EXIT_FAILURE


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """The first SIGINT, SIGTERM or SIGHUP raises ``StopRequestedError``; later ones are ignored.

    Ignoring the second signal keeps it from interrupting the stop itself, which could leave a
    child running; each child gets SIGKILL if it has not stopped within a few seconds anyway.
    """
    stopping: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(signum)
            raise StopRequestedError(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, handler) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _pauser(scripted: bool) -> Callable[[str], None]:
    """Between steps: wait for Enter on a terminal, unless ``--scripted``."""
    interactive = [not scripted and sys.stdin.isatty()]

    def pause(next_step: str) -> None:
        if not interactive[0]:
            return
        try:
            input(f"\n{INDENT}[Enter] for step {next_step.split()[0]}, or Ctrl-C to stop ")
        except EOFError:
            interactive[0] = False

    return pause


def _follow(observer: Observer) -> None:
    """Print every new observation until a signal stops the process."""
    while True:
        for observation in observer.poll():
            _say(describe(observation))
        time.sleep(0.1)


def _introduction(stack: Stack, seconds: float) -> str:
    addresses = stack.addresses
    pids = stack.pids
    here = os.getpid()
    rows = [
        ("redis-server", pids["redis-server"], addresses.redis_url, "private, empty, kept in memory only"),
        ("ingress", pids["ingress"], addresses.ingress, "capture-relay serve"),
        ("worker events", pids["worker events"], "", "capture-relay worker --queue events: fetch, route, fan out"),
        ("worker deliveries", pids["worker deliveries"], "", "capture-relay worker --queue deliveries: send"),
        ("simulator", here, addresses.simulator, "Capture API, JWK page, webhook emitter (in this process)"),
        ("receiver", here, addresses.receiver, "/crm and /archive (in this process)"),
    ]
    table = "\n".join(f"  {name:<18} pid {pid:<7} {url:<28} {what}" for name, pid, url, what in rows)
    folder = shown_path(stack.directory)
    return (
        f"capture-relay dev: the whole system on 127.0.0.1, ready in {seconds:.1f} s\n{table}\n"
        f"  working folder     {folder}/: capture-relay.yaml (the config, with its routes), "
        f"{stack.archive.name}, logs/\n"
        "Each change of a profile in the simulator reaches the ingress as a signed v3 webhook, through a\n"
        "recorder in this process that prints the ingress's answer. There is no file destination type\n"
        f"yet: the receiver appends what /archive gets to {folder}/{stack.archive.name}.\n"
        "Routes: email-changes-to-crm (email changes, hashed and trimmed, to crm) and everything-to-archive.\n"
    )


def _verdict(story_ok: bool) -> str:
    if story_ok:
        return "\nstory: every step had its expected outcome."
    return "\nstory: a step did not have its expected outcome (see UNEXPECTED above)."


def _how_to_play(stack: Stack) -> str:
    addresses = stack.addresses
    sim = addresses.simulator
    uuid = "0c7f6bd2-6b5e-4c1a-9d5e-3f1e2a4b5c6d"
    json_header = "-H 'Content-Type: application/json'"
    config = shown_path(stack.config_path)
    return f"""
The stack stays up; Ctrl-C (or SIGTERM) stops every process dev started.
  ingress    {addresses.ingress}  (/webhooks/capture/v3, /webhooks/capture/legacy, /readyz, /metrics)
  simulator  {sim}  (Capture API; its control API under /__sim/: profiles, emit, stats, faults)
  receiver   {addresses.receiver}  (/crm, /archive -> {shown_path(stack.archive)})
  redis      {addresses.redis_url}

Send more events: change profiles in the simulator, and its emitter announces each change to the
ingress as a signed v3 webhook (what happens is printed below as it comes):
  curl -s {sim}/__sim/profiles {json_header} \\
    -d '{{"uuid": "{uuid}", "attributes": {{"email": "grace@example.com", "givenName": "Grace"}}}}'
  curl -s -X PATCH {sim}/__sim/profiles/{uuid} {json_header} -d '{{"changes": {{"email": "grace@hopper.example"}}}}'
  curl -s -X DELETE {sim}/__sim/profiles/{uuid}
  curl -s {sim}/__sim/emit {json_header} -d '{{"count": 10, "rate": 2}}'    # 10 random changes
  curl -s -X POST {sim}/__sim/emit/test                                     # Akamai's test event
A legacy webhook, straight to the ingress (not signed: it carries the callback hash):
  curl -si {addresses.legacy_webhook_url} {json_header} \\
    -d '[{{"uuid": "{uuid}", "hash": "{stack.secrets.callback_hash}"}}]'
Change the routes in {config} and try them offline; the running workers keep the routes they started with:
  capture-relay rules check --config {config}
  capture-relay dlq list    --config {config}
"""


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
