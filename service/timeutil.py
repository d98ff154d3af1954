"""Durations and sizes as operators write them in the config ("48h", "64KiB")."""

from __future__ import annotations

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
