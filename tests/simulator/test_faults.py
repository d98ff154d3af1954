"""Faults over HTTP: 510 storms, seeded ratios, latency, bare HTTP failures and the simultaneous-call limit."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx2
import pytest

from simulator.faults import FaultsError, parse_compact_rule
from tests.simulator.conftest import CLIENT, Running, StartSimulator


def put_faults(capture: Running, settings: dict[str, Any]) -> httpx2.Response:
    return capture.http.put("/__sim/faults", json=settings)


def codes(capture: Running, count: int, path: str = "/entity", **params: Any) -> list[int | None]:
    """The Capture codes of ``count`` calls, None for ``stat: ok``."""
    answers = [capture.api(path, type_name="user", **params) for _ in range(count)]
    return [answer.get("code") for answer in answers]


def test_a_510_storm_lasts_n_calls(capture: Running) -> None:
    """``capture_error`` 510 for the next 3 calls, then the normal answer again."""
    user = capture.user(email="ada@example.com")
    put_faults(capture, {"rules": [{"kind": "capture_error", "code": 510, "times": 3}]})

    seen = codes(capture, 5, uuid=user["uuid"])

    assert seen == [510, 510, 510, None, None]
    rule = capture.http.get("/__sim/faults").json()["rules"][0]
    assert (rule["times"], rule["fired"]) == (0, 3)
    assert capture.stats_json()["answers"]["code"] == {"510": 3, "ok": 2}


def test_a_storm_on_one_path_leaves_the_others_alone(capture: Running) -> None:
    """``paths`` match whole segments: a rule on /entity does not touch /entity.find."""
    put_faults(capture, {"rules": [{"kind": "capture_error", "code": 480, "times": 2, "paths": ["/entity"]}]})

    find = codes(capture, 2, "/entity.find")
    entity = codes(capture, 2, uuid="x")

    assert find == [None, None]
    assert entity == [480, 480]


def test_ratio_with_a_seed_is_repeatable(capture: Running) -> None:
    """The same seed gives the same sequence of failures; about the ratio of calls fail."""
    settings = {"seed": 42, "rules": [{"kind": "capture_error", "code": 500, "ratio": 0.5}]}

    put_faults(capture, settings)
    first = codes(capture, 20, "/entity.find")
    put_faults(capture, settings)
    second = codes(capture, 20, "/entity.find")

    assert first == second
    assert 4 <= first.count(500) <= 16
    assert set(first) == {500, None}


def test_latency_delays_every_api_call(capture: Running) -> None:
    """A latency of 0.2 s makes a call take at least that long; control calls stay fast."""
    put_faults(capture, {"latency": 0.2})

    started = time.monotonic()
    capture.api("/entity.find", type_name="user")
    api_took = time.monotonic() - started
    started = time.monotonic()
    capture.http.get("/__sim/stats")
    control_took = time.monotonic() - started

    assert 0.2 <= api_took < 1.5
    assert control_took < 0.2
    assert capture.stats_json()["recent"][0]["duration"] >= 0.2


def test_delay_rule_adds_to_one_call(capture: Running) -> None:
    """A ``delay`` rule with ``times`` slows that many calls, then the answer is normal and fast."""
    put_faults(capture, {"rules": [{"kind": "delay", "seconds": 0.3, "times": 1}]})

    durations = []
    for _ in range(2):
        started = time.monotonic()
        body = capture.api("/entity.find", type_name="user")
        durations.append(time.monotonic() - started)
        assert body["stat"] == "ok"

    assert durations[0] >= 0.3
    assert durations[1] < 0.3


def test_http_status_with_retry_after(capture: Running) -> None:
    """An ``http_status`` rule answers a bare 503 with Retry-After, once, then the API answers again."""
    put_faults(capture, {"rules": [{"kind": "http_status", "status": 503, "times": 1, "retry_after": 2}]})

    failed = capture.call("/entity.find", type_name="user")
    normal = capture.call("/entity.find", type_name="user")

    assert failed.status_code == 503
    assert failed.headers["retry-after"] == "2"
    assert "stat" not in failed.json()
    assert normal.json()["stat"] == "ok"
    recent = capture.stats_json()["recent"]
    assert (recent[0]["status"], recent[0]["fault"], recent[0]["code"]) == (503, "http_status", None)


def test_http_status_with_a_non_json_body(capture: Running) -> None:
    """``body`` replaces the JSON with text, as a proxy's error page would."""
    put_faults(capture, {"rules": [{"kind": "http_status", "status": 502, "body": "<html>Bad Gateway</html>"}]})

    response = capture.call("/entity", type_name="user", uuid="x")

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html>Bad Gateway</html>"


