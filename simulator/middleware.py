"""Pure ASGI middleware: faults, the simultaneous-call limit and the call log, for every API call.

Paths under ``/__sim`` (the control API) pass straight through. Every other call is logged
(path, auth mode, parameter names and non-secret values, answer) and gets the current latency
and failure rules. Capture API calls (``faults.CAPTURE_API_PATHS``) are also counted in flight
from arrival to answer; past ``max_concurrent_calls`` of them, the answer is Capture's 510
``api_limit_error``, given at once, as Capture refuses such calls without working on them.
"""

from __future__ import annotations

import time
from http import HTTPStatus

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulator.config import SimulatorConfig
from simulator.credentials import auth_mode
from simulator.envelope import CaptureError, error_response
from simulator.faults import CAPTURE_API_PATHS, FaultRule, Faults, path_matches
from simulator.params import parse_params
from simulator.stats import SCOPE_KEY, CallRecord, CallStats

CONTROL_PREFIX = "/__sim"
_DESCRIPTIONS = {
    480: "this API feature is temporarily disabled",
    500: "unexpected error",
    504: "the API call timed out",
    510: "the limit on simultaneous API calls has been reached",
}


class FaultMiddleware:
    """Apply ``faults`` to every non-control request and record it in ``stats``."""

    def __init__(self, app: ASGIApp, *, faults: Faults, stats: CallStats, config: SimulatorConfig) -> None:
        self.app = app
        self.faults = faults
        self.stats = stats
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path_matches(path, CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        body, receive = await _buffered(receive)
        headers = Headers(scope=scope)
        params = parse_params(scope.get("query_string", b""), headers.get("content-type", ""), body)
        record = CallRecord(
            at=time.time(),
            method=scope["method"],
            path=path,
            auth=auth_mode(headers.get("authorization"), params),
            params=params.names(),
            values=params.loggable(),
        )
        scope = {**scope, SCOPE_KEY: record}
        capture_api = any(path_matches(path, prefix) for prefix in CAPTURE_API_PATHS)
        started = time.monotonic()
        in_flight = self.stats.begin(record, capture_api=capture_api)

        async def send_noting_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            limit = self.faults.max_concurrent_calls
            if capture_api and limit is not None and in_flight > limit:
                record.fault = "max_concurrent_calls"
                await self._capture_error(510, None, record)(scope, receive, send_noting_status)
                return
            await self._answer(scope, receive, send_noting_status, record)
        finally:
            record.duration = time.monotonic() - started
            self.stats.end(record, capture_api=capture_api)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, record: CallRecord) -> None:
        decision = self.faults.decide(record.path)
        if decision.delay > 0:
            await anyio.sleep(decision.delay)
        failure = decision.failure
        if failure is None:
            await self.app(scope, receive, send)
            return
        record.fault = failure.kind
        response = (
            self._capture_error(failure.code or 500, failure.retry_after, record)
            if failure.kind == "capture_error"
            else _http_failure(failure)
        )
        await response(scope, receive, send)

    def _capture_error(self, code: int, retry_after: float | None, record: CallRecord) -> Response:
        record.answered(code)
        error = CaptureError(code, _DESCRIPTIONS.get(code, "error injected by the simulator"))
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        return error_response(error, self.config.error_http_status, headers)


def _http_failure(rule: FaultRule) -> Response:
    status = rule.status or 500
    headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else None
    if rule.body is not None:
        return Response(rule.body, status_code=status, headers=headers, media_type="text/html")
    return JSONResponse({"status": status, "message": _phrase(status)}, status_code=status, headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body; returns it and a ``receive`` that hands it to the app again."""
    chunks: list[bytes] = []
    pending: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            pending.append(message)  # a disconnect: the app must see it too
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending.insert(0, {"type": "http.request", "body": body, "more_body": False})

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return body, replay
