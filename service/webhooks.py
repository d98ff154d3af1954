"""The two webhook routes: read, verify, normalise, store, answer.

Answers (DESIGN 3.1): 202 once every new event and its job are in Redis; 200 for a delivery
already accepted; 400 malformed; 401 not authentic; 413 too large; 415 wrong Content-Type;
503 with ``Retry-After`` when Redis or the signing keys are unavailable or the backlog is full;
500 for a fault of ours (counted as outcome ``error`` and logged as ``webhook.failed``).
Nothing is answered 2xx before it is stored, and bad input never gets a 5xx.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from service.deps import AppDeps, deps
from service.events import Event
from service.intake import IntakeResult, IntakeUnavailableError
from service.normalize import event_from_claims, events_from_legacy
from service.verify.errors import (
    BodyTooLargeError,
    KeysUnavailableError,
    MalformedDeliveryError,
    UnauthenticDeliveryError,
    UnsupportedMediaError,
    VerificationError,
    shown,
)
from service.verify.legacy import check_basic_auth, check_hashes, parse_batch
from service.verify.set_token import verify_token

log = structlog.get_logger(__name__)

V3_CONTENT_TYPES = frozenset({"application/secevent+jwt", "application/jwt", "text/plain"})
LEGACY_CONTENT_TYPES = frozenset({"application/json", "text/plain"})

_STATUS: dict[type[VerificationError], tuple[int, str]] = {
    MalformedDeliveryError: (400, "malformed"),
    UnauthenticDeliveryError: (401, "unauthentic"),
    BodyTooLargeError: (413, "too_large"),
    UnsupportedMediaError: (415, "unsupported_media_type"),
    VerificationError: (400, "malformed"),
}
# v3 answers 202 as push delivery (RFC 8935) does. Janrain retries a legacy delivery on any
# answer but 200 (protocol reference 2.3), so a stored legacy batch is answered 200.
_ACCEPTED_STATUS = {"v3": 202, "legacy": 200}

# Turns a request and its (size-checked) body into verified events; raises VerificationError.
EventReader = Callable[[Request, bytes], Awaitable[list[Event]]]


async def receive_v3(request: Request) -> Response:
    """``POST /webhooks/capture/v3``: one Security Event Token per request."""
    app = deps(request)
    jwks, policy = app.jwks, app.v3_policy
    if jwks is None or policy is None:
        return _not_configured(app, "v3")

    async def read(request: Request, body: bytes) -> list[Event]:
        try:
            token = body.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise MalformedDeliveryError("token_malformed", "the body is not a compact JWS") from exc
        now = app.clock()
        claims = await verify_token(token, jwks, policy, now)
        return [event_from_claims(claims, received_at=now)]

    return await _receive("v3", request, app, V3_CONTENT_TYPES, read)


async def receive_legacy(request: Request) -> Response:
    """``POST /webhooks/capture/legacy``: a JSON array of change notifications."""
    app = deps(request)
    legacy = app.settings.sources.legacy
    if legacy is None or not (legacy.callback_hashes or legacy.basic_auth):
        # With neither a hash nor Basic credentials anyone could inject events: stay off.
        return _not_configured(app, "legacy")

    async def read(request: Request, body: bytes) -> list[Event]:
        check_basic_auth(request.headers.get("authorization"), legacy)
        batch = parse_batch(body, app.settings.ingest.max_batch_size)
        check_hashes(batch, legacy.callback_hashes)
        return events_from_legacy(batch, received_at=app.clock())

    return await _receive("legacy", request, app, LEGACY_CONTENT_TYPES, read)


async def _receive(
    source: str, request: Request, app: AppDeps, content_types: frozenset[str], read: EventReader
) -> Response:
    started = time.perf_counter()
    try:
        _check_content_type(request, content_types)
        body = await _read_body(request, app.settings.ingest.max_body_size)
        events = await read(request, body)
        result = await app.intake.submit(events)
        response = _stored(source, app, result)
    except VerificationError as exc:
        response = _refused(source, app, exc)
    except (KeysUnavailableError, IntakeUnavailableError) as exc:
        response = _unavailable(source, app, exc.reason, str(exc))
    except Exception:  # noqa: BLE001 - a bug must still be counted, logged and answered 5xx
        response = _failed(source, app)
    app.metrics.ingest_duration.labels(source).observe(time.perf_counter() - started)
    return response


def _check_content_type(request: Request, accepted: frozenset[str]) -> None:
    given = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if given not in accepted:
        named = shown(given) if given else "(none)"
        choices = ", ".join(sorted(accepted))
        raise UnsupportedMediaError(
            "content_type_unsupported", f"Content-Type {named} is not accepted; use one of {choices}"
        )


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = BodyTooLargeError("body_too_large", f"the body is larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise MalformedDeliveryError("body_incomplete", "the client closed the connection mid-body") from exc
    body = b"".join(chunks)
    if not body.strip():
        raise MalformedDeliveryError("body_empty", "the body is empty")
    return body


def _stored(source: str, app: AppDeps, result: IntakeResult) -> Response:
    accepted_status = _ACCEPTED_STATUS[source]
    for event in result.accepted:
        log.info("webhook.accepted", **_ids(event), type=event.type, status=accepted_status)
    for event in result.duplicates:
        log.info("webhook.duplicate", **_ids(event), status=200)
    if not result.accepted and not result.duplicates:
        app.metrics.webhooks_received.labels(source, "empty").inc()
        log.info("webhook.empty", source=source, status=200)
        return JSONResponse({"status": "empty", "accepted": 0}, status_code=200)
    if not result.accepted:
        app.metrics.webhooks_received.labels(source, "duplicate").inc()
        return JSONResponse(
            {"status": "duplicate", "delivery_ids": [event.delivery_id for event in result.duplicates]},
            status_code=200,
        )
    app.metrics.webhooks_received.labels(source, "accepted").inc()
    return JSONResponse(
        {
            "status": "accepted",
            "event_ids": [event.event_id for event in result.accepted],
            "duplicates": len(result.duplicates),
        },
        status_code=accepted_status,
    )


def _ids(event: Event) -> dict[str, str]:
    return {
        "source": event.source,
        "event_id": event.event_id,
        "delivery_id": event.delivery_id,
        "uuid": event.uuid,
    }


def _refused(source: str, app: AppDeps, exc: VerificationError) -> Response:
    status, outcome = next(answer for kind, answer in _STATUS.items() if isinstance(exc, kind))
    app.metrics.webhooks_received.labels(source, outcome).inc()
    app.metrics.webhook_rejections.labels(source, exc.reason).inc()
    log.warning("webhook.rejected", source=source, status=status, reason=exc.reason, detail=exc.detail)
    headers = {}
    legacy = app.settings.sources.legacy
    if status == 401 and source == "legacy" and legacy is not None and legacy.basic_auth is not None:
        headers["WWW-Authenticate"] = 'Basic realm="capture-relay"'
    return JSONResponse(
        {"status": "rejected", "reason": exc.reason, "detail": exc.detail}, status_code=status, headers=headers
    )


def _unavailable(source: str, app: AppDeps, reason: str, detail: str) -> Response:
    app.metrics.webhooks_received.labels(source, "unavailable").inc()
    log.warning("webhook.unavailable", source=source, status=503, reason=reason, detail=detail)
    retry_after = str(app.settings.ingest.retry_after)
    return JSONResponse(
        {"status": "unavailable", "reason": reason}, status_code=503, headers={"Retry-After": retry_after}
    )


def _failed(source: str, app: AppDeps) -> Response:
    # Nothing was stored (the intake stores all or nothing), and a 5xx makes Capture retry, so
    # the event is not lost if the fault is fixed within Capture's retry window.
    app.metrics.webhooks_received.labels(source, "error").inc()
    log.exception("webhook.failed", source=source, status=500)
    return JSONResponse({"status": "error", "reason": "internal_error"}, status_code=500)


def _not_configured(app: AppDeps, source: str) -> Response:
    app.metrics.webhooks_received.labels(source, "disabled").inc()
    log.warning("webhook.rejected", source=source, status=404, reason="source_disabled")
    return JSONResponse(
        {"status": "rejected", "reason": "source_disabled", "detail": f"sources.{source} is not configured"},
        status_code=404,
    )
