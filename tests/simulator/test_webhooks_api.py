"""/webhooks/add|update|list|find|delete over HTTP (protocol reference §1.2)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.conftest import Running

CALLBACK = "https://hooks.example.com/janrain"


def add(capture: Running, **overrides: Any) -> dict[str, Any]:
    params = {
        "callback": CALLBACK,
        "event_type": "update",
        "entity_type": "user",
        "attributes": ["email", "givenName"],
        **overrides,
    }
    return capture.api("/webhooks/add", **params)


def test_add_then_find_and_list(capture: Running) -> None:
    """An added webhook gets a uuid and a 40-hex callback hash, and find and list show it."""
    added = add(capture, event_type="UPDATE")

    webhook = added["result"]
    found = capture.api("/webhooks/find", uuid=webhook["uuid"])
    listed = capture.api("/webhooks/list")

    assert added["stat"] == "ok"
    assert webhook["callback"] == CALLBACK
    assert webhook["event_type"] == "update"
    assert webhook["entity_type"] == "user"
    assert webhook["attributes"] == ["email", "givenName"]
    assert len(webhook["callback_hash"]) == 40
    int(webhook["callback_hash"], 16)
    assert found == {"result": webhook, "stat": "ok"}
    assert listed == {"webhooks": [webhook], "stat": "ok"}


def test_update_overwrites_only_what_is_sent(capture: Running) -> None:
    """``update`` changes the values sent and keeps the rest (hash included)."""
    webhook = add(capture)["result"]

    updated = capture.api("/webhooks/update", uuid=webhook["uuid"], attributes=["email"])["result"]

    assert updated == {**webhook, "attributes": ["email"]}


def test_changing_to_add_drops_the_attributes(capture: Running) -> None:
    """Attributes only belong to update webhooks."""
    webhook = add(capture)["result"]

    updated = capture.api("/webhooks/update", uuid=webhook["uuid"], event_type="add")["result"]

    assert (updated["event_type"], updated["attributes"]) == ("add", [])


def test_delete_removes_it(capture: Running) -> None:
    """After delete, find is 310 and list is empty."""
    webhook = add(capture)["result"]

    deleted = capture.api("/webhooks/delete", uuid=webhook["uuid"])

    assert deleted == {"stat": "ok"}
    assert capture.api("/webhooks/find", uuid=webhook["uuid"])["code"] == 310
    assert capture.api("/webhooks/list")["webhooks"] == []


@pytest.mark.parametrize("path", ["/webhooks/find", "/webhooks/update", "/webhooks/delete"])
def test_unknown_uuid_is_310(capture: Running, path: str) -> None:
    """A webhook uuid nobody added is record_not_found."""
    body = capture.api(path, uuid="00000000-0000-0000-0000-000000000000")

    assert (body["code"], body["error"]) == (310, "record_not_found")


@pytest.mark.parametrize("path", ["/webhooks/find", "/webhooks/update", "/webhooks/delete"])
def test_uuid_is_required(capture: Running, path: str) -> None:
    """find, update and delete need the webhook's uuid."""
    body = capture.api(path)

    assert (body["code"], body["argument_name"]) == (100, "uuid")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        pytest.param({"callback": ""}, 100, id="no-callback"),
        pytest.param({"entity_type": ""}, 100, id="no-entity-type"),
        pytest.param({"event_type": ""}, 100, id="no-event-type"),
        pytest.param({"event_type": "created"}, 200, id="unknown-event-type"),
        pytest.param({"entity_type": "robot"}, 222, id="unknown-entity-type"),
        pytest.param({"callback": "ftp://hooks.example.com/"}, 200, id="callback-not-http"),
        pytest.param({"attributes": "email"}, 200, id="attributes-not-json"),
        pytest.param({"attributes": {"email": True}}, 200, id="attributes-not-an-array"),
        pytest.param({"attributes": ["shoeSize"]}, 223, id="unknown-attribute"),
        pytest.param({"attributes": ""}, 100, id="update-without-attributes"),
        pytest.param({"event_type": "delete"}, 200, id="attributes-with-delete"),
    ],
)
def test_add_errors(capture: Running, overrides: dict[str, Any], code: int) -> None:
    """Missing values are 100; bad ones 200, unknown entity types 222, unknown attributes 223."""
    body = add(capture, **overrides)

    assert (body["stat"], body["code"]) == ("error", code)
    assert capture.api("/webhooks/list")["webhooks"] == []


def test_add_of_an_add_webhook_needs_no_attributes(capture: Running) -> None:
    """``add`` and ``delete`` webhooks are configured without attributes."""
    body = capture.api("/webhooks/add", callback=CALLBACK, event_type="add", entity_type="user")

    assert body["result"]["attributes"] == []
