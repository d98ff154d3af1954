"""workers.rules: candidates, the fetch plan, condition evaluation and one route per destination."""

from __future__ import annotations

from typing import Any

import pytest

from service.settings import from_mapping
from tests.unit.rules.factories import make_event, make_record, make_route
from workers.changes import Change, diff, from_attributes
from workers.rules import (
    CompiledRoute,
    Facts,
    FetchPlan,
    RuleBook,
    Verdict,
    effective_entity_type,
    root_names,
    truthy,
)

CAPTURE = {"base_url": "https://myapp.us.janraincapture.com", "client_id": "id", "client_secret": "secret"}


def _facts(
    record: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
    changes: dict[str, Change] | None = None,
    **event: Any,
) -> Facts:
    return Facts(make_event(**event).to_dict(), record, previous, changes or {})


def _verdict(facts: Facts, **route: Any) -> Verdict:
    book = RuleBook([make_route(**route)])
    return book.evaluate(book.routes[0], facts)


class TestCompiledRoute:
    @pytest.mark.parametrize(
        ("when", "expected"),
        [
            pytest.param("previous.email != record.email", True, id="previous"),
            pytest.param('changes."primaryAddress.city"', True, id="changes"),
            pytest.param("length(keys(changes)) > `2`", True, id="inside-a-function"),
            pytest.param("record.emails[?value == previous.email]", True, id="inside-a-filter"),
            pytest.param("record.email != null && event.source == 'v3'", False, id="record-and-event-only"),
        ],
    )
    def test_needs_previous_when_when_names_previous_or_changes(self, when: str, expected: bool) -> None:
        """A when that reads previous or changes anywhere needs the old values."""
        compiled = CompiledRoute.compile(make_route(when=when, fields=["email"]))

        assert compiled.needs_previous is expected

    @pytest.mark.parametrize(
        ("route", "expected"),
        [
            pytest.param({}, True, id="no-fields"),
            pytest.param({"fields": ["email"], "when": "record.email"}, True, id="when-reads-anything"),
            pytest.param({"fields": ["email"], "changed_any": ["givenName"], "hash": ["email"]}, False, id="fields"),
        ],
    )
    def test_needs_full_record_without_fields_or_with_a_when(self, route: dict[str, Any], expected: bool) -> None:
        """The whole record is needed when the payload is whole or a when may read any attribute."""
        compiled = CompiledRoute.compile(make_route(**route))

        assert compiled.needs_full_record is expected


class TestCandidates:
    def test_routes_are_chosen_by_event_type_in_config_order(self) -> None:
        """Routes whose on lists the event's type are candidates, in the order of the config."""
        book = RuleBook(
            [
                make_route(name="updates", on=["entityUpdated"]),
                make_route(name="deletes", on=["entityDeleted"]),
                make_route(name="default"),
            ]
        )

        candidates = book.candidates("entityUpdated", "user")

        assert [route.name for route in candidates] == ["updates", "default"]

    def test_entity_type_filters_when_set(self) -> None:
        """A route with entity_type takes only those types; one without takes any."""
        book = RuleBook([make_route(name="users", entity_type="user"), make_route(name="any")])

        users, others = book.candidates("entityCreated", "user"), book.candidates("entityCreated", "customer")

        assert [route.name for route in users] == ["users", "any"]
        assert [route.name for route in others] == ["any"]

    def test_an_event_without_entity_type_passes_the_filter(self) -> None:
        """A legacy event naming no entity type is not excluded by an entity_type filter."""
        book = RuleBook([make_route(name="users", entity_type=["user", "admin"])])

        candidates = book.candidates("entityUpdated", None)

        assert [route.name for route in candidates] == ["users"]

    def test_test_events_reach_only_routes_that_list_test(self) -> None:
        """The default on leaves test events out; a route must ask for them."""
        book = RuleBook([make_route(name="default"), make_route(name="tests", on=["test", "entityCreated"])])

        candidates = book.candidates("test", None)

        assert [route.name for route in candidates] == ["tests"]

    def test_unknown_event_types_match_no_route(self) -> None:
        """An event type Capture may add later is taken by no route."""
        book = RuleBook([make_route(on=["entityCreated", "entityUpdated", "entityDeleted", "test"])])

        assert book.candidates("entityMerged", "user") == []

    def test_from_settings_compiles_the_configured_routes(self) -> None:
        """The rule book of a loaded config holds its routes in order."""
        settings = from_mapping(
            {
                "destinations": {"crm": {"type": "http", "url": "https://crm.example.com/hook"}},
                "routes": [
                    {"name": "a", "on": ["entityDeleted"], "to": ["crm"]},
                    {"name": "b", "on": ["test"], "to": ["crm"]},
                ],
            },
            {},
        )

        book = RuleBook.from_settings(settings)

        assert [route.name for route in book.routes] == ["a", "b"]


