"""The control API: stats, faults and profiles, and its 400s for bad input."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.conftest import Running


def test_stats_log_what_the_client_sent(capture: Running) -> None:
    """Each call is logged with path, auth mode, parameter names and non-secret values, and its answer."""
    capture.call("/entity", type_name="user", uuid="nobody", attributes=["email"])

    stats = capture.stats_json()

    assert stats["calls"] == {"/entity": 1}
    assert stats["answers"] == {"status": {"200": 1}, "code": {"310": 1}}
    (call,) = stats["recent"]
    assert call["method"] == "POST"
    assert call["path"] == "/entity"
    assert call["auth"] == "basic"
    assert call["params"] == ["attributes", "type_name", "uuid"]
    assert call["values"] == {"type_name": "user", "uuid": "nobody", "attributes": '["email"]'}
    assert (call["status"], call["stat"], call["code"], call["fault"]) == (200, "error", 310, None)


def test_stats_reset(capture: Running) -> None:
    """``POST /__sim/stats/reset`` forgets counts and the log; control calls are never counted."""
    capture.call("/entity.find", type_name="user")

    reset = capture.http.post("/__sim/stats/reset").json()
    after = capture.stats_json()

    assert (
        reset
        == after
        == {
            "in_flight": 0,
            "max_in_flight": 0,
            "calls": {},
            "answers": {"status": {}, "code": {}},
            "recent": [],
        }
    )


def test_put_get_and_delete_faults(capture: Running) -> None:
    """PUT replaces the settings, GET shows them with each rule's state, DELETE clears them."""
    settings = {
        "latency": 0.05,
        "jitter": 0.01,
        "max_concurrent_calls": 4,
        "rules": [
            {"kind": "capture_error", "code": 510, "times": 5, "paths": ["/entity"]},
            {"kind": "http_status", "status": 503, "ratio": 0.2, "retry_after": 1},
        ],
    }

    put = capture.http.put("/__sim/faults", json=settings)
    shown = capture.http.get("/__sim/faults").json()
    cleared = capture.http.delete("/__sim/faults").json()

    assert put.status_code == 200
    assert shown["latency"] == 0.05
    assert shown["max_concurrent_calls"] == 4
    assert shown["rules"][0] == {"kind": "capture_error", "code": 510, "times": 5, "paths": ["/entity"], "fired": 0}
    assert shown["rules"][1]["paths"] == ["/entity", "/entity.find", "/versions/entity", "/entityType", "/webhooks"]
    assert (shown["rules"][1]["ratio"], shown["rules"][1]["retry_after"]) == (0.2, 1.0)
    assert cleared == {"latency": 0.0, "jitter": 0.0, "max_concurrent_calls": None, "seed": None, "rules": []}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param("not json", "JSON", id="not-json"),
        pytest.param([], "object", id="not-an-object"),
        pytest.param({"latency": -1}, "latency", id="negative-latency"),
        pytest.param({"latency": "fast"}, "latency", id="latency-not-a-number"),
        pytest.param({"max_concurrent_calls": 0}, "max_concurrent_calls", id="limit-zero"),
        pytest.param({"max_concurrent_calls": True}, "max_concurrent_calls", id="limit-boolean"),
        pytest.param({"lateny": 1}, "lateny", id="unknown-key"),
        pytest.param({"rules": {}}, "rules", id="rules-not-a-list"),
        pytest.param({"rules": [{"kind": "explode"}]}, "kind", id="unknown-kind"),
        pytest.param({"rules": [{"kind": "capture_error", "code": 999}]}, "code", id="unknown-code"),
        pytest.param({"rules": [{"kind": "http_status", "status": 101}]}, "status", id="status-informational"),
        pytest.param({"rules": [{"kind": "delay"}]}, "seconds", id="delay-without-seconds"),
        pytest.param({"rules": [{"kind": "delay", "seconds": 1, "ratio": 2}]}, "ratio", id="ratio-above-one"),
        pytest.param({"rules": [{"kind": "delay", "seconds": 1, "times": -1}]}, "times", id="negative-times"),
        pytest.param({"rules": [{"kind": "delay", "seconds": 1, "paths": ["entity"]}]}, "paths", id="relative-path"),
        pytest.param({"rules": [{"kind": "http_status", "status": 500, "body": 1}]}, "body", id="body-not-text"),
    ],
)
def test_bad_faults_are_400(capture: Running, body: Any, reason: str) -> None:
    """A bad settings body is 400 with a reason naming the value, and the old settings stay."""
    capture.http.put("/__sim/faults", json={"latency": 0.01})

    response = (
        capture.http.put("/__sim/faults", content=body)
        if isinstance(body, str)
        else capture.http.put("/__sim/faults", json=body)
    )

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert reason in response.json()["reason"]
    assert capture.http.get("/__sim/faults").json()["latency"] == 0.01


