"""``capture-relay rules check | explain``, run through a parser built with ``rules_cli.add_parser``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from capture_relay import rules_cli
from service.settings import ConfigError
from tests.unit.rules.factories import UUID, make_record

CAPTURE = {"base_url": "https://myapp.us.janraincapture.com", "client_id": "id", "client_secret": "secret"}


def _destination(host: str) -> dict[str, Any]:
    return {"type": "http", "url": f"https://{host}/hook"}


def _config(tmp_path: Path, routes: list[dict[str, Any]], destinations: tuple[str, ...] = ("crm", "bus")) -> str:
    """A config file (JSON is YAML) with the given routes and http destinations."""
    data = {
        "capture": CAPTURE,
        "destinations": {name: _destination(f"{name}.example.com") for name in destinations},
        "routes": routes,
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data))
    return str(path)


def _file(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Dispatch like ``capture_relay.cli.main``: ``args.run(args, environ)``, ConfigError is exit 2."""
    parser = argparse.ArgumentParser(prog="capture-relay")
    rules_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        status = int(args.run(args, {}))
    except ConfigError:
        status = 2
    captured = capsys.readouterr()
    return status, captured.out, captured.err


EMAIL_ROUTE: dict[str, Any] = {
    "name": "email-to-crm",
    "on": ["entityUpdated", "entityCreated"],
    "changed_any": ["email"],
    "to": ["crm"],
    "fields": ["uuid", "email", "primaryAddress.city"],
    "hash": ["email"],
    "rename": {"primaryAddress.city": "city"},
}
MIRROR_ROUTE: dict[str, Any] = {"name": "mirror", "to": ["crm", "bus"]}


