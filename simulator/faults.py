"""Faults the simulator injects: latency, failures by rule, and Capture's simultaneous-call limit.

Set at start (``--latency``, ``--jitter``, ``--max-concurrent-calls``, ``--fault``, ``--seed``)
and at run time (``PUT /__sim/faults``). The JSON form::

    {"latency": 0.05, "jitter": 0.01, "max_concurrent_calls": 4, "seed": 7,
     "rules": [{"kind": "capture_error", "code": 510, "times": 5, "paths": ["/entity"]},
               {"kind": "http_status", "status": 503, "ratio": 0.2, "retry_after": 1},
               {"kind": "delay", "seconds": 2, "times": 1}]}

A rule is *what* (``capture_error`` + ``code``: the Capture envelope; ``http_status`` +
``status``: a bare HTTP answer as from a proxy, usually a failure but 200 works too, with an
optional ``retry_after`` and ``body`` (text/html instead of the default small JSON);
``delay`` + ``seconds`` before the normal answer), *where* (``paths``: prefixes that match
whole segments, so ``/entity`` is not ``/entity.find``; by default every Capture API path) and
*how often* (``times``: the next N matching calls; ``ratio``: that probability per call, from
an RNG seeded by ``seed``; both: at most N calls, each with that probability; neither: every
call). Rules are tried in order: every ``delay`` that fires adds up, and the first failure
that fires is the answer.
A "510 storm" is ``{"kind": "capture_error", "code": 510, "times": N}``. Latency and jitter
apply to every call outside ``/__sim`` (the Akamai routes too); rules only to their ``paths``.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from simulator.envelope import ERRORS

# The paths of the Capture domain; the Akamai routes live under /{customerId}/.
CAPTURE_API_PATHS = ("/entity", "/entity.find", "/versions/entity", "/entityType", "/webhooks")
KINDS = ("capture_error", "http_status", "delay")
_RULE_KEYS = frozenset({"kind", "code", "status", "seconds", "retry_after", "body", "paths", "times", "ratio"})
_SETTINGS_KEYS = frozenset({"latency", "jitter", "max_concurrent_calls", "seed", "rules"})


class FaultsError(ValueError):
    """Fault settings that cannot be applied; the message says which value and what is accepted."""


def path_matches(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or lies below it (whole segments only)."""
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or not prefix


@dataclass(slots=True)
class FaultRule:
    """One injected failure; ``times`` counts down as the rule fires."""

    kind: str
    code: int | None = None
    status: int | None = None
    seconds: float = 0.0
    retry_after: float | None = None
    body: str | None = None
    paths: tuple[str, ...] = CAPTURE_API_PATHS
    times: int | None = None
    ratio: float | None = None
    fired: int = 0

    def applies_to(self, path: str) -> bool:
        """Whether a call to ``path`` is one this rule may hit."""
        return any(path_matches(path, prefix) for prefix in self.paths)

    def as_json(self) -> dict[str, Any]:
        """The rule as ``GET /__sim/faults`` shows it (``times`` is what is left)."""
        shown: dict[str, Any] = {"kind": self.kind, "paths": list(self.paths), "fired": self.fired}
        extras = {
            "code": self.code,
            "status": self.status,
            "seconds": self.seconds if self.kind == "delay" else None,
            "retry_after": self.retry_after,
            "body": self.body,
            "times": self.times,
            "ratio": self.ratio,
        }
        return shown | {key: value for key, value in extras.items() if value is not None}


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Everything ``PUT /__sim/faults`` replaces."""

    latency: float = 0.0
    jitter: float = 0.0
    max_concurrent_calls: int | None = None
    seed: int | None = None
    rules: tuple[FaultRule, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one call: wait ``delay`` seconds, then answer with ``failure`` if it is set."""

    delay: float
    failure: FaultRule | None


class Faults:
    """The current fault settings, shared by the middleware and the control API; thread-safe."""

    def __init__(self, settings: FaultSettings | None = None, *, startup_limit: int | None = None) -> None:
        # The limit from the configuration: what a PUT without the key and a DELETE go back to.
        self.startup_limit = startup_limit
        self._lock = threading.Lock()
        self._settings = settings or FaultSettings(max_concurrent_calls=startup_limit)
        # Not for security: a seeded generator makes ratio rules and jitter repeatable.
        self._rng = random.Random(self._settings.seed)  # noqa: S311

    @property
    def max_concurrent_calls(self) -> int | None:
        """Past this many simultaneous Capture API calls the answer is 510; None: no limit."""
        return self._settings.max_concurrent_calls

    def configure(self, settings: FaultSettings) -> None:
        """Replace the settings (and reseed the RNG when they carry a seed)."""
        with self._lock:
            self._settings = settings
            if settings.seed is not None:
                self._rng = random.Random(settings.seed)  # noqa: S311

    def clear(self) -> None:
        """No latency, no rules, the start-up call limit."""
        self.configure(FaultSettings(max_concurrent_calls=self.startup_limit))

    def decide(self, path: str) -> Decision:
        """Roll the dice for one call to ``path``: its delay and the failure to answer with, if any."""
        with self._lock:
            settings = self._settings
            delay = settings.latency + (self._rng.uniform(0.0, settings.jitter) if settings.jitter else 0.0)
            for rule in settings.rules:
                if not rule.applies_to(path) or not self._fires(rule):
                    continue
                rule.fired += 1
                if rule.kind != "delay":
                    return Decision(delay, rule)
                delay += rule.seconds
            return Decision(delay, None)

    def as_json(self) -> dict[str, Any]:
        """The JSON of ``GET /__sim/faults``."""
        with self._lock:
            settings = self._settings
            return {
                "latency": settings.latency,
                "jitter": settings.jitter,
                "max_concurrent_calls": settings.max_concurrent_calls,
                "seed": settings.seed,
                "rules": [rule.as_json() for rule in settings.rules],
            }

    def _fires(self, rule: FaultRule) -> bool:
        if rule.times is not None and rule.times <= 0:
            return False
        if rule.ratio is not None and self._rng.random() >= rule.ratio:
            return False
        if rule.times is not None:
            rule.times -= 1
        return True


