"""Text from a Redis reply, whichever way the client was made.

A client made without ``decode_responses`` answers bytes, one made with it answers str; Lua
strings, set members and hash values come back either way.
"""

from __future__ import annotations


def as_text(value: object) -> str:
    """``value`` as str: bytes decoded as UTF-8, anything else through ``str()``.

    It takes any object because redis-py annotates replies loosely (a ``ZRANGE`` reply may hold
    score pairs); members and Lua strings are bytes or str.
    """
    return value.decode() if isinstance(value, bytes) else str(value)
