"""CaptureClient against a MockTransport that checks each request the way Capture would (protocol §4, §6.2)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import httpx2
import pytest

from service.secret import Secret
from tests.unit.capture.capture_server import (
    BASE_URL,
    CLIENT_ID,
    CLIENT_SECRET,
    FakeCapture,
    Received,
    Responder,
    error,
    ok,
)
from tests.unit.capture.fakes import FakeClock
from workers.capture_api import MAX_RESULTS, CaptureClient, FindResult
from workers.capture_auth import AuthMode, ClientCredentials
from workers.capture_calls import ApiCaller, RetryPolicy
from workers.capture_errors import (
    CaptureApiError,
    CaptureHttpError,
    CaptureLimitError,
    CaptureProtocolError,
    RecordNotFoundError,
)

UUID = "6b004bc5-179c-45c2-815d-31b06169371d"
# 2024-05-01 12:34:56.25 UTC: the signed Date header drops the fraction.
NOW = datetime(2024, 5, 1, 12, 34, 56, 250000, tzinfo=UTC).timestamp()
RECORD = {"id": 999, "uuid": UUID, "email": "johndoe@example.com", "givenName": "John"}
MODES: list[AuthMode] = ["basic", "signed", "params"]


@dataclass
class World:
    """A client, the fake Capture it talks to, and the fake clock behind both its retries and its Date header."""

    client: CaptureClient
    server: FakeCapture
    clock: FakeClock

    @property
    def sent(self) -> list[dict[str, str]]:
        """The fields of every request Capture received, in order."""
        return [received.fields for received in self.server.received]

    @property
    def paths(self) -> list[str]:
        """The path of every request Capture received, in order."""
        return [received.path for received in self.server.received]


@contextmanager
def make_world(auth: AuthMode = "basic", *, deadline: float = 30.0) -> Iterator[World]:
    """A client in ``auth`` mode over a fresh fake Capture; retries wait on a fake clock."""
    clock = FakeClock()
    server = FakeCapture(auth=auth)
    caller = ApiCaller(
        policy=RetryPolicy(deadline=deadline),
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        rng=random.Random(3),
    )
    with httpx2.Client(transport=server.transport()) as http:
        client = CaptureClient(
            BASE_URL + "/",
            ClientCredentials(CLIENT_ID, Secret(CLIENT_SECRET)),
            http=http,
            caller=caller,
            auth=auth,
            # Wall time moves with the retry waits, so each attempt's Date header can be checked.
            clock=lambda: NOW + (clock.now - 1000.0),
        )
        yield World(client, server, clock)


@pytest.fixture(params=MODES)
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """A client in each authentication mode; the fake server checks the credentials of that mode."""
    with make_world(request.param) as made:
        yield made


@pytest.fixture
def basic() -> Iterator[World]:
    """A client with Basic credentials, for tests about answers rather than requests."""
    with make_world("basic") as made:
        yield made


class TestAuthentication:
    def test_signed_request_carries_the_clock_date(self) -> None:
        """In signed mode the Date header is the client clock in UTC, and the server's HMAC check passes."""
        with make_world("signed") as world:
            world.server.expected_date = "2024-05-01 12:34:56"
            world.server.answers.append(ok(result=RECORD))

            world.client.entity(uuid=UUID, attributes=["email", "givenName", "lastUpdated"])

            assert world.sent == [
                {"type_name": "user", "uuid": UUID, "attributes": '["email","givenName","lastUpdated"]'}
            ]

    def test_signed_retry_is_signed_again_with_a_fresh_date(self) -> None:
        """Each attempt is signed with its own Date: a retry 2 s later carries a date 2 s later."""
        with make_world("signed") as world:
            world.server.answers += [error(510, "api_limit_error", headers={"Retry-After": "2"}), ok(result=RECORD)]

            world.client.entity(uuid=UUID)

            dates = [received.headers["Date"] for received in world.server.received]
            assert dates == ["2024-05-01 12:34:56", "2024-05-01 12:34:58"]

    def test_basic_header_is_the_reference_value(self) -> None:
        """Basic mode sends the Authorization value printed in §6.1 for B's client."""
        with make_world("basic") as world:
            world.server.answers.append(ok(result=RECORD))

            world.client.entity(uuid=UUID)

            assert world.server.received[0].headers["Authorization"] == (
                "Basic YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU6MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dXY="
            )


