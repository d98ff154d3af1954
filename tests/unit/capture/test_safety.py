"""What keeps a Capture call from doing harm: no duplicate creations on retry, bounded answers,
redirects refused, no record values in messages, and paging that cannot loop."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx2
import pytest

from tests.unit.capture.capture_server import Received, error, ok
from tests.unit.capture.test_capture_api import World, make_world
from workers.capture_calls import send_bounded
from workers.capture_errors import (
    CaptureError,
    CaptureHttpError,
    CaptureOutcomeUnknownError,
    CaptureProtocolError,
    CaptureUnavailableError,
    error_from_envelope,
)


@pytest.fixture
def basic() -> Iterator[World]:
    with make_world("basic") as made:
        yield made


def test_add_webhook_is_not_repeated_after_an_uncertain_failure(basic: World) -> None:
    """A 500 may come after Capture registered the webhook: a second add would register it twice."""
    basic.server.responder = lambda received: error(500, "unexpected_error")

    with pytest.raises(CaptureOutcomeUnknownError) as caught:
        basic.client.add_webhook(callback="https://hooks.example.com/x", event_type="add", entity_type="user")

    assert basic.paths == ["/webhooks/add"]
    assert not caught.value.retryable
    assert isinstance(caught.value.cause, CaptureError)


def test_add_webhook_is_repeated_after_a_refusal_that_did_nothing(basic: World) -> None:
    """510 and 480 are refusals before any work, so even a creation may be sent again."""
    answers = [error(510, "api_limit_error"), error(480, "api_feature_disabled"), ok(result={"uuid": "w-1"})]
    basic.server.responder = lambda received: answers.pop(0)

    added = basic.client.add_webhook(callback="https://hooks.example.com/x", event_type="add", entity_type="user")

    assert added == {"uuid": "w-1"}
    assert basic.paths == ["/webhooks/add"] * 3


def test_reads_are_still_repeated_after_a_500(basic: World) -> None:
    answers = [error(500, "unexpected_error"), ok(result={"uuid": "u"})]
    basic.server.responder = lambda received: answers.pop(0)

    assert basic.client.entity(uuid="u") == {"uuid": "u"}


def test_a_redirect_names_where_it_went_and_is_not_followed(basic: World) -> None:
    basic.server.responder = lambda received: httpx2.Response(301, headers={"Location": "https://elsewhere.example/"})

    with pytest.raises(CaptureHttpError) as caught:
        basic.client.entity(uuid="u")

    assert caught.value.reason == "redirect"
    assert "https://elsewhere.example/" in str(caught.value)
    assert "base_url" in str(caught.value)
    assert basic.paths == ["/entity"]


def test_the_description_stays_out_of_the_message() -> None:
    """Capture echoes arguments (an email used as key) in error_description; messages reach logs."""
    body = {"stat": "error", "code": 310, "error": "record_not_found", "error_description": "no ada@example.com"}

    exc = error_from_envelope(body, endpoint="/entity", http_status=200, retry_after=None)

    assert "ada@example.com" not in str(exc)
    assert exc.description == "no ada@example.com"


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (200, False), (400, False)])
def test_an_envelope_without_a_code_follows_the_http_status(status: int, retryable: bool) -> None:
    exc = error_from_envelope({"stat": "error"}, endpoint="/entity", http_status=status, retry_after=None)

    assert exc.retryable is retryable


def test_find_all_refuses_ids_that_do_not_grow(basic: World) -> None:
    """A server that ignores the id clause would make the walk loop forever."""
    page = [{"id": 1}, {"id": 2}]
    basic.server.responder = lambda received: ok(result_count=2, results=page)

    with pytest.raises(CaptureProtocolError, match="increasing id"):
        list(basic.client.find_all(page_size=2))

    assert len(basic.paths) == 2


class _Trickle(httpx2.SyncByteStream):
    def __init__(self, chunks: int, pause: float) -> None:
        self.chunks, self.pause = chunks, pause

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            time.sleep(self.pause)
            yield b" "


def _http(handler: httpx2.MockTransport) -> httpx2.Client:
    return httpx2.Client(transport=handler)


def test_an_answer_that_trickles_past_the_budget_times_out() -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, stream=_Trickle(20, 0.02)))
    with _http(transport) as http, pytest.raises(httpx2.ReadTimeout):
        send_bounded(http, "POST", "https://capture.example.com/entity", budget=0.1)


def test_an_oversized_answer_is_refused() -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=b"x" * 5000))
    with _http(transport) as http, pytest.raises(CaptureProtocolError, match="larger than 1000 bytes"):
        send_bounded(http, "POST", "https://capture.example.com/entity", budget=5, max_bytes=1000)


def test_a_bounded_answer_keeps_status_headers_and_decoded_body() -> None:
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(202, headers={"Retry-After": "3"}, json={"stat": "ok"})
    )
    with _http(transport) as http:
        response = send_bounded(http, "POST", "https://capture.example.com/entity", budget=5, data={"a": "b"})

    assert response.status_code == 202
    assert response.headers["Retry-After"] == "3"
    assert response.json() == {"stat": "ok"}
    assert response.request.content == b"a=b"


def test_a_refused_connection_is_marked_repeatable(basic: World) -> None:
    def refuse(received: Received) -> httpx2.Response:
        raise httpx2.ConnectError("refused")

    basic.server.responder = refuse
    with pytest.raises(CaptureUnavailableError) as caught:
        basic.client.entity(uuid="u")
    assert caught.value.repeatable