class TestEffectiveEntityType:
    @pytest.mark.parametrize(
        ("capture", "event_type", "expected"),
        [
            pytest.param({"entity_type": "customer"}, "user", "user", id="the-event-says"),
            pytest.param({"entity_type": "customer"}, None, "customer", id="legacy-takes-the-configured"),
            pytest.param({"entity_type": "customer"}, "", "customer", id="empty-is-none"),
            pytest.param({}, None, "user", id="configured-default-user"),
            pytest.param(None, None, None, id="no-capture-section"),
        ],
    )
    def test_an_event_without_entity_type_takes_capture_entity_type(
        self, capture: dict[str, Any] | None, event_type: str | None, expected: str | None
    ) -> None:
        """The event's own entity type wins; a legacy event naming none gets capture.entity_type."""
        data: dict[str, Any] = {"destinations": {"crm": {"type": "http", "url": "https://crm.example.com/hook"}}}
        data["routes"] = [{"name": "deletes", "on": ["entityDeleted"], "to": ["crm"]}]
        if capture is not None:
            data["capture"] = {**CAPTURE, **capture}
        settings = from_mapping(data, {})

        assert effective_entity_type(event_type, settings) == expected

    def test_a_legacy_event_is_filtered_on_the_configured_type(self) -> None:
        """With the effective type, a route for another entity type no longer takes a legacy event."""
        settings = from_mapping(
            {
                "capture": {**CAPTURE, "entity_type": "customer"},
                "destinations": {"crm": {"type": "http", "url": "https://crm.example.com/hook"}},
                "routes": [
                    {"name": "users", "entity_type": "user", "to": ["crm"]},
                    {"name": "customers", "entity_type": "customer", "to": ["crm"]},
                ],
            },
            {},
        )
        book = RuleBook.from_settings(settings)

        candidates = book.candidates("entityUpdated", effective_entity_type(None, settings))

        assert [route.name for route in candidates] == ["customers"]


