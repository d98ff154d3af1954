"""``capture-relay simulate``: run the simulator (Capture API, Akamai side, emitter) with uvicorn.

``add_arguments`` adds the options to a parser and ``run`` starts the server until SIGINT or
SIGTERM. Exit codes: 0 after a clean stop (uvicorn re-raises a caught SIGTERM once it has
stopped, so a parent sees that signal), 1 when the server could not start (port taken), 2 for
a bad option (one line on stderr naming it).
"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from simulator.app import create_app
from simulator.config import ClientCredentials, SimulatorConfig
from simulator.emitter import add_cli_arguments, apply_cli_arguments
from simulator.faults import FaultSettings, parse_compact_rule
from simulator.setevents import issuer, jwk_url
from simulator.state import Simulator

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options (and the emitter's) to ``parser``."""
    defaults = SimulatorConfig()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8900, help="port to listen on (default 8900)")
    parser.add_argument(
        "--base-url", help="the URL clients reach the simulator at, used as jku/iss (default http://HOST:PORT)"
    )
    parser.add_argument("--client-id", default=defaults.api_client.client_id, help="the Capture API client id")
    parser.add_argument("--client-secret", default=defaults.api_client.client_secret, help="... and its secret")
    parser.add_argument("--customer-id", default=defaults.customer_id, help="the Akamai customer id in the v3 paths")
    parser.add_argument(
        "--token-ttl", type=float, default=defaults.token_ttl, metavar="SECONDS", help="bearer token lifetime"
    )
    parser.add_argument(
        "--error-http-status",
        choices=("ok", "mapped"),
        default=defaults.error_http_status,
        help="HTTP status of Capture error envelopes: ok = 200 (default), mapped = 4xx/5xx by code",
    )
    faults = parser.add_argument_group("faults (changeable at run time: PUT /__sim/faults)")
    faults.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="added to every API call")
    faults.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS", help="plus up to this much, at random")
    faults.add_argument(
        "--max-concurrent-calls", type=int, metavar="N", help="answer Capture error 510 past N simultaneous calls"
    )
    faults.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND:VALUE[:KEY=VALUE...]",
        help="inject failures (repeatable), e.g. capture_error:510:times=20, http_status:503:ratio=0.1:retry_after=1, "
        "delay:2:paths=/entity",
    )
    faults.add_argument("--seed", type=int, help="seed of the fault RNG (ratio rules, jitter), to repeat a run")
    add_cli_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Start the simulator described by ``args`` and serve until stopped; returns the exit status."""
    try:
        sim = _simulator(args)
    except ValueError as exc:  # a bad option value, a FaultsError, or a bad --emit-to URL
        sys.stderr.write(f"capture-relay simulate: {exc}\n")
        return EXIT_USAGE
    _announce(sim.config)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(sim), host=args.host, port=args.port, log_config=None, access_log=False, server_header=False
        )
    )
    try:
        server.run()
    except SystemExit:
        # uvicorn exits this way when the port is taken; the reason is already on stderr.
        return EXIT_FAILURE
    return EXIT_OK if server.started else EXIT_FAILURE


def _simulator(args: argparse.Namespace) -> Simulator:
    if args.latency < 0 or args.jitter < 0:
        raise ValueError("--latency and --jitter must be 0 or more seconds")
    if args.max_concurrent_calls is not None and args.max_concurrent_calls < 1:
        raise ValueError(f"--max-concurrent-calls must be 1 or more, got {args.max_concurrent_calls}")
    if not args.token_ttl > 0:
        raise ValueError(f"--token-ttl must be more than 0 seconds, got {args.token_ttl}")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be from 1 to 65535, got {args.port}")
    rules = tuple(parse_compact_rule(text) for text in args.fault)
    config = SimulatorConfig(
        base_url=(args.base_url or f"http://{_client_host(args.host)}:{args.port}").rstrip("/"),
        customer_id=args.customer_id,
        api_client=ClientCredentials(args.client_id, args.client_secret),
        max_concurrent_calls=args.max_concurrent_calls,
        error_http_status=args.error_http_status,
        token_ttl=args.token_ttl,
    )
    sim = Simulator.create(config)
    sim.faults.configure(
        FaultSettings(
            latency=args.latency,
            jitter=args.jitter,
            max_concurrent_calls=args.max_concurrent_calls,
            seed=args.seed,
            rules=rules,
        )
    )
    apply_cli_arguments(sim.emitter, args)
    return sim


def _client_host(host: str) -> str:
    # A wildcard address is where the server listens, not where a client can reach it.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def _announce(config: SimulatorConfig) -> None:
    # The credentials are fake and printed on purpose: the user needs them to configure capture-relay.
    lines = [
        f"Capture simulator on {config.base_url}",
        f"  capture.base_url:      {config.base_url}",
        f"  capture.client_id:     {config.api_client.client_id}",
        f"  capture.client_secret: {config.api_client.client_secret}",
        f"  v3 jwks_url:           {jwk_url(config)}",
        f"  v3 issuer:             {issuer(config)}",
        f"  config client:         {config.config_client.client_id} / {config.config_client.client_secret}",
        "  control API:           /__sim/stats, /__sim/faults, /__sim/profiles, /__sim/targets, /__sim/emit",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
