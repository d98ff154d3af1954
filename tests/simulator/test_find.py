"""/entity.find over HTTP: filters, attributes, sorting, paging by id, counts and errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.simulator.conftest import Running

PEOPLE = [
    ("ada@example.com", "Ada", "Lovelace", "Leeds"),
    ("grace@example.com", "Grace", "Hopper", "Portland"),
    ("alan@example.com", "Alan", "Turing", "Leeds"),
    ("edsger@example.com", "Edsger", "Dijkstra", None),
    ("o'brien@example.com", "Flann", "O'Brien", "Dublin"),
]


@pytest.fixture
def people(capture: Running) -> list[dict[str, Any]]:
    """Five users, ids 1 to 5."""
    records = []
    for email, given, family, city in PEOPLE:
        address = {"city": city} if city else None
        records.append(capture.user(email=email, givenName=given, familyName=family, primaryAddress=address))
    return records


def find(capture: Running, **params: Any) -> dict[str, Any]:
    return capture.api("/entity.find", type_name="user", **params)


def given_names(body: dict[str, Any]) -> list[str]:
    return [record["givenName"] for record in body["results"]]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        pytest.param("primaryAddress.city = 'Leeds'", ["Ada", "Alan"], id="nested-equal"),
        pytest.param("primaryAddress.city is null", ["Edsger"], id="is-null"),
        pytest.param("id > 2 and id <= 4", ["Alan", "Edsger"], id="range"),
        pytest.param("familyName = 'O''Brien'", ["Flann"], id="quote-escape"),
        pytest.param("not (givenName = 'Ada') and primaryAddress.city != 'Leeds'", ["Grace", "Flann"], id="not-and"),
        pytest.param("givenName = 'Ada' or givenName = 'Grace'", ["Ada", "Grace"], id="or"),
        pytest.param("lastUpdated >= '2000-01-01'", ["Ada", "Grace", "Alan", "Edsger", "Flann"], id="date"),
    ],
)
def test_filter_selects_records(
    capture: Running, people: list[dict[str, Any]], condition: str, expected: list[str]
) -> None:
    """The filter grammar selects exactly the matching records, in id order."""
    body = find(capture, filter=condition)

    assert body["stat"] == "ok"
    assert given_names(body) == expected
    assert body["result_count"] == len(expected)
    assert "total_count" not in body


def test_attributes_sort_and_total_count(capture: Running, people: list[dict[str, Any]]) -> None:
    """``attributes`` narrows each result, ``-attr`` sorts descending, ``show_total_count`` counts all matches."""
    body = find(capture, attributes=["givenName"], sort_on=["-familyName"], max_results="2", show_total_count="true")

    assert body["results"] == [{"givenName": "Alan"}, {"givenName": "Flann"}]
    assert (body["result_count"], body["total_count"]) == (2, 5)


def test_paging_on_id(capture: Running, people: list[dict[str, Any]]) -> None:
    """Akamai's recipe for large sets, ``filter=id > last`` with ``sort_on=["id"]``, walks every record once."""
    seen: list[int] = []
    last = 0
    while True:
        body = find(capture, filter=f"id > {last}", sort_on=["id"], max_results="2", attributes=["id"])
        if not body["results"]:
            break
        seen += [record["id"] for record in body["results"]]
        last = seen[-1]

    assert seen == [record["id"] for record in people]


def test_first_result_is_an_offset(capture: Running, people: list[dict[str, Any]]) -> None:
    """``first_result`` skips that many sorted matches."""
    body = find(capture, first_result="3", sort_on=["id"])

    assert given_names(body) == ["Edsger", "Flann"]


def test_deleted_records_are_not_found(capture: Running, people: list[dict[str, Any]]) -> None:
    """A deleted record no longer matches."""
    capture.store.delete("user", people[0]["uuid"])

    body = find(capture, filter="primaryAddress.city = 'Leeds'")

    assert given_names(body) == ["Alan"]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"filter": "email contains 'ada'"}, 485, id="contains"),
        pytest.param({"filter": 'email = "ada@example.com"'}, 200, id="double-quotes"),
        pytest.param({"filter": "id >"}, 200, id="unfinished"),
        pytest.param({"filter": "shoeSize > 40"}, 223, id="unknown-attribute"),
        pytest.param({"max_results": "0"}, 200, id="max-results-zero"),
        pytest.param({"max_results": "10001"}, 200, id="max-results-too-big"),
        pytest.param({"max_results": "ten"}, 200, id="max-results-not-a-number"),
        pytest.param({"first_result": "-1"}, 200, id="negative-first-result"),
        pytest.param({"sort_on": "id"}, 200, id="sort-on-not-json"),
        pytest.param({"sort_on": '["-shoeSize"]'}, 223, id="sort-on-unknown"),
        pytest.param({"attributes": '["shoeSize"]'}, 223, id="attributes-unknown"),
        pytest.param({"show_total_count": "yes"}, 200, id="show-total-count-not-boolean"),
        pytest.param({"type_name": "robot"}, 222, id="unknown-type"),
    ],
)
def test_find_errors(capture: Running, params: dict[str, str], code: int) -> None:
    """Bad parameters get Capture's codes: 485 for contains, 200 for malformed, 223 for unknown attributes."""
    body = capture.api("/entity.find", **{"type_name": "user", **params})

    assert (body["stat"], body["code"]) == ("error", code)


def test_find_without_type_name_is_100(capture: Running) -> None:
    """``type_name`` is required."""
    body = capture.api("/entity.find", filter="id > 0")

    assert (body["code"], body["argument_name"]) == (100, "type_name")


def test_default_page_is_100_records(capture: Running) -> None:
    """Without ``max_results`` at most 100 records come back; ``total_count`` tells there are more."""
    for index in range(105):
        capture.user(email=f"user{index}@example.com")

    body = find(capture, show_total_count="true", attributes=["id"])

    assert (body["result_count"], body["total_count"]) == (100, 105)
