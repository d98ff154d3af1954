"""``capture-relay register`` through the command line, against the simulator over real HTTP.

The state Capture holds is set up and read back over the wire (the Akamai subscription API, the
legacy ``/webhooks/*`` API and ``/__sim/``), never by reaching into the simulator's memory.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from capture_relay.cli import main
from capture_relay.embedded_redis import RedisServer, free_port
from tests.support.logging_state import logging_restored
from tests.support.simulator import API_CLIENT, CONFIG_CLIENT, RunningSimulator, running_simulator

ENDPOINT = "https://hooks.example.com/webhooks/capture/v3"
CALLBACK = "https://hooks.example.com/webhooks/capture/legacy"
CALLBACK_PREFIX = "https://hooks.example.com/webhooks/"
ALL_EVENTS = ["entityCreated", "entityUpdated", "entityDeleted"]


@dataclass
class Outcome:
    """What one ``register`` run returned and printed."""

    status: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """stdout as the JSON plan."""
        document: dict[str, Any] = json.loads(self.stdout)
        return document

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


Register = Callable[..., Outcome]
Config = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path, redis_server: RedisServer) -> Callable[..., Path]:
    """Write a config for the simulator ``sim`` declaring ``v3`` subscriptions and/or ``legacy`` webhooks."""

    def writer(
        sim: RunningSimulator,
        *,
        v3: list[dict[str, Any]] | None = None,
        legacy: list[dict[str, Any]] | None = None,
        capture: dict[str, Any] | None = None,
        webhooks_api: dict[str, Any] | None = None,
        redis_url: str | None = None,
        title_prefix: str | None = None,
    ) -> Path:
        webhooks: dict[str, Any] = {}
        if v3 is not None:
            webhooks["v3"] = {"subscriptions": v3, **({"title_prefix": title_prefix} if title_prefix else {})}
        if legacy is not None:
            webhooks["legacy"] = {"callback_prefix": CALLBACK_PREFIX, "webhooks": legacy}
        data = {
            "redis_url": redis_url or redis_server.url,
            "capture": {
                "base_url": sim.url,
                "client_id": API_CLIENT.client_id,
                "client_secret": API_CLIENT.client_secret,
                "retry_deadline": "5s",
                **(capture or {}),
                "webhooks_api": {
                    "base_url": sim.url,
                    "customer_id": sim.sim.config.customer_id,
                    "client_id": CONFIG_CLIENT.client_id,
                    "client_secret": CONFIG_CLIENT.client_secret,
                    **(webhooks_api or {}),
                },
            },
            "webhooks": webhooks,
        }
        path = tmp_path / "capture-relay.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return writer


@pytest.fixture
def register(capsys: pytest.CaptureFixture[str]) -> Register:
    """Run ``capture-relay register --config PATH ARGS`` through the CLI entry point."""

    def runner(path: Path, *args: str) -> Outcome:
        capsys.readouterr()
        with logging_restored():
            status = main(["register", "--config", str(path), *args], {})
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err)

    return runner


# --- the state in the simulator, over the wire ----------------------------------------------------


def _token(sim: RunningSimulator) -> str:
    answer = sim.control.post(
        f"/{sim.sim.config.customer_id}/login/token",
        auth=(CONFIG_CLIENT.client_id, CONFIG_CLIENT.client_secret),
        data={"grant_type": "client_credentials"},
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def create_subscription(sim: RunningSimulator, title: str, **fields: Any) -> dict[str, Any]:
    """Create a subscription through Akamai's API, as someone else would."""
    body = {"title": title, "endpoint": ENDPOINT, "events": ALL_EVENTS, **fields}
    answer = sim.control.post(
        f"/{sim.sim.config.customer_id}/webhooks/subscriptions",
        json=body,
        headers={"Authorization": f"Bearer {_token(sim)}"},
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def subscriptions(sim: RunningSimulator) -> dict[str, dict[str, Any]]:
    """Every subscription by title (``GET /__sim/subscriptions``)."""
    listed = sim.control.get("/__sim/subscriptions").json()["subscriptions"]
    return {item["title"]: item for item in listed}


def add_legacy(sim: RunningSimulator, callback: str = CALLBACK, **params: str) -> dict[str, Any]:
    """Register a legacy webhook through ``/webhooks/add``, as someone else would."""
    answer = sim.control.post(
        "/webhooks/add",
        auth=(API_CLIENT.client_id, API_CLIENT.client_secret),
        data={"callback": callback, "entity_type": "user", **params},
    )
    body: dict[str, Any] = answer.json()
    assert body["stat"] == "ok", body
    result: dict[str, Any] = body["result"]
    return result


def legacy_webhooks(sim: RunningSimulator) -> list[dict[str, Any]]:
    """Every legacy webhook (``/webhooks/list``)."""
    answer = sim.control.post("/webhooks/list", auth=(API_CLIENT.client_id, API_CLIENT.client_secret))
    listed: list[dict[str, Any]] = answer.json()["webhooks"]
    return listed


def calls(sim: RunningSimulator, method: str, path: str) -> list[dict[str, Any]]:
    """The calls the simulator logged with this method and path."""
    return [call for call in sim.stats()["recent"] if call["method"] == method and call["path"] == path]


def writes(sim: RunningSimulator) -> list[str]:
    """Every call that could have changed a registration."""
    collection = f"/{sim.sim.config.customer_id}/webhooks/subscriptions"
    return [
        f"{call['method']} {call['path']}"
        for call in sim.stats()["recent"]
        if call["path"] in ("/webhooks/add", "/webhooks/update", "/webhooks/delete")
        or (call["path"].startswith(collection) and call["method"] in ("POST", "PATCH", "DELETE"))
    ]


def subscription(title: str, **fields: Any) -> dict[str, Any]:
    """A declared v3 subscription."""
    return {"title": title, "endpoint": ENDPOINT, "events": ALL_EVENTS, **fields}


def legacy(event_type: str = "update", callback: str = CALLBACK, **fields: Any) -> dict[str, Any]:
    """A declared legacy webhook (``update`` ones watch email by default)."""
    attributes = {"attributes": ["email"]} if event_type == "update" else {}
    return {"callback": callback, "event_type": event_type, **attributes, **fields}


# --- plan, create, update, unchanged --------------------------------------------------------------


def test_the_plan_lists_the_changes_and_makes_none(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """Without --apply, register reads the state, prints what it would do and changes nothing."""
    path = write_config(capture_sim, v3=[subscription("capture-relay all")], legacy=[legacy()])

    outcome = register(path)

    assert outcome.status == 0
    lines = outcome.stdout.splitlines()
    assert lines[0].split() == ["KIND", "ACTION", "NAME", "DETAIL"]
    assert lines[1].split()[:4] == ["v3", "create", "capture-relay", "all"]
    assert lines[2].split()[:3] == ["legacy", "create", CALLBACK]
    assert "plan: 2 to create" in outcome.stdout
    assert "--apply" in outcome.stdout
    assert subscriptions(capture_sim) == {}
    assert legacy_webhooks(capture_sim) == []
    assert writes(capture_sim) == []


def test_apply_creates_what_is_declared(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """--apply creates each v3 subscription and legacy webhook with every declared field."""
    schema_filter = {"properties": {"entityUpdated": {"properties": {"captureApplicationId": {"const": "app"}}}}}
    declared = subscription("capture-relay updates", events=["entityUpdated"], enabled=False, filter=schema_filter)
    path = write_config(capture_sim, v3=[declared], legacy=[legacy(attributes=["email", "givenName"])])

    outcome = register(path, "--apply")

    assert outcome.status == 0, outcome.stdout
    assert "applied 2 change(s)" in outcome.stdout
    created = subscriptions(capture_sim)["capture-relay updates"]
    assert (created["endpoint"], created["events"], created["enabled"]) == (ENDPOINT, ["entityUpdated"], False)
    assert created["filter"] == schema_filter
    [webhook] = legacy_webhooks(capture_sim)
    assert (webhook["callback"], webhook["event_type"], webhook["entity_type"]) == (CALLBACK, "update", "user")
    assert webhook["attributes"] == ["email", "givenName"]


def test_an_update_changes_only_the_field_that_differs(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """One changed field is one update carrying that field alone; the registration keeps its id."""
    existing = create_subscription(capture_sim, "capture-relay all")
    hook = add_legacy(capture_sim, event_type="update", attributes='["email"]')
    path = write_config(
        capture_sim,
        v3=[subscription("capture-relay all", enabled=False)],
        legacy=[legacy(attributes=["email", "givenName"])],
    )

    planned = register(path, "--output", "json").json()
    capture_sim.reset_stats()
    outcome = register(path, "--apply")

    steps = {step["kind"]: step for step in planned["steps"]}
    assert (steps["v3"]["action"], steps["v3"]["fields"], steps["v3"]["before"]) == (
        "update",
        {"enabled": False},
        {"enabled": True},
    )
    assert steps["legacy"]["fields"] == {"attributes": ["email", "givenName"]}
    assert outcome.status == 0, outcome.stdout
    assert "enabled: true -> false" in outcome.stdout
    after = subscriptions(capture_sim)["capture-relay all"]
    assert (after["id"], after["enabled"], after["events"], after["endpoint"]) == (
        existing["id"],
        False,
        ALL_EVENTS,
        ENDPOINT,
    )
    [update] = calls(capture_sim, "POST", "/webhooks/update")
    assert update["params"] == ["attributes", "uuid"]
    assert legacy_webhooks(capture_sim)[0]["uuid"] == hook["uuid"]
    assert writes(capture_sim) == [
        f"PATCH /{capture_sim.sim.config.customer_id}/webhooks/subscriptions/{existing['id']}",
        "POST /webhooks/update",
    ]


def test_a_second_apply_reports_no_changes(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """Apply is idempotent: the second run finds everything in place and changes nothing."""
    path = write_config(
        capture_sim,
        v3=[subscription("capture-relay created"), subscription("capture-relay deleted", events="entityDeleted")],
        legacy=[legacy(), legacy("delete")],
    )
    assert register(path, "--apply").status == 0
    before = subscriptions(capture_sim), legacy_webhooks(capture_sim)
    capture_sim.reset_stats()

    outcome = register(path, "--apply")

    assert outcome.status == 0
    assert "no changes (0 to create, 0 to update, 0 to delete, 4 unchanged, 0 extra kept)" in outcome.stdout
    assert [line.split()[1] for line in outcome.stdout.splitlines()[1:5]] == ["unchanged"] * 4
    assert writes(capture_sim) == []
    assert (subscriptions(capture_sim), legacy_webhooks(capture_sim)) == before


# --- extras and --prune ---------------------------------------------------------------------------


def test_prune_deletes_only_managed_extras(write_config: Config, register: Register) -> None:
    """Extras are kept without --prune; with it only those carrying the managed marker go (all pages read)."""
    with running_simulator(page_size=2) as sim:
        for n in range(4):
            create_subscription(sim, f"capture-relay old {n}")
        create_subscription(sim, "marketing team")
        create_subscription(sim, "capture-relay kept")
        ours = add_legacy(sim, f"{CALLBACK_PREFIX}old", event_type="add")
        theirs = add_legacy(sim, "https://crm.example.com/janrain", event_type="add")
        path = write_config(sim, v3=[subscription("capture-relay kept")], legacy=[])

        kept = register(path, "--apply")
        extras_after_plain_apply = (set(subscriptions(sim)), len(legacy_webhooks(sim)))
        pruned = register(path, "--apply", "--prune")

        assert kept.status == 0
        assert "0 to delete, 1 unchanged, 7 extra kept" in kept.stdout
        assert "not managed: never deleted" in kept.stdout
        assert "managed, not declared: --prune deletes it" in kept.stdout
        assert extras_after_plain_apply == (
            {f"capture-relay old {n}" for n in range(4)} | {"marketing team", "capture-relay kept"},
            2,
        )
        assert pruned.status == 0, pruned.stdout
        assert "applied 5 change(s)" in pruned.stdout
        assert set(subscriptions(sim)) == {"marketing team", "capture-relay kept"}
        assert [webhook["uuid"] for webhook in legacy_webhooks(sim)] == [theirs["uuid"]]
        assert ours["uuid"] in {call["values"].get("uuid") for call in calls(sim, "POST", "/webhooks/delete")}


def test_a_custom_title_prefix_decides_what_is_managed(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """webhooks.v3.title_prefix is the marker: a default-prefixed subscription is someone else's then."""
    create_subscription(capture_sim, "capture-relay from another deployment")
    create_subscription(capture_sim, "eu-relay stale")
    path = write_config(capture_sim, v3=[subscription("eu-relay main")], title_prefix="eu-relay")

    outcome = register(path, "--apply", "--prune")

    assert outcome.status == 0, outcome.stdout
    assert set(subscriptions(capture_sim)) == {"capture-relay from another deployment", "eu-relay main"}


# --- --check --------------------------------------------------------------------------------------


def test_check_exits_3_while_changes_are_pending_and_0_once_in_sync(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """--check is a drift check: 3 with pending changes (nothing changed), 0 in sync."""
    create_subscription(capture_sim, "capture-relay stale")
    path = write_config(capture_sim, v3=[subscription("capture-relay all")])

    pending = register(path, "--check")
    unchanged = subscriptions(capture_sim)
    register(path, "--apply")
    in_sync = register(path, "--check")
    extra_pending_with_prune = register(path, "--check", "--prune")
    register(path, "--apply", "--prune")
    pruned = register(path, "--check", "--prune")

    assert pending.status == 3
    assert "changes pending" in pending.stdout
    assert set(unchanged) == {"capture-relay stale"}
    assert in_sync.status == 0  # the extra is not a change register would make without --prune
    assert extra_pending_with_prune.status == 3
    assert pruned.status == 0
    assert "no changes" in pruned.stdout


def test_check_and_apply_together_are_bad_usage(
    capture_sim: RunningSimulator, write_config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check never changes anything, so it cannot be combined with --apply (exit 2)."""
    path = write_config(capture_sim, v3=[subscription("capture-relay all")])

    with pytest.raises(SystemExit) as exited:
        main(["register", "--config", str(path), "--apply", "--check"], {})

    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --- output ---------------------------------------------------------------------------------------


def test_json_output(capture_sim: RunningSimulator, write_config: Config, register: Register) -> None:
    """--output json: mode, counts, every step with its fields, results after apply, and no error."""
    create_subscription(capture_sim, "marketing team")
    path = write_config(capture_sim, v3=[subscription("capture-relay all")], legacy=[legacy("add")])

    plan = register(path, "--output", "json")
    applied = register(path, "--apply", "--output", "json")

    assert plan.status == 0
    document = plan.json()
    assert set(document) == {"mode", "prune", "pending", "summary", "steps", "applied", "error"}
    assert (document["mode"], document["prune"], document["pending"], document["applied"]) == ("plan", False, 2, 0)
    assert document["summary"] == {"create": 2, "update": 0, "delete": 0, "unchanged": 0, "extra": 1}
    assert document["error"] is None
    assert document["steps"] == [
        {
            "kind": "v3",
            "action": "create",
            "name": "capture-relay all",
            "id": None,
            "managed": True,
            "fields": {"title": "capture-relay all", "endpoint": ENDPOINT, "events": ALL_EVENTS, "enabled": True},
            "before": {},
            "result": None,
        },
        {
            "kind": "v3",
            "action": "extra",
            "name": "marketing team",
            "id": subscriptions(capture_sim)["marketing team"]["id"],
            "managed": False,
            "fields": {},
            "before": {},
            "result": None,
        },
        {
            "kind": "legacy",
            "action": "create",
            "name": f"{CALLBACK} add user",
            "id": None,
            "managed": True,
            "fields": {"callback": CALLBACK, "event_type": "add", "entity_type": "user"},
            "before": {},
            "result": None,
        },
    ]
    after = applied.json()
    assert (after["mode"], after["applied"], after["error"]) == ("apply", 2, None)
    assert [step["result"] for step in after["steps"]] == ["done", None, "done"]


def test_logs_go_to_stderr_and_carry_no_secret(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """One JSON log line per applied change on stderr; no client secret or callback password anywhere."""
    password = "callback-" + "pw-51c1"
    path = write_config(
        capture_sim,
        v3=[subscription("capture-relay all")],
        legacy=[legacy(callback=f"https://relay:{password}@hooks.example.com/webhooks/capture/legacy")],
    )

    outcome = register(path, "--apply")

    assert outcome.status == 0, outcome.stdout
    applied = [line for line in outcome.logs() if line["event"] == "registration.applied"]
    assert [(line["source"], line["outcome"]) for line in applied] == [("v3", "created"), ("legacy", "created")]
    assert [line["event"] for line in outcome.logs() if line["event"].startswith("registration.")][-1] == (
        "registration.done"
    )
    assert "relay:****@hooks.example.com" in outcome.stdout
    for secret in (password, API_CLIENT.client_secret, CONFIG_CLIENT.client_secret):
        assert secret not in outcome.stdout
        assert secret not in outcome.stderr
    # The webhook itself is registered with the real callback.
    assert legacy_webhooks(capture_sim)[0]["callback"].startswith(f"https://relay:{password}@")


# --- errors ---------------------------------------------------------------------------------------


def test_invalid_capture_credentials_print_code_error_and_request_token(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """A refused Capture client stops the run with exit 1 and Capture's code, error and request_token."""
    path = write_config(capture_sim, legacy=[legacy()], capture={"client_secret": "wrong-secret-0000"})

    outcome = register(path, "--apply")
    document = register(path, "--apply", "--output", "json").json()

    assert outcome.status == 1
    assert re.search(
        r"^error: reading the current state failed: code 402 invalid_client_credentials, request_token \w{16} "
        r"\(/webhooks/list\)$",
        outcome.stdout,
        re.MULTILINE,
    )
    error = document["error"]
    assert (error["code"], error["error"], error["endpoint"]) == (402, "invalid_client_credentials", "/webhooks/list")
    assert re.fullmatch(r"\w{16}", error["request_token"])
    assert "wrong-secret-0000" not in outcome.stdout + outcome.stderr
    assert writes(capture_sim) == []


def test_invalid_configuration_client_is_reported(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """A refused Akamai configuration client is exit 1 with the HTTP status of the token endpoint."""
    path = write_config(capture_sim, v3=[subscription("capture-relay all")], webhooks_api={"client_secret": "nope-0"})

    outcome = register(path, "--apply", "--output", "json")

    assert outcome.status == 1
    error = outcome.json()["error"]
    assert (error["http_status"], error["endpoint"], error["code"]) == (401, "v3:/login/token", None)
    assert "nope-0" not in outcome.stdout + outcome.stderr


def test_a_title_taken_between_plan_and_apply_stops_with_409(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """Someone creates the same title after the plan was read: Akamai's 409 stops the run, exit 1.

    The legacy list is read after the v3 one; slowing it down opens a window in which the
    subscription appears behind the command's back.
    """
    capture_sim.faults({"rules": [{"kind": "delay", "seconds": 1.0, "times": 1, "paths": ["/webhooks/list"]}]})
    path = write_config(capture_sim, v3=[subscription("capture-relay all")], legacy=[legacy()])

    def behind_our_back() -> None:
        deadline = time.monotonic() + 10
        while not capture_sim.stats()["calls"].get("/webhooks/list") and time.monotonic() < deadline:
            time.sleep(0.02)
        create_subscription(capture_sim, "capture-relay all", enabled=False)

    racer = threading.Thread(target=behind_our_back)
    racer.start()
    outcome = register(path, "--apply")
    racer.join()

    assert outcome.status == 1
    assert "error: v3 create 'capture-relay all' failed: HTTP 409" in outcome.stdout
    assert "stopped after 0 of 2 change(s); 1 not attempted" in outcome.stdout
    assert [line.split()[-1] for line in outcome.stdout.splitlines()[1:3]] == ["failed", "not_attempted"]
    assert legacy_webhooks(capture_sim) == []  # the run stopped at the first error
    assert subscriptions(capture_sim)["capture-relay all"]["enabled"] is False  # theirs, untouched


def test_an_event_akamai_does_not_know_is_refused_before_any_call(
    capture_sim: RunningSimulator, write_config: Config, register: Register, capsys: pytest.CaptureFixture[str]
) -> None:
    """Invalid events are a configuration error (exit 2, naming the key), checked before Capture is called."""
    path = write_config(
        capture_sim, v3=[subscription("capture-relay all", events=["entityUpdated", "userCredentialUpdated"])]
    )

    outcome = register(path, "--apply")

    assert outcome.status == 2
    assert "webhooks.v3.subscriptions[0].events[1]: input should be" in outcome.stderr
    assert capture_sim.stats()["calls"] == {}


def test_a_400_from_akamai_is_reported_with_its_reason(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """What only Akamai checks (here: an endpoint on a private address) comes back as HTTP 400, exit 1."""
    path = write_config(capture_sim, v3=[subscription("capture-relay all", endpoint="https://10.1.2.3/hook")])

    outcome = register(path, "--apply", "--output", "json")

    assert outcome.status == 1
    error = outcome.json()["error"]
    assert (error["kind"], error["action"], error["http_status"]) == ("v3", "create", 400)
    assert "endpoint" in error["message"]
    assert subscriptions(capture_sim) == {}


def test_a_create_whose_outcome_is_unknown_is_confirmed_not_repeated(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """/webhooks/add answers after the client gave up: register re-reads until it sees it, and adds once."""
    capture_sim.faults({"rules": [{"kind": "delay", "seconds": 1.2, "times": 1, "paths": ["/webhooks/add"]}]})
    path = write_config(capture_sim, legacy=[legacy()], capture={"timeout": "1s"})

    outcome = register(path, "--apply")
    again = register(path, "--apply")

    assert outcome.status == 0, outcome.stdout
    events = [line["event"] for line in outcome.logs() if line["event"].startswith("registration.")]
    assert events[:3] == ["registration.outcome_unknown", "registration.outcome_confirmed", "registration.applied"]
    assert len(calls(capture_sim, "POST", "/webhooks/add")) == 1
    assert len(legacy_webhooks(capture_sim)) == 1
    assert "no changes" in again.stdout


def test_a_create_still_unknown_after_settling_stops_without_a_second_add(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """Past the settle time the run stops (exit 1) rather than add again; the next run finds the webhook."""
    capture_sim.faults({"rules": [{"kind": "delay", "seconds": 3.0, "times": 1, "paths": ["/webhooks/add"]}]})
    path = write_config(capture_sim, legacy=[legacy()], capture={"timeout": "0.5s"})

    outcome = register(path, "--apply")
    deadline = time.monotonic() + 10
    while not legacy_webhooks(capture_sim) and time.monotonic() < deadline:
        time.sleep(0.1)
    again = register(path, "--apply")

    assert outcome.status == 1
    assert "may or may not have taken effect" in outcome.stdout
    assert "run register again to reconcile" in outcome.stdout
    assert len(calls(capture_sim, "POST", "/webhooks/add")) == 1
    assert again.status == 0
    assert "no changes" in again.stdout
    assert len(legacy_webhooks(capture_sim)) == 1


# --- what register needs --------------------------------------------------------------------------


def test_v3_alone_needs_no_redis(capture_sim: RunningSimulator, write_config: Config, register: Register) -> None:
    """Only the Capture API shares a call limit through Redis: v3 subscriptions are managed without it."""
    path = write_config(
        capture_sim, v3=[subscription("capture-relay all")], redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )

    outcome = register(path, "--apply")

    assert outcome.status == 0, outcome.stdout + outcome.stderr
    assert set(subscriptions(capture_sim)) == {"capture-relay all"}


def test_legacy_without_redis_fails_with_one_line(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """Legacy webhooks need the shared Capture call limit: an unreachable Redis is exit 1, said plainly."""
    path = write_config(capture_sim, legacy=[legacy()], redis_url=f"redis://:hunter2@127.0.0.1:{free_port()}/0")

    outcome = register(path, "--apply")

    assert outcome.status == 1
    assert "cannot reach Redis at redis://:****@127.0.0.1" in outcome.stderr
    assert "hunter2" not in outcome.stderr
    assert capture_sim.stats()["calls"] == {}


def test_a_config_without_webhooks_is_bad_usage(
    capture_sim: RunningSimulator, write_config: Config, register: Register
) -> None:
    """With nothing declared there is nothing to reconcile: exit 2 naming the section."""
    path = write_config(capture_sim)

    outcome = register(path)

    assert outcome.status == 2
    assert "webhooks: nothing to register" in outcome.stderr
