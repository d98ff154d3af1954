"""The ``capture-relay`` command: the one place that wires the ingress and the workers together.

It lives outside ``service/`` and ``workers/`` because it imports both, while ``service`` must
never import ``workers``. Exit codes: 0 ok, 1 failure, 2 bad usage or invalid configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import version
from pathlib import Path

import redis
import uvicorn

from capture_relay import dlq_cli, register_cli, rules_cli, sinks_cli
from capture_relay.config_args import config_option as _config_option
from capture_relay.config_args import settings_from
from service.app import create_app
from service.logs import configure_logging
from service.secret import mask_url
from service.settings import ConfigError, Settings
from simulator import cli as simulator_cli

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    environ = os.environ if environ is None else environ
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args, environ))
    except ConfigError as exc:
        sys.stderr.write(f"capture-relay: invalid configuration\n{_indent(str(exc))}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capture-relay",
        description="Receive Janrain Capture / Akamai Identity Cloud webhooks, verify them, store them "
        "durably in Redis, and process them with workers.",
        epilog="Exit status: 0 ok, 1 failure, 2 bad usage or invalid configuration.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the webhook ingress (HTTP)")
    _config_option(serve)
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser(
        "worker",
        help="run a worker process on one queue",
        description="Run jobs from one queue, several at once in threads (no process per job). "
        "SIGTERM finishes the running jobs, then exits; a second signal exits at once.",
    )
    _config_option(worker)
    worker.add_argument(
        "--queue",
        choices=sorted(_WORKER_QUEUES),
        default="events",
        help="the queue to work: events (ingest.queue, default) or deliveries (delivery.queue). One queue "
        "per process: on a single queue rq moves each job atomically into an in-progress list (BLMOVE), "
        "so a worker killed at any moment loses no job; on several it pops (BLPOP) and can lose one",
    )
    worker.add_argument(
        "--concurrency",
        type=_concurrency,
        metavar="N",
        help="jobs run at once, each in a thread (overrides worker.concurrency)",
    )
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(run=_worker)

    dev = commands.add_parser(
        "dev",
        help="run the whole system on this machine and play a short story through it",
        description="Start a private Redis, the Capture simulator, the ingress, an events and a deliveries "
        "worker and a local receiver on 127.0.0.1; write the sample config into a working folder; play a "
        "story (a profile created, its email and address changed, a duplicate delivery, a forged token, the "
        "profile deleted) and print what happened at each step. Ctrl-C stops every process it started.",
        epilog="Exit status: 0 when every step had its expected outcome, 1 otherwise or when the stack did not "
        "start, 130 when stopped before the story ended.",
    )
    dev.add_argument(
        "--dir",
        type=Path,
        default=Path("capture-relay-dev"),
        metavar="DIR",
        help="working folder for the config, archive.jsonl and the logs (default ./capture-relay-dev)",
    )
    ending = dev.add_mutually_exclusive_group()
    ending.add_argument(
        "--keep-running",
        action="store_true",
        help="after the story, leave the stack up and print its URLs and commands to send more events",
    )
    ending.add_argument("--exit", action="store_true", help="stop as soon as the story ends (the default)")
    dev.add_argument(
        "--scripted", action="store_true", help="never wait for Enter between steps (also when stdin is no terminal)"
    )
    dev.add_argument("--port", type=_port, metavar="PORT", help="port of the ingress (default: a free one)")
    dev.add_argument("--simulator-port", type=_port, metavar="PORT", help="port of the simulator (default: free)")
    dev.add_argument("--receiver-port", type=_port, metavar="PORT", help="port of the receiver (default: free)")
    dev.set_defaults(run=_dev)

    rules_cli.add_parser(commands)
    register_cli.add_parser(commands)
    dlq_cli.add_parser(commands)
    sinks_cli.add_parser(commands)

    simulate = commands.add_parser(
        "simulate",
        help="run a stand-in for Janrain Capture and Akamai Identity Cloud (API, JWKS, webhooks)",
        description="Serve the Capture API, the Akamai token/JWK/subscription API and a webhook emitter "
        "from memory, with injectable latency and failures. Control API under /__sim/.",
    )
    simulator_cli.add_arguments(simulate)
    simulate.set_defaults(run=lambda args, environ: simulator_cli.run(args))

    show_version = commands.add_parser("version", help="print the version")
    show_version.set_defaults(run=lambda args, environ: _print(version("capture-relay")))
    return parser


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = settings_from(args, environ)
    if settings.sources.v3 is None and settings.sources.legacy is None:
        # It would start, pass its probes, and answer 404 to every webhook.
        raise ConfigError([("sources", "no webhook source is configured; configure sources.v3 and/or sources.legacy")])
    configure_logging(settings.logging.level, settings.logging.format)
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    return EXIT_OK if run_server(settings, host, port) else EXIT_FAILURE


def run_server(settings: Settings, host: str, port: int) -> bool:
    """Serve the ingress with uvicorn until SIGTERM/SIGINT; False if it never started (port taken)."""
    return serve_until_stopped(uvicorn.Server(server_config(settings, host, port)))


def serve_until_stopped(server: uvicorn.Server) -> bool:
    """Run ``server``; False when it could not start (uvicorn exits with its own status 3 then)."""
    try:
        server.run()
    except SystemExit:
        # uvicorn raises SystemExit when the port is taken or the lifespan fails; our exit
        # codes are 0/1/2, and the reason is already logged.
        return False
    return bool(server.started)


def server_config(settings: Settings, host: str, port: int) -> uvicorn.Config:
    """uvicorn settings: our own logging, no access log (one line per outcome is ours)."""
    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )


# `worker --queue` choices, and the settings that name each queue.
_WORKER_QUEUES: dict[str, Callable[[Settings], str]] = {
    "events": lambda settings: settings.ingest.queue,
    "deliveries": lambda settings: settings.delivery.queue,
}


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of jobs from 1 to 256")
    return value


def _worker(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    # Imported here: keeps `serve` from loading worker code.
    from workers.health import HealthPortError
    from workers.pool import WorkerThreadError
    from workers.runner import run_worker
    from workers.sinks import DestinationConfigError

    settings = settings_from(args, environ)
    configure_logging(settings.logging.level, settings.logging.format)
    try:
        run_worker(settings, queue=_WORKER_QUEUES[args.queue](settings), burst=args.burst, concurrency=args.concurrency)
    except redis.ConnectionError as exc:
        # One line an operator can act on, not rq's traceback; the password stays masked.
        sys.stderr.write(f"capture-relay: cannot reach Redis at {mask_url(settings.redis_url.reveal())}: {exc}\n")
        return EXIT_FAILURE
    except (WorkerThreadError, HealthPortError) as exc:
        # A thread's own error is already logged; the supervisor restarts the process.
        sys.stderr.write(f"capture-relay: {exc}\n")
        return EXIT_FAILURE
    except DestinationConfigError as exc:
        # A section that validated but cannot be used (a DSN libpq cannot read): a config mistake,
        # named by its key, not a traceback.
        sys.stderr.write(f"capture-relay: {exc}\n")
        return EXIT_USAGE
    return EXIT_OK


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to 65535")
    return value


def _dev(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    # Imported here: only `dev` needs the simulator's app, the story and their dependencies.
    from capture_relay.dev import DevOptions, run_dev
    from capture_relay.dev_stack import Ports

    ports = Ports(ingress=args.port, simulator=args.simulator_port, receiver=args.receiver_port)
    options = DevOptions(args.dir, ports, keep_running=args.keep_running, scripted=args.scripted)
    return run_dev(options, environ)


def _print(text: str) -> int:
    sys.stdout.write(text + "\n")
    return EXIT_OK


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())