class TestEntity:
    def test_by_uuid(self, world: World) -> None:
        """``uuid=`` sends type_name and uuid only, and returns the result object."""
        world.server.answers.append(ok(result=RECORD))

        record = world.client.entity(uuid=UUID)

        assert record == RECORD
        assert world.paths == ["/entity"]
        assert world.sent == [{"type_name": "user", "uuid": UUID}]

    def test_by_id(self, world: World) -> None:
        """``id=`` sends the numeric id as a decimal string."""
        world.server.answers.append(ok(result=RECORD))

        world.client.entity(id=999)

        assert world.sent == [{"type_name": "user", "id": "999"}]

    def test_by_id_zero(self, world: World) -> None:
        """Id 0 is a value, not a missing argument."""
        world.server.answers.append(ok(result=RECORD))

        world.client.entity(id=0)

        assert world.sent == [{"type_name": "user", "id": "0"}]

    @pytest.mark.parametrize(
        ("value", "encoded"),
        [
            pytest.param("a@b.c", '"a@b.c"', id="string-quoted"),
            pytest.param("é@b.c", '"é@b.c"', id="non-ascii-raw"),
            pytest.param('say "hi"', '"say \\"hi\\""', id="escaped-quotes"),
            pytest.param(42, "42", id="number"),
        ],
    )
    def test_by_key(self, world: World, value: object, encoded: str) -> None:
        """``key=`` sends key_attribute and key_value as a JSON value (strings quoted)."""
        world.server.answers.append(ok(result=RECORD))

        world.client.entity(key=("email", value))

        assert world.sent == [{"type_name": "user", "key_attribute": "email", "key_value": encoded}]

    def test_attributes_and_entity_type(self, world: World) -> None:
        """``attributes`` travel as a compact JSON array, and ``entity_type`` replaces the default type."""
        world.server.answers.append(ok(result={"email": "johndoe@example.com"}))

        record = world.client.entity(uuid=UUID, attributes=["email", "primaryAddress.city"], entity_type="admin")

        assert record == {"email": "johndoe@example.com"}
        assert world.sent == [{"type_name": "admin", "uuid": UUID, "attributes": '["email","primaryAddress.city"]'}]

    @pytest.mark.parametrize(
        "selectors",
        [
            pytest.param({}, id="none"),
            pytest.param({"uuid": UUID, "id": 999}, id="uuid-and-id"),
            pytest.param({"id": 999, "key": ("email", "a@b.c")}, id="id-and-key"),
            pytest.param({"uuid": UUID, "id": 1, "key": ("email", "a@b.c")}, id="all-three"),
        ],
    )
    def test_exactly_one_selector(self, basic: World, selectors: dict[str, object]) -> None:
        """Zero or several of uuid/id/key is a ValueError raised before any request."""
        with pytest.raises(ValueError, match="exactly one of uuid, id or key"):
            basic.client.entity(**selectors)  # type: ignore[arg-type]

        assert basic.server.received == []

    def test_record_not_found(self, basic: World) -> None:
        """Code 310 raises RecordNotFoundError after one request."""
        basic.server.answers.append(error(310, "record_not_found"))

        with pytest.raises(RecordNotFoundError) as caught:
            basic.client.entity(uuid=UUID)

        assert (caught.value.code, caught.value.request_token, caught.value.endpoint) == (
            310,
            "a1b2c3d4e5f6g7h8",
            "/entity",
        )
        assert len(basic.server.received) == 1

    def test_answer_without_result(self, basic: World) -> None:
        """A ``stat: ok`` without a result object is a protocol error."""
        basic.server.answers.append(ok(results=[]))

        with pytest.raises(CaptureProtocolError, match="without a result object"):
            basic.client.entity(uuid=UUID)


