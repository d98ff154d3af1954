"""The error envelope and its HTTP status in both ``error_http_status`` modes."""

from __future__ import annotations

import httpx2
import pytest

from simulator.envelope import ERRORS, error_body, http_status
from tests.simulator.conftest import StartSimulator


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (100, 400),
        (200, 400),
        (201, 400),
        (222, 400),
        (223, 400),
        (310, 404),
        (342, 400),
        (402, 401),
        (403, 403),
        (485, 400),
        (480, 503),
        (500, 500),
        (504, 504),
        (510, 510),
    ],
)
def test_mapped_statuses(code: int, status: int) -> None:
    """``mapped`` gives each code its HTTP status; ``ok`` always 200."""
    assert http_status(code, "mapped") == status
    assert http_status(code, "ok") == 200


def test_envelope_fields() -> None:
    """stat, code, error (from the table), error_description and a 16-hex request_token."""
    body = error_body(310, "record not found")

    assert {key: body[key] for key in ("stat", "code", "error", "error_description")} == {
        "stat": "error",
        "code": 310,
        "error": "record_not_found",
        "error_description": "record not found",
    }
    assert len(body["request_token"]) == 16
    int(body["request_token"], 16)
    assert body["request_token"] != error_body(310, "again")["request_token"]
    assert ERRORS[510] == "api_limit_error"


@pytest.mark.parametrize(
    ("mode", "params", "expected"),
    [
        pytest.param("ok", {"type_name": "user", "uuid": "x"}, (200, 310), id="ok-310"),
        pytest.param("mapped", {"type_name": "user", "uuid": "x"}, (404, 310), id="mapped-310"),
        pytest.param("mapped", {"type_name": "user"}, (400, 100), id="mapped-100"),
        pytest.param("mapped", {"type_name": "robot", "uuid": "x"}, (400, 222), id="mapped-222"),
        pytest.param("mapped", {"type_name": "user", "id": "1", "uuid": "x"}, (400, 201), id="mapped-201"),
    ],
)
def test_error_http_status_over_http(
    start_simulator: StartSimulator, mode: str, params: dict[str, str], expected: tuple[int, int]
) -> None:
    """The same error is HTTP 200 in ``ok`` mode and its mapped status in ``mapped`` mode."""
    capture = start_simulator(error_http_status=mode)

    response = capture.call("/entity", **params)

    assert (response.status_code, response.json()["code"]) == expected


def test_mapped_bad_credentials_are_401(start_simulator: StartSimulator) -> None:
    """In ``mapped`` mode a wrong secret is HTTP 401 with code 402."""
    capture = start_simulator(error_http_status="mapped")

    response = httpx2.post(
        f"{capture.url}/entity", data={"type_name": "user", "uuid": "x"}, auth=("who", "what"), timeout=10
    )

    assert (response.status_code, response.json()["code"]) == (401, 402)


def test_success_is_200_in_both_modes(start_simulator: StartSimulator) -> None:
    """Success is always HTTP 200 with stat ok."""
    for mode in ("ok", "mapped"):
        capture = start_simulator(error_http_status=mode)

        response = capture.call("/entityType", type_name="user")

        assert (response.status_code, response.json()["stat"]) == (200, "ok")