class TestFetchPlan:
    @pytest.mark.parametrize("event_type", ["entityDeleted", "test"])
    def test_deletions_and_tests_fetch_nothing(self, event_type: str) -> None:
        """A deleted record is gone and a test names none: no Capture call."""
        book = RuleBook([make_route(on=[event_type])])

        plan = book.fetch_plan(book.routes, make_event(type=event_type))

        assert plan == FetchPlan(fetch=False, attributes=None, previous=False)

    def test_no_candidates_fetch_nothing(self) -> None:
        """An event no route takes costs no Capture call."""
        book = RuleBook([])

        plan = book.fetch_plan([], make_event(type="entityCreated"))

        assert plan.fetch is False

    def test_the_union_of_top_level_names_when_every_route_has_fields(self) -> None:
        """Only the top-level attributes the routes name are fetched, plus id, lastUpdated and uuid."""
        book = RuleBook(
            [
                make_route(name="a", fields=["email", "primaryAddress.city"], hash=["email"]),
                make_route(
                    name="b",
                    fields=["givenName"],
                    changed_any=["emailVerified"],
                    changed_all=["profiles.domain"],
                    rename={"familyName": "surname"},
                ),
            ]
        )

        plan = book.fetch_plan(book.routes, make_event(type="entityUpdated", attributes=["email"]))

        assert plan == FetchPlan(
            fetch=True,
            attributes=(
                "email",
                "emailVerified",
                "familyName",
                "givenName",
                "id",
                "lastUpdated",
                "primaryAddress",
                "profiles",
                "uuid",
            ),
            previous=False,
        )

    @pytest.mark.parametrize(
        "whole",
        [pytest.param({}, id="no-fields"), pytest.param({"fields": ["email"], "when": "record.x"}, id="when")],
    )
    def test_the_whole_record_when_one_candidate_needs_it(self, whole: dict[str, Any]) -> None:
        """One route needing the whole record means the whole record is fetched."""
        book = RuleBook([make_route(name="small", fields=["email"]), make_route(name="whole", **whole)])

        plan = book.fetch_plan(book.routes, make_event(type="entityCreated"))

        assert (plan.fetch, plan.attributes) == (True, None)

    def test_previous_for_change_conditions_on_an_update_without_attributes(self) -> None:
        """A legacy update carries no attributes list, so changed_any needs the previous version."""
        book = RuleBook([make_route(changed_any=["email"])])

        legacy = book.fetch_plan(book.routes, make_event(type="entityUpdated", source="legacy", attributes=[]))
        v3 = book.fetch_plan(book.routes, make_event(type="entityUpdated", attributes=["email"]))

        assert (legacy.previous, v3.previous) == (True, False)

    def test_previous_when_a_when_reads_old_values_even_with_attributes(self) -> None:
        """The attributes list says what changed, not from what: a when on previous needs the version."""
        book = RuleBook([make_route(fields=["email"], when="previous.email != record.email")])

        plan = book.fetch_plan(book.routes, make_event(type="entityUpdated", attributes=["email"]))

        assert plan.previous is True

    @pytest.mark.parametrize(
        "route",
        [pytest.param({"changed_any": ["email"]}, id="changed_any"), pytest.param({"when": "previous"}, id="when")],
    )
    def test_no_previous_for_a_created_record(self, route: dict[str, Any]) -> None:
        """A created record has no previous version to fetch."""
        book = RuleBook([make_route(**route)])

        plan = book.fetch_plan(book.routes, make_event(type="entityCreated"))

        assert (plan.fetch, plan.previous) == (True, False)

    def test_no_previous_without_conditions_on_old_values(self) -> None:
        """Routes without change conditions or previous/changes in when need no previous version."""
        book = RuleBook([make_route(when="record.email != null")])

        plan = book.fetch_plan(book.routes, make_event(type="entityUpdated"))

        assert plan.previous is False

    def test_trim_cuts_a_whole_version_to_the_planned_attributes(self) -> None:
        """A whole previous version, trimmed, diffs against a partly fetched record without noise."""
        plan = FetchPlan(fetch=True, attributes=("email", "id", "lastUpdated", "uuid"), previous=True)
        previous, record = make_record(email="old@example.com"), make_record()
        fetched = {key: record[key] for key in ("email", "id", "lastUpdated", "uuid")}

        changes = diff(plan.trim(previous), fetched)

        assert changes == {"email": Change("old@example.com", "ann@example.com")}
        assert FetchPlan(fetch=True).trim(previous) is previous
        assert plan.trim(None) is None


