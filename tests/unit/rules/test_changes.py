"""workers.changes: leaf diffs, changes from an event's attributes list, and dot-path helpers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.rules.factories import make_record
from workers.changes import (
    Change,
    changed_at,
    diff,
    from_attributes,
    is_missing,
    path_covers,
    path_tree,
    plural_cut,
    pop,
    project,
    project_value,
    put,
    value_at,
)

PROFILES = [
    {"id": 1, "domain": "facebook.com", "identifier": "fb-123", "accessCredentials": {"token": "tok-1"}},
    {"id": 2, "domain": "google.com", "identifier": "g-456"},
]


class TestDiff:
    def test_equal_records_have_no_changes(self) -> None:
        """Two identical versions differ nowhere."""
        record = make_record()

        changes = diff(make_record(), record)

        assert changes == {}

    def test_a_changed_scalar_is_one_change_with_old_and_new(self) -> None:
        """A changed top-level value is reported at its name, with both values."""
        previous, record = make_record(email="old@example.com"), make_record(email="new@example.com")

        changes = diff(previous, record)

        assert changes == {"email": Change("old@example.com", "new@example.com")}

    def test_nested_objects_are_walked_into(self) -> None:
        """A change inside an object is reported at its leaf dot path, not at the object."""
        previous = make_record()
        record = make_record(primaryAddress={"city": "Bergen", "zip": "0150", "country": "NO"})

        changes = diff(previous, record)

        assert changes == {"primaryAddress.city": Change("Oslo", "Bergen")}

    def test_plurals_are_leaves_compared_whole(self) -> None:
        """A list (Capture plural) that differs is one change carrying both whole lists."""
        before, after = [{"id": 1, "value": "a@x"}], [{"id": 1, "value": "a@x"}, {"id": 2, "value": "b@x"}]

        changes = diff(make_record(emails=before), make_record(emails=after))

        assert changes == {"emails": Change(before, after)}

    def test_added_and_removed_keys_count_as_changes_from_and_to_null(self) -> None:
        """A key present on one side only changed from or to null."""
        previous: dict[str, Any] = {"uuid": "u", "gone": 1}
        record: dict[str, Any] = {"uuid": "u", "added": 2}

        changes = diff(previous, record)

        assert changes == {"gone": Change(1, None), "added": Change(None, 2)}

    def test_null_and_a_missing_key_are_the_same(self) -> None:
        """A key set to null and a key that is absent are not a change."""
        changes = diff({"a": None}, {})

        assert changes == {}

    def test_an_object_set_from_null_is_reported_by_its_leaves(self) -> None:
        """An object that appears, or goes, is reported leaf by leaf."""
        previous: dict[str, Any] = {"primaryAddress": None}
        record: dict[str, Any] = {"primaryAddress": {"city": "Oslo", "geo": {"lat": 1}}}

        appeared, went = diff(previous, record), diff(record, previous)

        assert appeared == {"primaryAddress.city": Change(None, "Oslo"), "primaryAddress.geo.lat": Change(None, 1)}
        assert went == {"primaryAddress.city": Change("Oslo", None), "primaryAddress.geo.lat": Change(1, None)}

    def test_an_object_replaced_by_a_scalar_is_one_change(self) -> None:
        """A value whose type changed from object to scalar is reported whole at its path."""
        changes = diff({"a": {"b": 1}}, {"a": "flat"})

        assert changes == {"a": Change({"b": 1}, "flat")}

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            pytest.param(1, True, id="int-bool"),
            pytest.param(1, 1.0, id="int-float"),
            pytest.param(0, False, id="0-false"),
        ],
    )
    def test_values_of_different_json_types_differ(self, old: object, new: object) -> None:
        """1 and true (or 1.0) are different JSON values, though Python compares them equal."""
        changes = diff({"a": old}, {"a": new})

        assert changes == {"a": Change(old, new)}

    def test_no_previous_means_every_leaf_was_created(self) -> None:
        """A created record: every leaf is a change from null, nulls included."""
        record: dict[str, Any] = {"uuid": "u", "email": None, "primaryAddress": {"city": "Oslo"}, "emails": []}

        changes = diff(None, record)

        assert changes == {
            "uuid": Change(None, "u"),
            "email": Change(None, None),
            "primaryAddress.city": Change(None, "Oslo"),
            "emails": Change(None, []),
        }

    def test_no_record_means_every_leaf_was_removed(self) -> None:
        """A deleted record: every leaf of the previous version changes to null."""
        previous: dict[str, Any] = {"uuid": "u", "primaryAddress": {"city": "Oslo"}}

        changes = diff(previous, None)

        assert changes == {"uuid": Change("u", None), "primaryAddress.city": Change("Oslo", None)}

    def test_neither_version_means_no_changes(self) -> None:
        """Nothing before and nothing after is no change."""
        assert diff(None, None) == {}


class TestFromAttributes:
    def test_old_values_are_unknown_and_new_ones_read_from_the_record(self) -> None:
        """Each listed path becomes a change whose old value is not known."""
        record = make_record()

        changes = from_attributes(["email", "primaryAddress.city", "primaryAddress"], record)

        assert changes == {
            "email": Change(None, "ann@example.com", old_known=False),
            "primaryAddress.city": Change(None, "Oslo", old_known=False),
            "primaryAddress": Change(None, record["primaryAddress"], old_known=False),
        }

    def test_a_path_through_a_plural_is_a_change_of_the_whole_plural(self) -> None:
        """Change paths never go into a plural: profiles.identifier is reported as profiles, once."""
        record = make_record(profiles=PROFILES)

        changes = from_attributes(["profiles.identifier", "profiles.domain", "email"], record)

        assert changes == {
            "profiles": Change(None, PROFILES, old_known=False),
            "email": Change(None, "ann@example.com", old_known=False),
        }

    @pytest.mark.parametrize(
        ("record", "path", "cut"),
        [
            pytest.param(make_record(profiles=PROFILES), "profiles.identifier", "profiles", id="plural"),
            pytest.param({"a": {"p": [{"x": 1}]}}, "a.p.x.y", "a.p", id="plural-inside-an-object"),
            pytest.param(make_record(profiles=PROFILES), "profiles", "profiles", id="the-plural-itself"),
            pytest.param(make_record(), "primaryAddress.city", "primaryAddress.city", id="objects-only"),
            pytest.param(make_record(), "profiles.identifier", "profiles.identifier", id="not-in-the-record"),
            pytest.param({"a": "flat"}, "a.b", "a.b", id="scalar-on-the-way"),
            pytest.param(None, "a.b", "a.b", id="no-record"),
        ],
    )
    def test_plural_cut_stops_at_the_first_plural(self, record: dict[str, Any] | None, path: str, cut: str) -> None:
        """The path is cut after the first list met in the record; without one it stays whole."""
        assert plural_cut(record, path) == cut

    def test_paths_the_record_lacks_are_null(self) -> None:
        """A listed attribute the record does not have (or no record) changed to null."""
        assert from_attributes(["nickname"], make_record()) == {"nickname": Change(None, None, old_known=False)}
        assert from_attributes(["email"], None) == {"email": Change(None, None, old_known=False)}


class TestPathCovers:
    @pytest.mark.parametrize(
        ("route_path", "change_path", "expected"),
        [
            pytest.param("email", "email", True, id="equal"),
            pytest.param("primaryAddress", "primaryAddress.city", True, id="change-below-route-path"),
            pytest.param("primaryAddress.city", "primaryAddress", True, id="whole-object-changed"),
            pytest.param("a", "a.b.c", True, id="deeply-below"),
            pytest.param("email", "emailVerified", False, id="shared-prefix-is-not-a-parent"),
            pytest.param("primaryAddress.city", "primaryAddress.zip", False, id="siblings"),
            pytest.param("givenName", "familyName", False, id="unrelated"),
        ],
    )
    def test_covers(self, route_path: str, change_path: str, expected: bool) -> None:
        """Equal paths, parents and children cover each other; siblings and name prefixes do not."""
        assert path_covers(route_path, change_path) is expected


class TestPathHelpers:
    def test_value_at_reads_nested_values_and_defaults_when_missing(self) -> None:
        """value_at walks objects, never lists, and returns the default for a missing path."""
        record = make_record()

        assert value_at(record, "primaryAddress.city") == "Oslo"
        assert value_at(record, "primaryAddress.street") is None
        assert value_at(record, "emails.value", "missing") == "missing"
        assert value_at(None, "email") is None

    def test_project_keeps_nesting_and_the_order_given(self) -> None:
        """A projection keeps objects nested, lists the paths in the order asked, and skips missing ones."""
        record = make_record()

        projected = project(record, ["givenName", "primaryAddress.city", "nickname", "uuid"])

        assert projected == {"givenName": "Ann", "primaryAddress": {"city": "Oslo"}, "uuid": record["uuid"]}
        assert list(projected) == ["givenName", "primaryAddress", "uuid"]

    @pytest.mark.parametrize(
        "paths", [["primaryAddress", "primaryAddress.city"], ["primaryAddress.city", "primaryAddress"]]
    )
    def test_project_takes_an_object_whole_when_asked_for_whole(self, paths: list[str]) -> None:
        """Asking for an object and one of its parts gives the whole object, in either order."""
        record = make_record()

        projected = project(record, paths)

        assert projected == {"primaryAddress": record["primaryAddress"]}
        assert record == make_record()

    def test_project_keeps_the_listed_attributes_in_each_element_of_a_plural(self) -> None:
        """A path through a plural keeps that attribute in every element, and only it."""
        record = make_record(profiles=PROFILES)

        projected = project(record, ["uuid", "profiles.identifier", "profiles.domain"])

        assert projected == {
            "uuid": record["uuid"],
            "profiles": [
                {"identifier": "fb-123", "domain": "facebook.com"},
                {"identifier": "g-456", "domain": "google.com"},
            ],
        }

    def test_project_into_a_plural_keeps_every_element_and_only_objects(self) -> None:
        """An element without the attribute stays as {}; elements that are not objects are left out."""
        record: dict[str, Any] = {"profiles": [{"domain": "x"}, "stray", {"identifier": "i"}, None], "tags": []}

        projected = project(record, ["profiles.identifier", "tags.name"])

        assert projected == {"profiles": [{}, {"identifier": "i"}], "tags": []}

    def test_project_walks_nested_plurals_and_objects_in_elements(self) -> None:
        """Plurals inside elements and objects inside elements are projected the same way."""
        record: dict[str, Any] = {
            "profiles": [
                {"accounts": [{"name": "a", "secret": "s1"}], "address": {"city": "Oslo", "zip": "1"}},
                {"accounts": [{"name": "b", "secret": "s2"}, {"secret": "s3"}]},
            ]
        }

        projected = project(record, ["profiles.accounts.name", "profiles.address.city"])

        assert projected == {
            "profiles": [
                {"accounts": [{"name": "a"}], "address": {"city": "Oslo"}},
                {"accounts": [{"name": "b"}, {}]},
            ]
        }

    @pytest.mark.parametrize(
        "record",
        [
            pytest.param({"profiles": "a string"}, id="scalar"),
            pytest.param({"profiles": None}, id="null"),
            pytest.param({"profiles": {"domain": "x"}}, id="object-without-it"),
            pytest.param({}, id="absent"),
        ],
    )
    def test_project_leaves_out_a_path_that_meets_no_object(self, record: dict[str, Any]) -> None:
        """A scalar or null where an object was expected is not sent: the path is not there."""
        assert project(record, ["profiles.identifier"]) == {}

    def test_project_value_says_missing_rather_than_null(self) -> None:
        """project_value distinguishes "nothing there" from a null value that is there."""
        tree = path_tree(["a"])

        assert is_missing(project_value({"b": 1}, tree))
        assert is_missing(project_value("flat", tree))
        assert project_value({"a": None}, tree) == {"a": None}

    def test_path_tree_takes_a_whole_path_over_its_parts(self) -> None:
        """A path taken whole replaces its parts, whichever comes first; order of first mention is kept."""
        assert path_tree(["a.b", "c", "a"]) == {"a": None, "c": None}
        assert path_tree(["a", "a.b"]) == {"a": None}
        assert list(path_tree(["c.x", "a", "c.y"])) == ["c", "a"]

    @pytest.mark.parametrize(
        ("change", "inner", "expected"),
        [
            pytest.param(
                Change([{"identifier": "a", "domain": "x"}], [{"identifier": "a", "domain": "y"}]),
                "identifier",
                False,
                id="other-attribute-changed",
            ),
            pytest.param(
                Change([{"identifier": "a"}], [{"identifier": "b"}]), "identifier", True, id="attribute-changed"
            ),
            pytest.param(
                Change([{"identifier": "a"}], [{"identifier": "a"}, {"identifier": "b"}]),
                "identifier",
                True,
                id="element-added",
            ),
            pytest.param(Change(None, [{"identifier": "a"}]), "identifier", True, id="plural-appeared"),
            pytest.param(
                Change(None, [{"domain": "x"}], old_known=False), "identifier", True, id="old-unknown-may-have"
            ),
            pytest.param(Change({"b": 1}, "flat"), "b", True, id="object-replaced-by-scalar"),
        ],
    )
    def test_changed_at_looks_at_the_attribute_in_each_element(
        self, change: Change, inner: str, expected: bool
    ) -> None:
        """A plural's change counts for a path inside it only where that attribute differs."""
        assert changed_at(change, inner) is expected

    def test_put_makes_objects_on_the_way(self) -> None:
        """put creates missing objects and replaces a non-object in the way."""
        document: dict[str, Any] = {"a": 1}

        put(document, "a.b", 2)
        put(document, "c.d.e", 3)

        assert document == {"a": {"b": 2}, "c": {"d": {"e": 3}}}

    def test_pop_removes_the_value_and_objects_it_empties(self) -> None:
        """pop returns the value and removes objects left empty, but not their non-empty parents."""
        document: dict[str, Any] = {"a": {"b": {"c": 1}, "keep": 2}}

        value = pop(document, "a.b.c")

        assert value == 1
        assert document == {"a": {"keep": 2}}
