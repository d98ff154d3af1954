"""The whole system on 127.0.0.1 for ``capture-relay dev``, started and stopped as one.

Child processes: a private ``redis-server`` (``embedded_redis``), the ingress
(``capture-relay serve``) and two workers (``capture-relay worker --queue events|deliveries``),
each with its output in ``<dir>/logs/``. In this process, each under uvicorn in a thread: the
Capture simulator (Capture API, JWK page, webhook emitter), the wire recorder in front of the
ingress and the local receiver (``dev_observe``).

The children run in process groups of their own, so that a Ctrl-C at the terminal reaches
``dev`` alone and ``dev`` stops them in order: the workers and the ingress first (SIGTERM, then
SIGKILL after ``STOP_TIMEOUT``), while Redis and the simulator still answer them, then the
servers in this process, then Redis.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import redis
import uvicorn
from rq import Queue, Worker

from capture_relay.dev_config import ARCHIVE_NAME, CONFIG_NAME, DevAddresses, DevSecrets, render_config
from capture_relay.dev_observe import LogFollower, Receiver, Wire
from capture_relay.embedded_redis import RedisServer, free_port
from service.settings import load
from simulator.app import create_app as create_simulator_app
from simulator.config import SimulatorConfig
from simulator.state import Simulator

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class StackStartError(RuntimeError):
    """A part of the stack did not start; the message names it and where its log is."""


@dataclass(frozen=True, slots=True)
class Ports:
    """Ports asked for on the command line; ``None`` means any free one."""

    ingress: int | None = None
    simulator: int | None = None
    receiver: int | None = None


@dataclass(frozen=True, slots=True)
class Child:
    """A process ``dev`` started."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid


@dataclass
class Stack:
    """The running system and the handles ``dev`` observes it through."""

    directory: Path
    config_path: Path
    archive: Path
    addresses: DevAddresses
    secrets: DevSecrets
    wire_url: str
    redis_pid: int
    wire: Wire
    receiver: Receiver
    events_log: LogFollower
    deliveries_log: LogFollower
    simulator: Simulator
    children: list[Child] = field(default_factory=list)

    @property
    def pids(self) -> dict[str, int]:
        """Every process started, by name (the simulator and receivers run in this one)."""
        return {"redis-server": self.redis_pid, **{child.name: child.pid for child in self.children}}


@contextmanager
def running_stack(directory: Path, ports: Ports, environ: Mapping[str, str]) -> Iterator[Stack]:
    """Start everything, yield it, and stop every process it started, whatever happens meanwhile.

    Raises:
        StackStartError: when a part does not start or does not become ready.
        RedisBinaryNotFoundError: when no ``redis-server`` can be found.
    """
    directory = directory.resolve()  # redis-server changes into its directory before opening its log
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    archive = directory / ARCHIVE_NAME
    archive.write_bytes(b"")
    children: list[Child] = []
    with ExitStack() as resources:
        redis_server = RedisServer(directory=logs)
        try:
            redis_server.start()
        except RuntimeError as exc:
            raise StackStartError(f"{exc}; see {logs / 'redis.log'}") from exc
        resources.callback(redis_server.close)
        redis_pid = _redis_pid(redis_server.url)

        ingress_port = ports.ingress or free_port()
        sim_port = ports.simulator or free_port()
        sim = Simulator.create(SimulatorConfig(base_url=f"http://127.0.0.1:{sim_port}"))
        simulator_url = resources.enter_context(_serving(create_simulator_app(sim), sim_port, "simulator"))
        dev_secrets = DevSecrets.generate()
        receiver = Receiver(archive, dev_secrets.signing_secret)
        receiver_url = resources.enter_context(_serving(receiver.app(), ports.receiver or free_port(), "receiver"))
        addresses = DevAddresses(redis_server.url, simulator_url, sim.config.customer_id, ingress_port, receiver_url)
        wire = Wire(addresses.v3_webhook_url)
        wire_url = resources.enter_context(_serving(wire.app(), free_port(), "wire recorder"))

        config_path = directory / CONFIG_NAME
        config_path.write_text(
            render_config(addresses, sim.config.api_client, dev_secrets, shown_path=shown_path(config_path)),
            encoding="utf-8",
        )
        load(config_path, {})  # a mistake in the template fails here, naming the key, not in three children
        env = {**environ, "PYTHONUNBUFFERED": "1"}
        # Registered last, so it runs first: the children stop while Redis and the simulator still answer.
        resources.callback(stop_children, children)
        for name, args in (
            ("ingress", ["serve", "--config", str(config_path)]),
            ("worker events", ["worker", "--config", str(config_path), "--queue", "events"]),
            ("worker deliveries", ["worker", "--config", str(config_path), "--queue", "deliveries"]),
        ):
            children.append(_spawn(name, args, logs / f"{name.replace(' ', '-')}.log", env))
        stack = Stack(
            directory=directory,
            config_path=config_path,
            archive=archive,
            addresses=addresses,
            secrets=dev_secrets,
            wire_url=f"{wire_url}/webhooks/capture/v3",
            redis_pid=redis_pid,
            wire=wire,
            receiver=receiver,
            events_log=LogFollower(children[1].log),
            deliveries_log=LogFollower(children[2].log),
            simulator=sim,
            children=children,
        )
        _wait_ready(stack)
        # From now on every profile change is announced, as a signed v3 webhook, through the wire.
        answer = httpx2.post(
            f"{simulator_url}/__sim/targets",
            json={"url": stack.wire_url, "format": "v3", "audience": addresses.v3_webhook_url},
            timeout=10,
        )
        answer.raise_for_status()
        yield stack


def stop_children(children: list[Child], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to each child (last started first), then SIGKILL to any still running after ``timeout``."""
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in reversed(children):
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _spawn(name: str, args: list[str], log_path: Path, env: Mapping[str, str]) -> Child:
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "capture_relay", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            process_group=0,
        )
    return Child(name, process, log_path)


def _wait_ready(stack: Stack) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    ingress_ready = f"{stack.addresses.ingress}/readyz"
    connection = redis.Redis.from_url(stack.addresses.redis_url)
    settings = load(stack.config_path, {})
    queues = [Queue(name, connection=connection) for name in (settings.ingest.queue, settings.delivery.queue)]
    try:
        while True:
            for child in stack.children:
                if child.process.poll() is not None:
                    status = child.process.returncode
                    raise StackStartError(f"the {child.name} exited with status {status}; see {child.log}")
            if _answers_200(ingress_ready) and all(Worker.count(connection=connection, queue=q) for q in queues):
                return
            if time.monotonic() > deadline:
                raise StackStartError(
                    f"the stack was not ready within {READY_TIMEOUT:.0f} s; see the logs in {stack.directory / 'logs'}"
                )
            time.sleep(0.1)
    finally:
        connection.close()


def _answers_200(url: str) -> bool:
    try:
        return httpx2.get(url, timeout=2).status_code == 200
    except httpx2.HTTPError:
        return False


def _redis_pid(url: str) -> int:
    connection = redis.Redis.from_url(url)
    try:
        info: dict[str, Any] = connection.info("server")
    finally:
        connection.close()
    return int(info["process_id"])


@contextmanager
def _serving(app: Any, port: int, name: str) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on 127.0.0.1:``port``; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, server_header=False)
    )
    failed: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except SystemExit as exc:  # uvicorn's answer to a taken port
            failed.append(exc)

    thread = threading.Thread(target=run, name=f"dev-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not server.started:
        if failed or not thread.is_alive() or time.monotonic() > deadline:
            raise StackStartError(f"the {name} could not listen on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT)


def shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it, as the user would type it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