class TestEvaluate:
    def test_a_route_without_conditions_matches(self) -> None:
        """No changed_any, changed_all or when: every candidate event matches."""
        verdict = _verdict(_facts(make_record()))

        assert verdict == Verdict(True, "matched")

    def test_changed_any_matches_when_one_path_changed(self) -> None:
        """One listed path among the changes is enough."""
        facts = _facts(changes={"emailVerified": Change(None, "2026-11-22")})

        verdict = _verdict(facts, changed_any=["email", "emailVerified"])

        assert verdict.matched is True

    def test_changed_any_says_which_paths_did_not_change(self) -> None:
        """The reason lists the paths, never a value."""
        facts = _facts(changes={"givenName": Change("Ann", "Anna")})

        verdict = _verdict(facts, changed_any=["email", "emailVerified"])

        assert verdict == Verdict(False, "changed_any: none of email, emailVerified changed")

    @pytest.mark.parametrize(
        ("route_path", "change_path"),
        [
            pytest.param("primaryAddress", "primaryAddress.city", id="change-below-the-path"),
            pytest.param("primaryAddress.city", "primaryAddress", id="whole-object-changed"),
        ],
    )
    def test_changed_any_matches_parents_and_parts(self, route_path: str, change_path: str) -> None:
        """A path matches changes below it, and a change to a whole object matches its parts."""
        facts = _facts(changes={change_path: Change(None, "x", old_known=False)})

        verdict = _verdict(facts, changed_any=[route_path])

        assert verdict.matched is True

    @pytest.mark.parametrize(
        ("old", "new", "expected"),
        [
            pytest.param(
                [{"identifier": "a", "domain": "x"}], [{"identifier": "b", "domain": "x"}], True, id="changed"
            ),
            pytest.param([{"identifier": "a"}], [{"identifier": "a"}, {"identifier": "b"}], True, id="element-added"),
            pytest.param([{"identifier": "a"}], [], True, id="element-removed"),
            pytest.param([{"identifier": "a", "domain": "x"}], [{"identifier": "a", "domain": "y"}], False, id="other"),
        ],
    )
    def test_a_path_inside_a_plural_matches_when_that_attribute_changed(
        self, old: list[dict[str, Any]], new: list[dict[str, Any]], expected: bool
    ) -> None:
        """The diff reports the whole plural; a path inside it matches if its attribute differs in some element."""
        changes = diff(make_record(profiles=old), make_record(profiles=new))

        any_verdict = _verdict(_facts(changes=changes), changed_any=["profiles.identifier"])
        all_verdict = _verdict(_facts(changes=changes), changed_all=["profiles.identifier", "profiles"])

        assert (any_verdict.matched, all_verdict.matched) == (expected, expected)

    def test_a_path_inside_a_plural_matches_a_plural_named_in_the_attributes_list(self) -> None:
        """Without old values (v3 attributes list) a change of the plural may have changed any part of it."""
        record = make_record(profiles=[{"identifier": "a"}])
        changes = from_attributes(["profiles.domain"], record)

        verdict = _verdict(_facts(record, changes=changes), changed_any=["profiles.identifier"])

        assert verdict.matched is True

    def test_changed_any_is_not_fooled_by_a_name_prefix(self) -> None:
        """email does not match a change of emailVerified."""
        facts = _facts(changes={"emailVerified": Change(None, "x")})

        verdict = _verdict(facts, changed_any=["email"])

        assert verdict.matched is False

    def test_changed_all_needs_every_path_and_names_the_missing(self) -> None:
        """changed_all fails naming each path that did not change."""
        facts = _facts(changes={"familyName": Change("Smith", "Jones")})

        verdict = _verdict(facts, changed_all=["givenName", "familyName", "email"])

        assert verdict == Verdict(False, "changed_all: givenName, email did not change")

    def test_changed_all_matches_when_all_changed(self) -> None:
        """Every listed path changed (a nested change counts for its object)."""
        changes = diff(make_record(), make_record(givenName="Anna", primaryAddress={"city": "Bergen"}))

        verdict = _verdict(_facts(changes=changes), changed_all=["givenName", "primaryAddress"])

        assert verdict.matched is True

    def test_change_conditions_come_before_when(self) -> None:
        """The cheap condition's reason is given when both fail."""
        verdict = _verdict(_facts(make_record()), changed_any=["email"], when="`false`")

        assert verdict.reason == "changed_any: none of email changed"

    @pytest.mark.parametrize(
        ("when", "expected"),
        [
            pytest.param("record.givenName == 'Ann'", True, id="record"),
            pytest.param("previous.givenName == 'Annie'", True, id="previous"),
            pytest.param("event.type == 'entityUpdated' && event.source == 'v3'", True, id="event"),
            pytest.param("changes.givenName.old == 'Annie' && changes.givenName.new == 'Ann'", True, id="changes"),
            pytest.param('changes."primaryAddress.city".new', False, id="dot-path-key-not-changed"),
            pytest.param("record.nickname", False, id="missing-is-null"),
            pytest.param("record.emails", True, id="non-empty-list"),
            pytest.param("`0`", True, id="zero-is-true"),
            pytest.param("''", False, id="empty-string"),
            pytest.param("`[]`", False, id="empty-list"),
            pytest.param("`{}`", False, id="empty-object"),
        ],
    )
    def test_when_is_jmespath_over_event_record_previous_and_changes(self, when: str, expected: bool) -> None:
        """when reads the four documents and matches on a JMESPath-truthy result."""
        previous, record = make_record(givenName="Annie"), make_record()
        facts = _facts(record, previous, diff(previous, record))

        verdict = _verdict(facts, when=when)

        assert verdict.matched is expected
        assert verdict.reason == ("matched" if expected else "when: evaluated to false")

    def test_changes_from_attributes_have_no_old_value(self) -> None:
        """Without a previous version, changes carry new values only: old is absent, not null."""
        record = make_record()
        facts = _facts(record, changes=from_attributes(["email"], record))

        with_old = _verdict(facts, when="contains(keys(changes.email), 'old')")
        new_only = _verdict(facts, when="changes.email.new == 'ann@example.com'")

        assert (with_old.matched, new_only.matched) == (False, True)

    @pytest.mark.parametrize(
        "when",
        [
            pytest.param("length(record.id) > `1`", id="jmespath-type-error"),
            pytest.param("record.id < record.email", id="python-type-error"),
            pytest.param("sort_by(record.emails, &value)", id="sort-by-mixed-types"),
        ],
    )
    def test_a_when_that_fails_does_not_match_and_quotes_no_value(self, when: str) -> None:
        """A when failing at run time is a no-match with the error's kind; record values stay out."""
        record = make_record(id=424242, email="secret@example.com", emails=[{"value": "x"}, {"value": 424242}])

        verdict = _verdict(_facts(record), when=when)

        assert verdict.matched is False
        assert "424242" not in verdict.reason
        assert "secret@example.com" not in verdict.reason
        assert verdict.reason.startswith("when: failed to evaluate (")


