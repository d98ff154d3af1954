"""The emitter's command-line options: where to deliver, in which format, with which faults."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from simulator.emitter_targets import WorkloadPlan

if TYPE_CHECKING:
    from simulator.emitter import Emitter


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emitter's options to the simulator's command line."""
    group = parser.add_argument_group("webhook emitter")
    group.add_argument(
        "--emit-to", action="append", default=[], metavar="URL", help="deliver every profile change to URL (repeatable)"
    )
    group.add_argument("--emit-format", choices=("v3", "legacy"), default="v3", help="what to send (default: v3)")
    group.add_argument("--audience", help="the aud claim of v3 tokens (default: the target URL)")
    group.add_argument("--callback-hash", help="the hash of legacy deliveries (default: 40 random hex characters)")
    group.add_argument(
        "--emit-count", type=_count, default=0, metavar="N", help="make N random profile changes at start"
    )
    group.add_argument("--emit-rate", type=_rate, metavar="R", help="... R changes per second (default: at once)")
    group.add_argument("--emit-burst", type=_burst, metavar="N", help="... in bursts of N, one burst per second")
    group.add_argument("--emit-seed", type=int, metavar="S", help="seed of the random workload, to repeat it")
    group.add_argument(
        "--duplicates", type=_probability, default=0.0, metavar="P", help="send a delivery twice with probability P"
    )
    group.add_argument("--reorder", type=_count, default=0, metavar="N", help="shuffle deliveries in windows of N")
    group.add_argument(
        "--emit-retry-delays",
        type=_delays,
        metavar="S,S,...",
        help="seconds between v3 retries (Akamai: 3,30,300,3600,86400; default: a fast schedule for tests)",
    )


def apply_cli_arguments(emitter: Emitter, args: argparse.Namespace) -> None:
    """Register the targets named by ``--emit-to``; plan the workload ``start()`` will begin.

    Raises:
        ValueError: when a target URL is not an absolute http(s) URL.
    """
    for url in args.emit_to:
        emitter.add_target(
            url,
            format=args.emit_format,
            audience=args.audience,
            callback_hash=args.callback_hash,
            duplicates=args.duplicates,
            reorder_window=args.reorder,
        )
    if args.emit_retry_delays is not None:
        emitter.retry_delays = args.emit_retry_delays
    if args.emit_count:
        emitter.startup_workload = WorkloadPlan(args.emit_count, args.emit_rate, args.emit_burst, args.emit_seed)


def _number(text: str, kind: type[int] | type[float], what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def _count(text: str) -> int:
    value = int(_number(text, int, "a whole number"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _burst(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _rate(text: str) -> float:
    value = _number(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _probability(text: str) -> float:
    value = _number(text, float, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability between 0 and 1")
    return value


def _delays(text: str) -> tuple[float, ...]:
    delays = tuple(_number(part.strip(), float, "a number of seconds") for part in text.split(","))
    if any(delay < 0 for delay in delays):
        raise argparse.ArgumentTypeError(f"{text!r}: delays must be 0 or more")
    return delays