class TestFind:
    def test_every_parameter(self, world: World) -> None:
        """Each parameter goes out under Capture's name, JSON where structured, and the page is parsed."""
        world.server.answers.append(ok(result_count=2, total_count=120, results=[{"id": 1}, {"id": 2}]))

        page = world.client.find(
            filter="lastUpdated >= '2016-01-01'",
            attributes=["uuid", "email"],
            sort_on=["-lastUpdated", "id"],
            max_results=50,
            first_result=100,
            show_total_count=True,
        )

        assert page == FindResult(results=[{"id": 1}, {"id": 2}], result_count=2, total_count=120)
        assert world.paths == ["/entity.find"]
        assert world.sent == [
            {
                "type_name": "user",
                "filter": "lastUpdated >= '2016-01-01'",
                "attributes": '["uuid","email"]',
                "sort_on": '["-lastUpdated","id"]',
                "max_results": "50",
                "first_result": "100",
                "show_total_count": "true",
            }
        ]

    def test_only_the_type(self, world: World) -> None:
        """Without options only type_name is sent, and total_count stays None."""
        world.server.answers.append(ok(result_count=0, results=[]))

        page = world.client.find(entity_type="admin")

        assert page == FindResult(results=[], result_count=0, total_count=None)
        assert world.sent == [{"type_name": "admin"}]

    def test_result_count_defaults_to_the_page_length(self, basic: World) -> None:
        """A missing result_count is the number of results received."""
        basic.server.answers.append(ok(results=[{"id": 1}, {"id": 2}, {"id": 3}]))

        page = basic.client.find(filter="id > 0")

        assert page.result_count == 3

    def test_garbage_result_count_is_a_protocol_error(self, basic: World) -> None:
        """A result_count that is not a number is an answer Capture never sends: CaptureProtocolError."""
        basic.server.answers.append(ok(result_count="n/a", results=[{"id": 1}]))

        with pytest.raises(CaptureProtocolError):
            basic.client.find(filter="id > 0")

    def test_missing_results_is_a_protocol_error(self, basic: World) -> None:
        """An ok answer without a results list is refused."""
        basic.server.answers.append(ok(result_count=1))

        with pytest.raises(CaptureProtocolError, match="without a results list"):
            basic.client.find(filter="id > 0")


def _pages(records: list[dict[str, int]]) -> Responder:
    """A responder that serves ``records`` the way Capture evaluates a trailing ``id > N`` with sort_on id."""

    def respond(received: Received) -> httpx2.Response:
        after = re.search(r"(?:^| and )id > (\d+)$", received.fields.get("filter", ""))
        last = int(after.group(1)) if after else 0
        size = int(received.fields["max_results"])
        page = [record for record in records if record["id"] > last][:size]
        return ok(result_count=len(page), results=page)

    return respond


class TestFindAll:
    def test_pages_on_id_until_a_short_page(self, world: World) -> None:
        """Each next page filters ``(<filter>) and id > <last id>`` sorted on id; a short page ends the walk."""
        records = [{"id": n} for n in (3, 5, 8, 13, 21)]
        world.server.responder = _pages(records)

        found = list(world.client.find_all(filter="lastUpdated >= '2016-01-01'", attributes=["email"], page_size=2))

        assert found == records
        assert world.sent == [
            {
                "type_name": "user",
                "filter": "(lastUpdated >= '2016-01-01')",
                "attributes": '["email","id"]',
                "sort_on": '["id"]',
                "max_results": "2",
            },
            {
                "type_name": "user",
                "filter": "(lastUpdated >= '2016-01-01') and id > 5",
                "attributes": '["email","id"]',
                "sort_on": '["id"]',
                "max_results": "2",
            },
            {
                "type_name": "user",
                "filter": "(lastUpdated >= '2016-01-01') and id > 13",
                "attributes": '["email","id"]',
                "sort_on": '["id"]',
                "max_results": "2",
            },
        ]

    def test_without_filter_or_attributes(self, basic: World) -> None:
        """With no filter the first page has none and the next ones filter on id alone; no attributes are sent."""
        records = [{"id": n} for n in range(1, 5)]
        basic.server.responder = _pages(records)

        found = list(basic.client.find_all(page_size=2))

        assert found == records
        assert [fields.get("filter") for fields in basic.sent] == [None, "id > 2", "id > 4"]
        assert all("attributes" not in fields for fields in basic.sent)

    def test_id_is_not_added_twice(self, basic: World) -> None:
        """Attributes that already name id are sent as given."""
        basic.server.answers.append(ok(result_count=1, results=[{"id": 1}]))

        list(basic.client.find_all(attributes=["id", "email"], page_size=10))

        assert basic.sent[0]["attributes"] == '["id","email"]'

    def test_is_lazy(self, basic: World) -> None:
        """No request is made before the first record is asked for."""
        basic.server.answers.append(ok(result_count=0, results=[]))

        records = basic.client.find_all(filter="id > 0")

        assert basic.server.received == []
        assert list(records) == []
        assert len(basic.server.received) == 1

    def test_full_page_without_id_is_a_protocol_error(self, basic: World) -> None:
        """A full page whose last record lacks the id asked for cannot be paged on: CaptureProtocolError."""
        basic.server.answers.append(ok(result_count=2, results=[{"id": 1}, {"email": "a@b.c"}]))

        with pytest.raises(CaptureProtocolError):
            list(basic.client.find_all(attributes=["email"], page_size=2))

    @pytest.mark.parametrize("size", [0, -1, MAX_RESULTS + 1])
    def test_page_size_bounds(self, basic: World, size: int) -> None:
        """A page size outside 1..10000 is refused."""
        with pytest.raises(ValueError, match="page_size"):
            list(basic.client.find_all(page_size=size))