def test_capture_error_fault_follows_error_http_status(start_simulator: StartSimulator) -> None:
    """In ``mapped`` mode an injected 510 comes with HTTP 510 (and the envelope)."""
    capture = start_simulator(error_http_status="mapped")
    put_faults(capture, {"rules": [{"kind": "capture_error", "code": 510, "times": 1, "retry_after": 1}]})

    response = capture.call("/entity.find", type_name="user")

    assert response.status_code == 510
    assert response.json()["error"] == "api_limit_error"
    assert response.headers["retry-after"] == "1"


def concurrent_calls(url: str, count: int) -> list[dict[str, Any]]:
    """``count`` /entity.find calls started together from as many threads."""
    barrier = threading.Barrier(count)
    answers: list[dict[str, Any]] = []

    def call() -> None:
        with httpx2.Client(base_url=url, auth=(CLIENT.client_id, CLIENT.client_secret), timeout=10) as http:
            barrier.wait()
            answers.append(http.post("/entity.find", data={"type_name": "user"}).json())

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return answers


def test_max_in_flight_counts_simultaneous_calls(capture: Running) -> None:
    """Ten calls at once with 0.1 s latency are seen overlapping; after them nothing is in flight."""
    put_faults(capture, {"latency": 0.1})

    answers = concurrent_calls(capture.url, 10)

    stats = capture.stats_json()
    assert [answer["stat"] for answer in answers] == ["ok"] * 10
    assert stats["max_in_flight"] >= 2
    assert stats["in_flight"] == 0
    assert stats["calls"] == {"/entity.find": 10}


def test_calls_past_the_limit_get_510(start_simulator: StartSimulator) -> None:
    """With ``max_concurrent_calls=3``, ten simultaneous calls: at most 3 are served, the rest get 510."""
    capture = start_simulator(max_concurrent_calls=3)
    put_faults(capture, {"latency": 0.3})

    answers = concurrent_calls(capture.url, 10)

    served = [answer for answer in answers if answer["stat"] == "ok"]
    refused = [answer for answer in answers if answer.get("code") == 510]
    assert len(served) in {1, 2, 3}
    assert len(served) + len(refused) == 10
    assert refused[0]["error"] == "api_limit_error"
    assert capture.stats_json()["max_in_flight"] >= 4  # what the client attempted, refused calls included
    assert capture.http.get("/__sim/faults").json()["max_concurrent_calls"] == 3


def test_limit_can_be_lifted_at_run_time(start_simulator: StartSimulator) -> None:
    """``max_concurrent_calls: null`` removes the limit; DELETE restores the start-up one."""
    capture = start_simulator(max_concurrent_calls=1)

    put_faults(capture, {"latency": 0.2, "max_concurrent_calls": None})
    answers = concurrent_calls(capture.url, 4)
    cleared = capture.http.delete("/__sim/faults").json()

    assert [answer["stat"] for answer in answers] == ["ok"] * 4
    assert (cleared["max_concurrent_calls"], cleared["latency"], cleared["rules"]) == (1, 0.0, [])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("capture_error:510:times=20", {"kind": "capture_error", "code": 510, "times": 20}, id="storm"),
        pytest.param(
            "http_status:503:ratio=0.1:retry_after=1",
            {"kind": "http_status", "status": 503, "ratio": 0.1, "retry_after": 1.0},
            id="ratio",
        ),
        pytest.param(
            "delay:2:paths=/entity,/entity.find",
            {"kind": "delay", "seconds": 2.0, "paths": ["/entity", "/entity.find"]},
            id="delay-paths",
        ),
    ],
)
def test_compact_rules(text: str, expected: dict[str, Any]) -> None:
    """The command line's ``KIND:VALUE[:KEY=VALUE]`` form gives the same rule as the JSON form."""
    shown = parse_compact_rule(text).as_json()

    assert {key: shown[key] for key in expected} == expected


@pytest.mark.parametrize(
    "text", ["bogus:1", "capture_error:999", "http_status:700", "capture_error:510:times", "delay:-1", "http_status:x"]
)
def test_bad_compact_rules_are_refused(text: str) -> None:
    """A wrong kind, code, status, option or number is a FaultsError naming the flag."""
    with pytest.raises(FaultsError, match="--fault"):
        parse_compact_rule(text)
