"""/entity, /versions/entity and /entityType over HTTP, with every error code they can answer."""

from __future__ import annotations

import time
from typing import Any

import pytest

from simulator.profiles import capture_time
from tests.simulator.conftest import Running

ADDRESS = {"city": "Leeds", "stateAbbreviation": "WY", "country": "GB", "zip": "LS1"}


def make_user(capture: Running, **overrides: Any) -> dict[str, Any]:
    attributes = {"email": "ada@example.com", "givenName": "Ada", "familyName": "Lovelace", "primaryAddress": ADDRESS}
    return capture.user(**{**attributes, **overrides})


def test_entity_by_uuid_returns_the_whole_record(capture: Running) -> None:
    """A uuid lookup answers the full record with stat ok."""
    user = make_user(capture)

    body = capture.api("/entity", type_name="user", uuid=user["uuid"])

    assert body["stat"] == "ok"
    assert body["result"] == user
    assert body["result"]["primaryAddress"]["city"] == "Leeds"


def test_entity_by_id_and_by_key_attribute(capture: Running) -> None:
    """``id`` and ``key_attribute`` + JSON ``key_value`` find the same record."""
    make_user(capture, email="other@example.com")
    user = make_user(capture)

    by_id = capture.api("/entity", type_name="user", id=str(user["id"]))
    by_key = capture.api("/entity", type_name="user", key_attribute="email", key_value='"ada@example.com"')

    assert by_id["result"]["uuid"] == user["uuid"]
    assert by_key["result"]["uuid"] == user["uuid"]


def test_entity_accepts_get_with_query_parameters(capture: Running) -> None:
    """Capture also answers GET with the parameters in the query string."""
    user = make_user(capture)

    response = capture.http.get("/entity", params={"type_name": "user", "uuid": user["uuid"]})

    assert response.json()["result"]["email"] == "ada@example.com"


def test_attributes_select_and_keep_nesting(capture: Running) -> None:
    """Only the requested paths come back; a nested path keeps its parent object."""
    user = make_user(capture)

    body = capture.api(
        "/entity", type_name="user", uuid=user["uuid"], attributes=["email", "primaryAddress.city", "created"]
    )

    assert body["result"] == {
        "email": "ada@example.com",
        "primaryAddress": {"city": "Leeds"},
        "created": user["created"],
    }


def test_attribute_name_returns_that_value(capture: Running) -> None:
    """``attribute_name`` answers the value of one attribute."""
    user = make_user(capture)

    body = capture.api("/entity", type_name="user", uuid=user["uuid"], attribute_name="primaryAddress")

    assert body["result"] == ADDRESS


@pytest.mark.parametrize(
    ("params", "code", "error"),
    [
        pytest.param({"uuid": "x"}, 100, "missing_argument", id="no-type-name"),
        pytest.param({"type_name": "user"}, 100, "missing_argument", id="no-lookup"),
        pytest.param({"type_name": "user", "id": "1", "uuid": "x"}, 201, "duplicate_argument", id="id-and-uuid"),
        pytest.param({"type_name": "robot", "uuid": "x"}, 222, "unknown_entity_type", id="unknown-type"),
        pytest.param({"type_name": "user", "id": "one"}, 200, "invalid_argument", id="id-not-a-number"),
        pytest.param(
            {"type_name": "user", "key_attribute": "email", "key_value": "ada@example.com"},
            200,
            "invalid_argument",
            id="key-value-not-json",
        ),
        pytest.param(
            {"type_name": "user", "key_attribute": "givenName", "key_value": '"Ada"'},
            200,
            "invalid_argument",
            id="key-attribute-not-unique",
        ),
        pytest.param({"type_name": "user", "key_attribute": "email"}, 100, "missing_argument", id="no-key-value"),
        pytest.param({"type_name": "user", "uuid": "0000"}, 310, "record_not_found", id="no-such-record"),
    ],
)
def test_entity_errors(capture: Running, params: dict[str, str], code: int, error: str) -> None:
    """Each bad call gets Capture's code and string, on HTTP 200 by default."""
    make_user(capture)

    response = capture.call("/entity", **params)

    assert response.status_code == 200
    body = response.json()
    assert (body["stat"], body["code"], body["error"]) == ("error", code, error)
    assert len(body["request_token"]) == 16
    assert body["error_description"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"attributes": '["email", "favouriteColour"]'}, 223, id="unknown-attribute"),
        pytest.param({"attributes": '["primaryAddress.planet"]'}, 223, id="unknown-nested-attribute"),
        pytest.param({"attribute_name": "shoeSize"}, 223, id="unknown-attribute-name"),
        pytest.param({"attributes": '["email"'}, 200, id="attributes-not-json"),
        pytest.param({"attributes": '"email"'}, 200, id="attributes-not-an-array"),
        pytest.param({"created": "yesterday"}, 342, id="created-not-a-datetime"),
        pytest.param({"created": "2001-01-01 00:00:00 +0000"}, 330, id="created-mismatch"),
    ],
)
def test_entity_attribute_errors(capture: Running, params: dict[str, str], code: int) -> None:
    """Attributes outside the schema are 223; malformed JSON is 200; a wrong created is 330."""
    user = make_user(capture)

    body = capture.api("/entity", type_name="user", uuid=user["uuid"], **params)

    assert body["code"] == code