class TestVersion:
    @pytest.mark.parametrize(
        "at",
        [
            pytest.param(datetime(2016, 3, 13, 19, 39, 17, 856608, tzinfo=UTC), id="datetime-utc"),
            pytest.param(
                datetime(2016, 3, 13, 21, 39, 17, 856608, tzinfo=timezone(timedelta(hours=2))), id="datetime-plus-2h"
            ),
            pytest.param(1457897957.856608, id="float"),
            pytest.param("2016-03-13 19:39:17.856608 +0000", id="string-as-is"),
        ],
    )
    def test_timestamp_formats(self, world: World, at: datetime | float | str) -> None:
        """Datetimes and epoch seconds become Capture's UTC format; a string is sent unchanged."""
        world.server.answers.append(ok(result={"id": 999, "email": "old@example.com"}))

        record = world.client.version(999, at)

        assert record == {"id": 999, "email": "old@example.com"}
        assert world.paths == ["/versions/entity"]
        assert world.sent == [{"type_name": "user", "id": "999", "timestamp": "2016-03-13 19:39:17.856608 +0000"}]

    def test_did_not_exist_then(self, basic: World) -> None:
        """A 310 from /versions/entity is RecordNotFoundError for that endpoint."""
        basic.server.answers.append(error(310, "record_not_found"))

        with pytest.raises(RecordNotFoundError) as caught:
            basic.client.version(999, "2000-01-01 00:00:00 +0000", entity_type="admin")

        assert caught.value.endpoint == "/versions/entity"
        assert basic.sent[0]["type_name"] == "admin"


class TestSchema:
    def test_schema(self, world: World) -> None:
        """``/entityType`` is asked for the type and its schema object returned."""
        schema = {"name": "user", "attr_defs": [{"name": "email", "type": "string"}]}
        world.server.answers.append(ok(schema=schema))

        result = world.client.schema()

        assert result == schema
        assert world.paths == ["/entityType"]
        assert world.sent == [{"type_name": "user"}]

    def test_missing_schema(self, basic: World) -> None:
        """An ok answer without a schema object is a protocol error."""
        basic.server.answers.append(ok(result={}))

        with pytest.raises(CaptureProtocolError, match="without a schema"):
            basic.client.schema("admin")


