"""Durations, sizes and rates as operators write them in the config ("48h", "64KiB", "20/s")."""

from __future__ import annotations

import email.utils
import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|KB|MB)?\s*$")
_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 * 1024, "KB": 1000, "MB": 1000 * 1000, None: 1}


def parse_duration(value: str | float) -> float:
    """Return seconds for ``30``, ``"30s"``, ``"5m"``, ``"48h"``, ``"14d"`` or ``"250ms"``.

    Raises:
        ValueError: with a sentence that says what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; use a number of seconds or N followed by ms, s, m, h or d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration; use a number of seconds or N followed by ms, s, m, h or d")
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration; use a number of seconds or N followed by ms, s, m, h or d")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a duration; use a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative; a duration must be zero or more")
    return seconds


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(value: str | float) -> float:
    """Return events per second for ``"20/s"``, ``"600/m"``, ``"1000/h"`` or a plain number (per second).

    Raises:
        ValueError: with a sentence that says what is accepted.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a rate; use N/s, N/m or N/h")
    if isinstance(value, str) and _NUMBER.match(value):
        value = float(value)  # "${RATE}" from the environment arrives as text
    if isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a rate; use N/s, N/m or N/h")
        per_second = float(match.group(1)) / _RATE_UNITS[match.group(2)]
    else:
        per_second = float(value)
    if not math.isfinite(per_second) or per_second <= 0:
        raise ValueError(f"{value!r} must be a positive rate")
    return per_second


def parse_size(value: str | int) -> int:
    """Return bytes for ``65536``, ``"64KiB"``, ``"1MiB"``.

    Raises:
        ValueError: with a sentence that says what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; use bytes or N followed by B, KiB, MiB, KB or MB")
    if isinstance(value, int):
        size = value
    elif not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size; use bytes or N followed by B, KiB, MiB, KB or MB")
    else:
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a size; use bytes or N followed by B, KiB, MiB, KB or MB")
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return size


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait for an HTTP ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns None for a missing or unreadable header (the caller falls back to its own backoff);
    a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
