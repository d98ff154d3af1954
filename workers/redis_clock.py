"""Redis's clock in Lua scripts, for state that several worker processes share.

Scripts that compare times (leases, rate tokens, open periods) read the server's clock rather
than take a time from the caller, so the clocks of the pods never matter.
"""

from __future__ import annotations

# Prepend to a script: sets the local ``now`` to the server's time in µs.
LUA_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
"""
