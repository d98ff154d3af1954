"""rq's enqueue commands, captured instead of sent, so that a Lua script can run them atomically.

rq builds an enqueue as commands on a pipeline. Building them on a pipeline that is never
executed, packing them into one string and running them from a script lets the script decide
(on a dedup marker, a backlog limit) whether to enqueue at all, in one step no other client can
interleave with. The ingress stores events this way, and the workers their fan-out.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import redis

# Lua: ``run(packed)`` executes the commands of one :func:`pack_commands` string.
RUN_PACKED = """
local function run(packed)
  local count, pos = struct.unpack('>I4', packed)
  for _ = 1, count do
    local argc
    argc, pos = struct.unpack('>I4', packed, pos)
    local args = {}
    for a = 1, argc do
      local size
      size, pos = struct.unpack('>I4', packed, pos)
      args[a] = string.sub(packed, pos, pos + size - 1)
      pos = pos + size
    end
    redis.call(unpack(args))
  end
end
"""

_LENGTH = struct.Struct(">I")


def command_builder() -> redis.Redis:
    """A client for rq to build commands on; it points nowhere, so any I/O rq tries fails loudly."""
    return redis.Redis(unix_socket_path="/nonexistent/capture-relay-builds-commands-only")


def captured_commands(builder: redis.Redis, enqueue: Callable[[Any], object]) -> list[tuple[object, ...]]:
    """The commands ``enqueue(pipeline)`` puts on a transaction pipeline of ``builder``, not sent."""
    pipe = builder.pipeline(transaction=True)
    pipe.multi()
    enqueue(pipe)
    commands = [tuple(args) for args, _options in pipe.command_stack]
    pipe.reset()
    return commands


def pack_commands(commands: list[tuple[object, ...]]) -> bytes:
    """Commands as ``run`` reads them: a count, then per command its argument count and the
    arguments, each a 4-byte big-endian length and the bytes; encoded as redis-py would."""
    parts = [_LENGTH.pack(len(commands))]
    for command in commands:
        parts.append(_LENGTH.pack(len(command)))
        for argument in command:
            data = _encode(argument)
            parts += [_LENGTH.pack(len(data)), data]
    return b"".join(parts)


def _encode(argument: object) -> bytes:
    if isinstance(argument, bytes):
        return argument
    if isinstance(argument, str):  # also rq's str-based enums, whose str() is not their value
        return argument.encode()
    if isinstance(argument, int | float) and not isinstance(argument, bool):
        return repr(argument).encode()
    raise TypeError(f"rq produced a command argument of type {type(argument).__name__}")