class TestRoutesFor:
    def test_a_destination_takes_the_first_matching_route_only(self) -> None:
        """Routes in config order claim destinations; later matches get only what is left."""
        book = RuleBook(
            [
                make_route(name="specific", changed_any=["email"], to=["crm"], fields=["email"]),
                make_route(name="everything", to=["crm", "warehouse"]),
                make_route(name="also-warehouse", to=["warehouse"]),
            ]
        )
        facts = _facts(make_record(), changes={"email": Change("a", "b")})

        matched = book.routes_for(book.routes, facts)

        assert [(route.name, to) for route, to in matched] == [
            ("specific", ("crm",)),
            ("everything", ("warehouse",)),
            ("also-warehouse", ()),
        ]

    def test_a_route_that_does_not_match_leaves_its_destinations_to_later_routes(self) -> None:
        """When the specific route does not match, the general one delivers to its destination."""
        book = RuleBook(
            [
                make_route(name="specific", changed_any=["email"], to=["crm"]),
                make_route(name="everything", to=["crm"]),
            ]
        )
        facts = _facts(make_record(), changes={"givenName": Change("a", "b")})

        matched = book.routes_for(book.routes, facts)

        assert [(route.name, to) for route, to in matched] == [("everything", ("crm",))]

    def test_a_destination_named_twice_is_delivered_once(self) -> None:
        """A route listing a destination twice still yields one delivery."""
        book = RuleBook([make_route(to=["crm", "crm", "bus"])])

        matched = book.routes_for(book.routes, _facts(make_record()))

        assert [to for _, to in matched] == [("crm", "bus")]

    def test_only_the_candidates_given_are_considered(self) -> None:
        """routes_for evaluates the candidates it is handed, not the whole book."""
        book = RuleBook(
            [make_route(name="deletes", on=["entityDeleted"]), make_route(name="updates", on="entityUpdated")]
        )
        candidates = book.candidates("entityDeleted", "user")

        matched = book.routes_for(candidates, _facts(type="entityDeleted"))

        assert [route.name for route, _ in matched] == ["deletes"]


class TestHelpers:
    @pytest.mark.parametrize(
        ("expression", "names"),
        [
            pytest.param("record.email && length(changes) > `1`", {"record", "changes"}, id="and-function"),
            pytest.param("email != null", {"email", "null"}, id="bare-names"),
            pytest.param("record.emails[?value == 'x'].id", {"record"}, id="filter-reads-elements"),
            pytest.param("sort_by(record.emails, &id)", {"record"}, id="expref-reads-elements"),
            pytest.param("record.a | b", {"record"}, id="pipe-right-reads-the-result"),
            pytest.param("{a: record.a, b: [previous.b]}", {"record", "previous"}, id="multiselect"),
            pytest.param("!(event.type == 'test')", {"event"}, id="not"),
        ],
    )
    def test_root_names_are_the_names_read_from_the_top_document(self, expression: str, names: set[str]) -> None:
        """Only identifiers looked up in {event, record, previous, changes} itself are listed."""
        assert root_names(expression) == names

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(None, False), (False, False), ("", False), ([], False), ({}, False), (0, True), ("x", True), (True, True)],
    )
    def test_truthy_follows_jmespath(self, value: object, expected: bool) -> None:
        """false, null and empty strings, lists and objects are false; everything else, 0 too, is true."""
        assert truthy(value) is expected