def test_deleted_record_is_not_found(capture: Running) -> None:
    """After a delete, /entity answers 310 as Capture does."""
    user = make_user(capture)
    capture.store.delete("user", user["uuid"])

    body = capture.api("/entity", type_name="user", uuid=user["uuid"])

    assert (body["code"], body["error"]) == (310, "record_not_found")


def test_versions_entity_returns_the_record_as_it_was(capture: Running) -> None:
    """/versions/entity at a time between two changes answers the older values."""
    user = make_user(capture)
    between = time.time()
    time.sleep(0.01)
    capture.store.update("user", user["uuid"], {"email": "new@example.com"})

    old = capture.api("/versions/entity", type_name="user", id=str(user["id"]), timestamp=capture_time(between))
    now = capture.api("/versions/entity", type_name="user", id=str(user["id"]), timestamp=capture_time(time.time()))

    assert old["result"]["email"] == "ada@example.com"
    assert now["result"]["email"] == "new@example.com"


def test_versions_entity_accepts_whole_seconds_and_selects_attributes(capture: Running) -> None:
    """A timestamp without microseconds works, and ``attributes`` narrows the result."""
    user = make_user(capture)
    later = capture_time(time.time() + 2).split(".")[0] + " +0000"

    body = capture.api("/versions/entity", type_name="user", id=str(user["id"]), timestamp=later, attributes=["email"])

    assert body["result"] == {"email": "ada@example.com"}


@pytest.mark.parametrize(
    ("timestamp", "code"),
    [
        pytest.param("2016-03-13T19:39:17Z", 342, id="iso-8601-is-not-capture-format"),
        pytest.param("not a time", 342, id="garbage"),
        pytest.param("2001-01-01 00:00:00 +0000", 310, id="before-the-record-existed"),
    ],
)
def test_versions_entity_errors(capture: Running, timestamp: str, code: int) -> None:
    """A bad timestamp is 342 invalid_date_time; no version at that time is 310."""
    user = make_user(capture)

    body = capture.api("/versions/entity", type_name="user", id=str(user["id"]), timestamp=timestamp)

    assert body["code"] == code


def test_versions_entity_needs_id_and_timestamp(capture: Running) -> None:
    """``uuid`` is not the documented key of /versions/entity: without ``id`` it is 100."""
    user = make_user(capture)

    no_id = capture.api("/versions/entity", type_name="user", uuid=user["uuid"], timestamp=user["created"])
    no_timestamp = capture.api("/versions/entity", type_name="user", id=str(user["id"]))

    assert (no_id["code"], no_id["argument_name"]) == (100, "id")
    assert (no_timestamp["code"], no_timestamp["argument_name"]) == (100, "timestamp")


def test_entity_type_describes_the_user_schema(capture: Running) -> None:
    """/entityType answers a schema with typed attributes and nested attr_defs for objects."""
    body = capture.api("/entityType", type_name="user")

    schema = body["schema"]
    assert body["stat"] == "ok"
    assert schema["name"] == "user"
    by_name = {attr["name"]: attr for attr in schema["attr_defs"]}
    assert {"uuid", "id", "created", "lastUpdated", "email", "emailVerified", "birthday"} <= set(by_name)
    assert by_name["email"]["type"] == "string"
    assert by_name["email"]["case-sensitive"] is False
    assert "unique" in by_name["email"]["constraints"]
    city = {attr["name"]: attr for attr in by_name["primaryAddress"]["attr_defs"]}["city"]
    assert city["type"] == "string"


def test_entity_type_of_an_unknown_type_is_222(capture: Running) -> None:
    """An entity type the application does not have is 222."""
    body = capture.api("/entityType", type_name="robot")

    assert (body["code"], body["error"]) == (222, "unknown_entity_type")
