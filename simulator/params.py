"""Capture API parameters, read the way Capture reads them.

Calls are ``POST`` with ``application/x-www-form-urlencoded`` fields; ``GET`` with query
parameters works too, and a POST may carry some in its query string. A body of any other type
(JSON, say) is not read, so a client that sends JSON gets ``missing_argument`` as from Capture.
Structured values are JSON strings (``attributes='["email"]'``, ``key_value='"a@b.c"'``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from simulator.envelope import CaptureError

FORM_TYPE = "application/x-www-form-urlencoded"
# Never logged with their values.
SECRET_PARAMS = frozenset({"client_secret", "password_value", "access_token"})


@dataclass(frozen=True, slots=True)
class Params:
    """The parameters of one call, in the order sent (query string first, then the body)."""

    pairs: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The last value sent for ``name``; None when it was not sent."""
        found = [value for key, value in self.pairs if key == name]
        return found[-1] if found else None

    def has(self, name: str) -> bool:
        """Whether ``name`` was sent with a non-empty value."""
        return bool(self.get(name))

    def names(self) -> list[str]:
        """The names sent, sorted and without repeats."""
        return sorted({key for key, _ in self.pairs})

    def require(self, name: str) -> str:
        """The value of a required parameter.

        Raises:
            CaptureError: 100 missing_argument when it is absent or empty.
        """
        value = self.get(name)
        if not value:
            raise CaptureError(100, f"missing required argument: {name}", argument_name=name)
        return value

    def json(self, name: str) -> Any:
        """The JSON value of ``name``; None when it was not sent.

        Raises:
            CaptureError: 200 invalid_argument when the value is not JSON.
        """
        value = self.get(name)
        if value is None or value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise CaptureError(200, f"argument {name} is not valid JSON: {value!r}", argument_name=name) from None

    def integer(self, name: str, default: int | None = None) -> int | None:
        """The integer value of ``name`` (``default`` when absent).

        Raises:
            CaptureError: 200 invalid_argument when it is not an integer.
        """
        value = self.get(name)
        return default if value is None or value == "" else _to_int(name, value)

    def require_integer(self, name: str) -> int:
        """The integer value of a required parameter.

        Raises:
            CaptureError: 100 when it is absent, 200 when it is not an integer.
        """
        return _to_int(name, self.require(name))

    def loggable(self) -> dict[str, str]:
        """Names and values for the call log, with secrets masked."""
        return {key: ("***" if key in SECRET_PARAMS else value) for key, value in self.pairs}


def _to_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CaptureError(200, f"argument {name} must be an integer, got {value!r}", argument_name=name) from None


def parse_params(query_string: bytes, content_type: str, body: bytes) -> Params:
    """The parameters of a request: its query string, then its body when that is a form."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    if content_type.split(";")[0].strip().lower() == FORM_TYPE and body:
        pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return Params(tuple(pairs))


async def read_params(request: Request) -> Params:
    """The parameters of ``request`` (reads its body)."""
    body = await request.body() if request.method == "POST" else b""
    return parse_params(request.scope.get("query_string", b""), request.headers.get("content-type", ""), body)