def parse_settings(data: Any, *, startup_limit: int | None) -> FaultSettings:
    """Settings from the JSON of ``PUT /__sim/faults``; an absent ``max_concurrent_calls`` is ``startup_limit``.

    Raises:
        FaultsError: naming the first bad value.
    """
    if not isinstance(data, dict):
        raise FaultsError("the body must be a JSON object")
    _no_unknown_keys(data, _SETTINGS_KEYS, "faults")
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise FaultsError("rules must be a list of rule objects")
    limit = data.get("max_concurrent_calls", startup_limit)
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise FaultsError(f"max_concurrent_calls must be an integer >= 1 or null, got {limit!r}")
    seed = data.get("seed")
    if seed is not None and not _is_int(seed):
        raise FaultsError(f"seed must be an integer, got {seed!r}")
    return FaultSettings(
        latency=_seconds(data.get("latency", 0.0), "latency"),
        jitter=_seconds(data.get("jitter", 0.0), "jitter"),
        max_concurrent_calls=limit,
        seed=seed,
        rules=tuple(parse_rule(rule, f"rules[{index}]") for index, rule in enumerate(rules)),
    )


def parse_rule(data: Any, where: str = "rule") -> FaultRule:
    """One rule from its JSON object.

    Raises:
        FaultsError: naming the first bad value.
    """
    if not isinstance(data, dict):
        raise FaultsError(f"{where} must be an object")
    _no_unknown_keys(data, _RULE_KEYS, where)
    kind = data.get("kind")
    if kind not in KINDS:
        raise FaultsError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    rule = FaultRule(kind=kind, paths=_paths(data.get("paths", list(CAPTURE_API_PATHS)), where))
    _what(rule, data, where)
    times, ratio = data.get("times"), data.get("ratio")
    if times is not None and (not _is_int(times) or times < 0):
        raise FaultsError(f"{where}.times must be an integer >= 0, got {times!r}")
    if ratio is not None and (not _is_number(ratio) or not 0 <= ratio <= 1):
        raise FaultsError(f"{where}.ratio must be a number from 0 to 1, got {ratio!r}")
    rule.times, rule.ratio = times, ratio
    return rule


def _what(rule: FaultRule, data: dict[str, Any], where: str) -> None:
    if rule.kind == "capture_error":
        code = data.get("code")
        if not _is_int(code) or code not in ERRORS:
            raise FaultsError(
                f"{where}.code must be a Capture error code ({', '.join(map(str, ERRORS))}), got {code!r}"
            )
        rule.code = code
    elif rule.kind == "http_status":
        status = data.get("status")
        # 2xx too: a proxy or captive portal may answer 200 with a page that is not Capture's.
        if not _is_int(status) or not 200 <= status <= 599:
            raise FaultsError(f"{where}.status must be an HTTP status from 200 to 599, got {status!r}")
        rule.status = status
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise FaultsError(f"{where}.body must be a string, got {body!r}")
        rule.body = body
    else:
        rule.seconds = _seconds(data.get("seconds"), f"{where}.seconds")
    if data.get("retry_after") is not None:
        rule.retry_after = _seconds(data["retry_after"], f"{where}.retry_after")


def parse_compact_rule(text: str) -> FaultRule:
    """A rule from the command line: ``KIND:VALUE[:KEY=VALUE...]``.

    ``capture_error:510:times=20``, ``http_status:503:ratio=0.1:retry_after=1``,
    ``delay:2:paths=/entity,/entity.find``.

    Raises:
        FaultsError: naming the part that is wrong.
    """
    kind, _, rest = text.partition(":")
    value, *options = rest.split(":") if rest else [""]
    main_key = {"capture_error": "code", "http_status": "status", "delay": "seconds"}.get(kind)
    if main_key is None:
        raise FaultsError(f"--fault {text!r}: the kind must be one of {', '.join(KINDS)}")
    data: dict[str, Any] = {"kind": kind, main_key: _compact_number(value, text)}
    for option in options:
        key, equals, raw = option.partition("=")
        if not equals:
            raise FaultsError(f"--fault {text!r}: {option!r} is not KEY=VALUE")
        data[key] = raw.split(",") if key == "paths" else raw if key == "body" else _compact_number(raw, text)
    try:
        return parse_rule(data)
    except FaultsError as exc:
        raise FaultsError(f"--fault {text!r}: {exc}") from None


def _compact_number(raw: str, text: str) -> int | float:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        raise FaultsError(f"--fault {text!r}: {raw!r} is not a number") from None


def _paths(paths: Any, where: str) -> tuple[str, ...]:
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.startswith("/") for p in paths):
        raise FaultsError(f"{where}.paths must be a non-empty list of paths starting with '/', got {paths!r}")
    return tuple(paths)


def _seconds(value: Any, where: str) -> float:
    if not _is_number(value) or value < 0:
        raise FaultsError(f"{where} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _no_unknown_keys(data: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise FaultsError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