class TestWebhooks:
    def test_add(self, world: World) -> None:
        """``/webhooks/add`` gets callback, event_type, entity_type and a JSON attribute list."""
        world.server.answers.append(ok(result={"uuid": "w-1", "callback": "https://hooks.example.com/janrain"}))

        hook = world.client.add_webhook(
            callback="https://hooks.example.com/janrain",
            event_type="update",
            entity_type="user",
            attributes=["email", "givenName"],
        )

        assert hook == {"uuid": "w-1", "callback": "https://hooks.example.com/janrain"}
        assert world.paths == ["/webhooks/add"]
        assert world.sent == [
            {
                "callback": "https://hooks.example.com/janrain",
                "event_type": "update",
                "entity_type": "user",
                "attributes": '["email","givenName"]',
            }
        ]

    def test_add_without_attributes(self, basic: World) -> None:
        """Without attributes the field is not sent; an answer without result gives its other keys."""
        basic.server.answers.append(ok(uuid="w-2"))

        hook = basic.client.add_webhook(callback="https://h.example.com/x", event_type="delete", entity_type="user")

        assert hook == {"uuid": "w-2"}
        assert basic.sent == [{"callback": "https://h.example.com/x", "event_type": "delete", "entity_type": "user"}]

    def test_update_sends_only_the_changes(self, world: World) -> None:
        """``/webhooks/update`` gets the uuid and only the fields given."""
        world.server.answers.append(ok(webhook={"uuid": "w-1", "event_type": "update"}))

        hook = world.client.update_webhook("w-1", callback="https://hooks.example.com/v2", attributes=["email"])

        assert hook == {"uuid": "w-1", "event_type": "update"}
        assert world.paths == ["/webhooks/update"]
        assert world.sent == [{"uuid": "w-1", "callback": "https://hooks.example.com/v2", "attributes": '["email"]'}]

    def test_update_every_field(self, basic: World) -> None:
        """All four fields can be changed at once."""
        basic.server.answers.append(ok(result={"uuid": "w-1"}))

        basic.client.update_webhook(
            "w-1", callback="https://h.example.com/y", event_type="add", entity_type="admin", attributes=[]
        )

        assert basic.sent == [
            {
                "uuid": "w-1",
                "callback": "https://h.example.com/y",
                "event_type": "add",
                "entity_type": "admin",
                "attributes": "[]",
            }
        ]

    def test_list(self, world: World) -> None:
        """``/webhooks/list`` takes no fields and returns the webhooks list."""
        hooks = [{"uuid": "w-1"}, {"uuid": "w-2"}]
        world.server.answers.append(ok(webhooks=hooks))

        result = world.client.list_webhooks()

        assert result == hooks
        assert world.paths == ["/webhooks/list"]
        assert world.sent == [{}]

    def test_list_without_webhooks(self, basic: World) -> None:
        """An ok answer without a webhooks list is a protocol error."""
        basic.server.answers.append(ok(results=[]))

        with pytest.raises(CaptureProtocolError, match="without a webhooks list"):
            basic.client.list_webhooks()

    def test_find(self, world: World) -> None:
        """``/webhooks/find`` gets the uuid."""
        world.server.answers.append(ok(result={"uuid": "w-1", "event_type": "update"}))

        hook = world.client.find_webhook("w-1")

        assert hook == {"uuid": "w-1", "event_type": "update"}
        assert (world.paths, world.sent) == (["/webhooks/find"], [{"uuid": "w-1"}])

    def test_delete(self, world: World) -> None:
        """``/webhooks/delete`` gets the uuid and returns nothing."""
        world.server.answers.append(ok())

        world.client.delete_webhook("w-1")

        assert (world.paths, world.sent) == (["/webhooks/delete"], [{"uuid": "w-1"}])