class TestCheck:
    def test_summarises_the_routes_in_order(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Each route with on, entity_type, conditions, destinations and shaping; no warnings; exit 0."""
        config = _config(tmp_path, [EMAIL_ROUTE, {**MIRROR_ROUTE, "entity_type": "user", "when": "record.x"}])

        status, out, _ = _run(["rules", "check", "--config", config], capsys)

        assert status == 0
        assert "1. email-to-crm" in out
        assert out.index("1. email-to-crm") < out.index("2. mirror")
        assert "on:          entityUpdated, entityCreated" in out
        assert "conditions:  changed_any email" in out
        assert "conditions:  when record.x" in out
        assert "entity_type: user" in out
        assert "to:          crm, bus" in out
        assert (
            "payload:     fields uuid, email, primaryAddress.city; hash email; rename primaryAddress.city -> city"
            in out
        )
        assert "destinations: crm (http), bus (http)" in out
        assert "warning:" not in out
        assert out.endswith("ok: 2 route(s), 2 destination(s), 0 warning(s)\n")

    @pytest.mark.parametrize(
        ("routes", "warning"),
        [
            pytest.param(
                [{"name": "gone", "on": ["entityDeleted"], "changed_any": ["email"], "to": ["crm", "bus"]}],
                "route 'gone' can never match: changed_any/changed_all need entityCreated or entityUpdated",
                id="change-condition-on-deletes",
            ),
            pytest.param(
                [{"name": "only-crm", "to": ["crm"]}],
                "destination 'bus' is named by no route",
                id="unused-destination",
            ),
            pytest.param(
                [{"name": "all", "to": ["crm", "bus"]}, {"name": "later", "on": ["entityCreated"], "to": ["crm"]}],
                "route 'later' never delivers to crm: the earlier route 'all' has no conditions",
                id="shadowed",
            ),
            pytest.param(
                [{"name": "typo", "when": "email != null", "to": ["crm", "bus"]}],
                "route 'typo': when reads email, which is not one of event, record, previous, changes",
                id="when-without-record",
            ),
            pytest.param(
                [{"name": "bool", "when": "record.optIn == true", "to": ["crm", "bus"]}],
                "route 'bool': when reads true as a field name",
                id="bare-true",
            ),
            pytest.param(
                [{"name": "hash", "fields": ["uuid"], "hash": ["email"], "to": ["crm", "bus"]}],
                "route 'hash': hash email is outside fields, so it has no effect",
                id="hash-outside-fields",
            ),
            pytest.param(
                [{"name": "drop", "fields": ["uuid"], "drop": ["profiles.accessCredentials"], "to": ["crm", "bus"]}],
                "route 'drop': drop profiles.accessCredentials is outside fields (after rename), so it has no effect",
                id="drop-outside-fields",
            ),
            pytest.param(
                [{"name": "old", "rename": {"email": "mail"}, "drop": ["email"], "to": ["crm", "bus"]}],
                "route 'old': drop email names a path that rename moves away; drop runs after rename",
                id="drop-names-the-old-path",
            ),
        ],
    )
    def test_warns_about_rules_that_cannot_work(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], routes: list[dict[str, Any]], warning: str
    ) -> None:
        """A valid config whose rules cannot do what they say: a warning, exit 0 still."""
        config = _config(tmp_path, routes)

        status, out, _ = _run(["rules", "check", "--config", config], capsys)

        assert status == 0
        assert f"warning: {warning}" in out

    @pytest.mark.parametrize(
        "route",
        [
            pytest.param(
                {"fields": ["profiles"], "hash": ["profiles.identifier"], "drop": ["profiles.accessCredentials"]},
                id="paths-inside-a-plural-field",
            ),
            pytest.param(
                {
                    "fields": ["uuid", "primaryAddress.city"],
                    "rename": {"primaryAddress.city": "city"},
                    "drop": ["city"],
                },
                id="drop-names-the-renamed-field",
            ),
            pytest.param(
                {"fields": ["primaryAddress"], "rename": {"primaryAddress": "address"}, "drop": ["address.zip"]},
                id="drop-inside-a-renamed-field",
            ),
            pytest.param(
                {"rename": {"givenName": "familyName", "familyName": "givenName"}, "drop": ["givenName"]},
                id="drop-a-name-a-rename-moves-into",
            ),
        ],
    )
    def test_shaping_paths_that_take_effect_are_not_flagged(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], route: dict[str, Any]
    ) -> None:
        """hash, rename and drop paths that name something the payload has at their step: no warning."""
        config = _config(tmp_path, [{**MIRROR_ROUTE, **route}])

        _, out, _ = _run(["rules", "check", "--config", config], capsys)

        assert "warning:" not in out

    def test_a_drop_of_a_renamed_away_field_is_one_warning(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Dropping the old name of a renamed field is said once, with the fix, not also as outside fields."""
        route = {**MIRROR_ROUTE, "fields": ["uuid", "email"], "rename": {"email": "mail"}, "drop": ["email"]}
        config = _config(tmp_path, [route])

        _, out, _ = _run(["rules", "check", "--config", config], capsys)

        assert out.count("warning:") == 1
        assert "drop email names a path that rename moves away" in out

    def test_a_conditional_earlier_route_does_not_shadow(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An earlier route with conditions may not match, so the later one is not flagged."""
        config = _config(tmp_path, [EMAIL_ROUTE, MIRROR_ROUTE])

        _, out, _ = _run(["rules", "check", "--config", config], capsys)

        assert "never delivers" not in out

    def test_a_bare_null_is_not_flagged(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """null read as a field is always null, so `!= null` works as meant and is not warned about."""
        config = _config(tmp_path, [{**MIRROR_ROUTE, "when": "record.emailVerified != null"}])

        _, out, _ = _run(["rules", "check", "--config", config], capsys)

        assert "warning:" not in out

    def test_no_routes_is_a_warning(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A config without routes delivers nothing, which check says."""
        config = _config(tmp_path, [], destinations=())

        status, out, _ = _run(["rules", "check", "--config", config], capsys)

        assert status == 0
        assert "warning: no routes" in out

    def test_an_invalid_config_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A route naming an unknown destination is a config error, which main turns into exit 2."""
        config = _config(tmp_path, [{"name": "x", "to": ["nowhere"]}])

        status, _, _ = _run(["rules", "check", "--config", config], capsys)

        assert status == 2

    def test_rules_without_a_sub_command_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        """rules alone names no action: argparse exits 2."""
        with pytest.raises(SystemExit) as exited:
            _run(["rules"], capsys)

        assert exited.value.code == 2


class TestExplain:
    def _explain(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        event: Any,
        *,
        record: Any = None,
        previous: Any = None,
        routes: list[dict[str, Any]] | None = None,
        output: str = "json",
    ) -> tuple[int, str, str]:
        argv = ["rules", "explain", "--config", _config(tmp_path, routes or [EMAIL_ROUTE, MIRROR_ROUTE])]
        argv += ["--event", _file(tmp_path, "event.json", event), "--output", output]
        if record is not None:
            argv += ["--record", _file(tmp_path, "record.json", record)]
        if previous is not None:
            argv += ["--previous", _file(tmp_path, "previous.json", previous)]
        return _run(argv, capsys)

    def test_json_lists_every_route_and_the_exact_payload_per_destination(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An update with a previous version: the email route takes crm, the mirror only bus."""
        event = {"type": "entityUpdated", "event_id": "e-1", "occurred_at": 1795348800}
        previous, record = make_record(email="old@example.com"), make_record()

        status, out, _ = self._explain(tmp_path, capsys, event, record=record, previous=previous)

        report = json.loads(out)
        assert status == 0
        assert report["fetch"] == {"record": True, "attributes": None, "previous": True}
        assert report["routes"] == [
            {
                "name": "email-to-crm",
                "candidate": True,
                "matched": True,
                "reason": "matched",
                "delivers_to": ["crm"],
                "already_taken": {},
            },
            {
                "name": "mirror",
                "candidate": True,
                "matched": True,
                "reason": "matched",
                "delivers_to": ["bus"],
                "already_taken": {"crm": "email-to-crm"},
            },
        ]
        assert report["deliveries"]["crm"] == {
            "id": "e-1:crm",
            "type": "entityUpdated",
            "event_id": "e-1",
            "source": "v3",
            "entity_type": "user",
            "uuid": UUID,
            "occurred_at": "2026-11-22T12:00:00Z",
            "route": "email-to-crm",
            "record": {"uuid": UUID, "email": report["deliveries"]["crm"]["record"]["email"], "city": "Oslo"},
            "changes": {
                "email": {
                    "old": report["deliveries"]["crm"]["changes"]["email"]["old"],
                    "new": report["deliveries"]["crm"]["record"]["email"],
                }
            },
        }
        assert "example.com" not in json.dumps(report["deliveries"]["crm"])
        assert report["deliveries"]["bus"]["record"] == record
        assert report["deliveries"]["bus"]["changes"] == {"email": {"old": "old@example.com", "new": "ann@example.com"}}

    def test_text_says_why_routes_do_not_match_and_prints_payloads(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Text output: a line per route with its outcome, then each payload as indented JSON."""
        event = {"type": "entityUpdated", "attributes": ["givenName"]}
        routes: list[dict[str, Any]] = [
            EMAIL_ROUTE,
            {"name": "deletes", "on": "entityDeleted", "to": ["crm"]},
            MIRROR_ROUTE,
        ]

        status, out, _ = self._explain(tmp_path, capsys, event, record=make_record(), routes=routes, output="text")

        assert status == 0
        assert "  email-to-crm: no match (changed_any: none of email changed)" in out
        assert "  deletes: not a candidate (on: entityUpdated is not one of entityDeleted)" in out
        assert "  mirror: matched -> crm, bus" in out
        assert "fetch: whole record" in out
        assert "  crm (route mirror):\n    {\n" in out
        assert '      "id": "explain:crm",' in out
        assert '        "givenName": {\n          "new": "Ann"\n        }' in out

    def test_a_created_record_changes_every_attribute(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Without a previous version, a created record counts as changed from nothing, so changed_any holds."""
        status, out, _ = self._explain(tmp_path, capsys, {"type": "entityCreated"}, record=make_record())

        report = json.loads(out)
        assert status == 0
        assert report["routes"][0]["matched"] is True
        assert "changes" not in report["deliveries"]["crm"]

    def test_an_update_without_previous_or_attributes_has_no_changes(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A legacy-style update with nothing to diff: a note, and changed_any does not hold."""
        event = {"type": "entityUpdated", "source": "legacy"}

        _, out, _ = self._explain(tmp_path, capsys, event, record=make_record())

        report = json.loads(out)
        assert report["routes"][0]["reason"] == "changed_any: none of email changed"
        assert any("no changes are known" in note for note in report["notes"])
        assert report["fetch"]["previous"] is True

    def test_a_previous_the_worker_would_not_fetch_is_noted(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With an attributes list the worker skips the previous version; explain says so."""
        event = {"type": "entityUpdated", "attributes": ["email"]}

        _, out, _ = self._explain(tmp_path, capsys, event, record=make_record(), previous=make_record(email="o@x"))

        report = json.loads(out)
        assert report["fetch"]["previous"] is False
        assert any("would not fetch the previous version" in note for note in report["notes"])

    def test_an_ignored_previous_changes_neither_matching_nor_payload(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The worker goes by the attributes list here: a previous where email differs does not make email change."""
        event = {"type": "entityUpdated", "attributes": ["givenName"]}
        previous = make_record(email="old@example.com", givenName="Annie")

        _, out, _ = self._explain(tmp_path, capsys, event, record=make_record(), previous=previous)
        _, without, _ = self._explain(tmp_path, capsys, event, record=make_record())

        report = json.loads(out)
        assert report["routes"][0]["reason"] == "changed_any: none of email changed"
        assert report["deliveries"]["crm"]["changes"] == {"givenName": {"new": "Ann"}}
        assert report["deliveries"] == json.loads(without)["deliveries"]
        assert any("--previous is ignored" in note for note in report["notes"])

    def test_a_created_record_ignores_previous(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A created record has no previous version: --previous is ignored, with a note saying why."""
        routes = [{**EMAIL_ROUTE, "changed_any": ["givenName"]}, MIRROR_ROUTE]
        event = {"type": "entityCreated"}

        _, out, _ = self._explain(tmp_path, capsys, event, record=make_record(), previous=make_record(), routes=routes)
        _, without, _ = self._explain(tmp_path, capsys, event, record=make_record(), routes=routes)

        report = json.loads(out)
        assert report["routes"][0]["matched"] is True
        assert report["deliveries"] == json.loads(without)["deliveries"]
        assert (
            "the worker would not fetch the previous version (a created record has none): --previous is ignored"
            in (report["notes"])
        )

    def test_a_previous_the_worker_would_fetch_is_used(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A when reading previous makes the worker fetch it: explain diffs against it, with no note."""
        routes = [{**MIRROR_ROUTE, "when": "previous.email != record.email"}]
        event = {"type": "entityUpdated", "attributes": ["givenName"]}

        _, out, _ = self._explain(
            tmp_path, capsys, event, record=make_record(), previous=make_record(email="o@x"), routes=routes
        )

        report = json.loads(out)
        assert report["fetch"]["previous"] is True
        assert report["routes"][0]["matched"] is True
        assert report["deliveries"]["crm"]["changes"] == {"email": {"old": "o@x", "new": "ann@example.com"}}
        assert report["notes"] == []

    def test_a_legacy_event_without_entity_type_takes_the_configured_one(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """entity_type null: routes filter on capture.entity_type (user), as the worker does."""
        routes = [
            {**MIRROR_ROUTE, "name": "customers", "entity_type": "customer"},
            {**MIRROR_ROUTE, "entity_type": "user"},
        ]
        event = {"type": "entityUpdated", "source": "legacy", "entity_type": None}

        _, out, _ = self._explain(tmp_path, capsys, event, record=make_record(), routes=routes)

        report = json.loads(out)
        assert report["routes"][0]["reason"] == "entity_type: user is not one of customer"
        assert report["routes"][1]["delivers_to"] == ["crm", "bus"]
        assert "the event names no entity type: routes take it as capture.entity_type user" in report["notes"]

    def test_no_candidate_means_nothing_is_fetched(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """An event no route takes is not fetched: the files given are ignored, with a note."""
        routes = [{**MIRROR_ROUTE, "on": ["entityDeleted"]}]

        _, out, _ = self._explain(tmp_path, capsys, {"type": "entityUpdated"}, record=make_record(), routes=routes)

        report = json.loads(out)
        assert report["fetch"]["record"] is False
        assert report["deliveries"] == {}
        assert any("no route is a candidate" in note for note in report["notes"])

    def test_a_deletion_sends_a_null_record(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Deleted records are not fetched: a given record is ignored, with a note."""
        event = {"type": "entityDeleted", "uuid": UUID}

        _, out, _ = self._explain(tmp_path, capsys, event, record=make_record())

        report = json.loads(out)
        assert report["fetch"] == {"record": False, "attributes": None, "previous": False}
        assert report["deliveries"]["crm"]["record"] is None
        assert report["deliveries"]["crm"]["uuid"] == UUID
        assert any("--record and --previous are ignored" in note for note in report["notes"])

    def test_only_type_is_required_and_a_capture_answer_is_a_record(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Defaults fill the envelope, the uuid comes from the record, and {"stat","result"} is unwrapped."""
        answer = {"stat": "ok", "result": make_record()}

        _, out, _ = self._explain(tmp_path, capsys, {"type": "entityCreated"}, record=answer)

        report = json.loads(out)
        assert {key: report["event"][key] for key in ("event_id", "delivery_id", "source", "uuid", "entity_type")} == {
            "event_id": "explain",
            "delivery_id": "explain",
            "source": "v3",
            "uuid": UUID,
            "entity_type": "user",
        }
        assert report["deliveries"]["bus"]["record"] == make_record()

    @pytest.mark.parametrize(
        ("event", "message"),
        [
            pytest.param("{not json", "invalid JSON at line 1 column 2", id="invalid-json"),
            pytest.param([1, 2], "must be a JSON object", id="not-an-object"),
            pytest.param({"uuid": "u"}, "'type' is required", id="no-type"),
            pytest.param({"type": "entityCreated", "sub": "u"}, "unknown key 'sub'", id="unknown-key"),
            pytest.param(
                {"type": "entityUpdated", "attributes": "email"}, "'attributes' must be a list", id="attributes"
            ),
            pytest.param({"type": "entityCreated", "source": "v4"}, "'source' must be v3 or legacy", id="source"),
            pytest.param({"type": "entityCreated", "occurred_at": "today"}, "'occurred_at' must be epoch", id="time"),
        ],
    )
    def test_a_bad_event_file_is_one_line_and_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], event: Any, message: str
    ) -> None:
        """A file that is not a usable event: one line on stderr naming the problem, exit 2."""
        status, out, err = self._explain(tmp_path, capsys, event)

        assert status == 2
        assert out == ""
        assert err.startswith("capture-relay: ")
        assert message in err
        assert err.count("\n") == 1

    def test_a_missing_file_is_one_line_and_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file that cannot be read is named, with the reason."""
        config = _config(tmp_path, [MIRROR_ROUTE])
        missing = str(tmp_path / "nope.json")

        status, _, err = _run(["rules", "explain", "--config", config, "--event", missing], capsys)

        assert status == 2
        assert err == f"capture-relay: --event {missing}: cannot read it (No such file or directory)\n"

    def test_a_record_that_is_not_an_object_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--record must hold one JSON object."""
        status, _, err = self._explain(tmp_path, capsys, {"type": "entityCreated"}, record=["a"])

        assert status == 2
        assert "--record" in err
        assert "must be a JSON object" in err