def test_profile_lifecycle(capture: Running) -> None:
    """Create, read, change, list and delete a profile; the Capture API sees each step."""
    created = capture.http.post(
        "/__sim/profiles", json={"attributes": {"email": "ada@example.com", "primaryAddress": {"city": "Leeds"}}}
    )
    uuid = created.json()["uuid"]

    read = capture.http.get(f"/__sim/profiles/{uuid}").json()
    patched = capture.http.patch(f"/__sim/profiles/{uuid}", json={"changes": {"primaryAddress": {"city": "York"}}})
    listed = capture.http.get("/__sim/profiles").json()["profiles"]
    api_after_patch = capture.api("/entity", type_name="user", uuid=uuid, attributes=["primaryAddress.city"])
    deleted = capture.http.delete(f"/__sim/profiles/{uuid}")

    assert created.status_code == 201
    assert read["email"] == "ada@example.com"
    assert patched.json()["changed"] == ["primaryAddress.city"]
    assert patched.json()["record"]["primaryAddress"] == {"city": "York"}
    assert [profile["uuid"] for profile in listed] == [uuid]
    assert api_after_patch["result"] == {"primaryAddress": {"city": "York"}}
    assert deleted.json()["deleted"]["uuid"] == uuid
    assert capture.api("/entity", type_name="user", uuid=uuid)["code"] == 310
    assert capture.http.get(f"/__sim/profiles/{uuid}").status_code == 404


def test_profile_with_a_chosen_uuid(capture: Running) -> None:
    """``uuid`` picks the record's uuid; a second live profile with it is 409."""
    uuid = "6b004bc5-179c-45c2-815d-31b06169371d"

    first = capture.http.post("/__sim/profiles", json={"entity_type": "user", "uuid": uuid, "attributes": {}})
    second = capture.http.post("/__sim/profiles", json={"uuid": uuid})

    assert first.json()["uuid"] == uuid
    assert second.status_code == 409
    assert second.json()["error"] == "conflict"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param({"attributes": {"shoeSize": 44}}, "shoeSize", id="unknown-attribute"),
        pytest.param({"attributes": {"primaryAddress": {"planet": "Mars"}}}, "primaryAddress.planet", id="nested"),
        pytest.param({"attributes": {"id": 5}}, "id", id="reserved"),
        pytest.param({"attributes": ["email"]}, "attributes", id="not-an-object"),
        pytest.param({"entity_type": "robot"}, "robot", id="unknown-entity-type"),
        pytest.param({"uuid": 5}, "uuid", id="uuid-not-a-string"),
        pytest.param({"colour": "red"}, "colour", id="unknown-key"),
    ],
)
def test_bad_profiles_are_400(capture: Running, body: dict[str, Any], reason: str) -> None:
    """Attributes outside the schema, reserved ones and unknown keys are refused with a reason."""
    response = capture.http.post("/__sim/profiles", json=body)

    assert response.status_code == 400
    assert reason in response.json()["reason"]
    assert capture.http.get("/__sim/profiles").json()["profiles"] == []


def test_bad_changes_are_400_and_unknown_uuids_404(capture: Running) -> None:
    """A change outside the schema is 400; a uuid with no live profile is 404."""
    uuid = capture.user(email="ada@example.com")["uuid"]

    bad = capture.http.patch(f"/__sim/profiles/{uuid}", json={"changes": {"lastUpdated": "now"}})
    not_json = capture.http.patch(f"/__sim/profiles/{uuid}", content="{")
    unknown = capture.http.patch("/__sim/profiles/nobody", json={"changes": {"email": "x@example.com"}})

    assert (bad.status_code, not_json.status_code, unknown.status_code) == (400, 400, 404)
    assert capture.http.delete("/__sim/profiles/nobody").status_code == 404


def test_control_calls_skip_faults_and_credentials(capture: Running) -> None:
    """Under a storm on every path, /__sim answers normally, without credentials."""
    capture.http.put("/__sim/faults", json={"rules": [{"kind": "http_status", "status": 500, "paths": ["/"]}]})

    response = capture.http.get("/__sim/stats", auth=None)
    api = capture.call("/entity.find", type_name="user")

    assert response.status_code == 200
    assert api.status_code == 500