class TestErrors:
    def test_envelope_on_http_200(self, basic: World) -> None:
        """``stat: error`` on HTTP 200 is a CaptureApiError; a permanent code is not retried."""
        basic.server.answers.append(error(223, "unknown_attribute"))

        with pytest.raises(CaptureApiError) as caught:
            basic.client.entity(uuid=UUID, attributes=["nope"])

        assert (type(caught.value), caught.value.code, caught.value.http_status) == (CaptureApiError, 223, 200)
        assert caught.value.retryable is False
        assert len(basic.server.received) == 1

    def test_envelope_on_http_400(self, basic: World) -> None:
        """The envelope wins over the HTTP status: a 400 with code 402 is an auth error with http_status 400."""
        basic.server.answers.append(error(402, "invalid_client_credentials", status=400))

        with pytest.raises(CaptureApiError) as caught:
            basic.client.entity(uuid=UUID)

        assert (caught.value.reason, caught.value.code, caught.value.http_status) == ("auth", 402, 400)
        assert len(basic.server.received) == 1

    def test_envelope_510_on_http_510_is_retried(self, basic: World) -> None:
        """An api_limit_error on HTTP 510 is retried and the next answer returned."""
        basic.server.answers += [error(510, "api_limit_error", status=510), ok(result=RECORD)]

        record = basic.client.entity(uuid=UUID)

        assert record == RECORD
        assert len(basic.server.received) == 2
        assert len(basic.clock.sleeps) == 1

    def test_510_until_the_deadline(self) -> None:
        """A limit that never clears ends in CaptureLimitError, after several attempts."""
        with make_world("basic", deadline=2.0) as world:
            world.server.responder = lambda received: error(510, "api_limit_error", status=510)

            with pytest.raises(CaptureLimitError) as caught:
                world.client.entity(uuid=UUID)

            assert caught.value.http_status == 510
            assert len(world.server.received) == len(world.clock.sleeps) + 1 > 2

    def test_non_json_502_is_a_retryable_http_error(self) -> None:
        """A gateway's HTML 502 becomes a retryable CaptureHttpError with an excerpt of the page."""
        with make_world("basic", deadline=1.0) as world:
            world.server.responder = lambda received: httpx2.Response(
                502, text="<html>\n  <h1>502 Bad Gateway</h1>\n</html>"
            )

            with pytest.raises(CaptureHttpError) as caught:
                world.client.entity(uuid=UUID)

            assert (caught.value.http_status, caught.value.retryable) == (502, True)
            assert caught.value.detail == "<html> <h1>502 Bad Gateway</h1> </html>"
            assert len(world.server.received) > 1

    def test_non_json_502_then_success(self, basic: World) -> None:
        """After a 502 the call is repeated and succeeds."""
        basic.server.answers += [httpx2.Response(502, text="Bad Gateway"), ok(result=RECORD)]

        assert basic.client.entity(uuid=UUID) == RECORD
        assert len(basic.server.received) == 2

    def test_non_json_200_is_a_protocol_error(self, basic: World) -> None:
        """A 200 that is not JSON is not Capture: CaptureProtocolError, not retried."""
        basic.server.answers.append(httpx2.Response(200, text="<html>maintenance</html>"))

        with pytest.raises(CaptureProtocolError) as caught:
            basic.client.entity(uuid=UUID)

        assert "HTTP 200" in str(caught.value)
        assert len(basic.server.received) == 1

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"result": RECORD}, id="no-stat"),
            pytest.param({"stat": "fine", "result": RECORD}, id="other-stat"),
            pytest.param([RECORD], id="list"),
        ],
    )
    def test_missing_stat_ok_is_a_protocol_error(self, basic: World, body: object) -> None:
        """JSON without ``stat: ok`` is refused even on HTTP 200."""
        basic.server.answers.append(httpx2.Response(200, json=body))

        with pytest.raises(CaptureProtocolError):
            basic.client.entity(uuid=UUID)

    def test_non_json_4xx_is_a_permanent_http_error(self, basic: World) -> None:
        """A 404 page without envelope is a permanent CaptureHttpError."""
        basic.server.answers.append(httpx2.Response(404, text="Not Found"))

        with pytest.raises(CaptureHttpError) as caught:
            basic.client.entity(uuid=UUID)

        assert (caught.value.http_status, caught.value.retryable, caught.value.detail) == (404, False, "Not Found")

    def test_retry_after_seconds_is_carried(self, basic: World) -> None:
        """A 429 asking for 120 s (past the 30 s deadline) surfaces at once with retry_after 120."""
        basic.server.answers.append(httpx2.Response(429, text="slow down", headers={"Retry-After": "120"}))

        with pytest.raises(CaptureHttpError) as caught:
            basic.client.entity(uuid=UUID)

        assert (caught.value.http_status, caught.value.retry_after) == (429, 120.0)
        assert len(basic.server.received) == 1

    def test_retry_after_date_is_carried_on_the_envelope_error(self, basic: World) -> None:
        """An HTTP-date Retry-After is turned into seconds from the client clock, on a Capture error too."""
        retry_at = "Wed, 01 May 2024 12:35:56 GMT"  # 59.75 s after NOW
        basic.server.answers.append(error(510, "api_limit_error", status=503, headers={"Retry-After": retry_at}))

        with pytest.raises(CaptureLimitError) as caught:
            basic.client.entity(uuid=UUID)

        assert caught.value.retry_after == pytest.approx(59.75)
        assert caught.value.http_status == 503

    def test_retry_after_is_waited_before_the_retry(self, basic: World) -> None:
        """A Retry-After within the deadline is waited before the next attempt."""
        basic.server.answers += [error(510, "api_limit_error", headers={"Retry-After": "4"}), ok(result=RECORD)]

        basic.client.entity(uuid=UUID)

        assert basic.clock.sleeps == [4.0]
