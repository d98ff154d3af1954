"""workers.payload: the document a destination receives, and shaping that cannot leak through changes."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from tests.unit.rules.factories import UUID, make_event, make_record, make_route
from workers.changes import Change, diff, from_attributes
from workers.payload import build_payload, hash_value, iso_utc, shape_changes, shape_record
from workers.rules import CompiledRoute, Facts


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _payload(route: dict[str, Any], facts: Facts | None = None, **event: Any) -> dict[str, Any]:
    built = make_event(**event)
    facts = facts or Facts(built.to_dict(), make_record())
    return build_payload(built, "crm", CompiledRoute.compile(make_route(**route)), facts)


class TestEnvelope:
    def test_an_update_carries_the_envelope_the_record_and_the_changes(self) -> None:
        """The whole document: delivery id, event identity, route, shaped record and changes."""
        previous, record = make_record(email="old@example.com"), make_record()
        event = make_event(type="entityUpdated", attributes=["email"])
        facts = Facts(event.to_dict(), record, previous, diff(previous, record))
        route = CompiledRoute.compile(make_route(name="email-to-crm", fields=["uuid", "email"]))

        payload = build_payload(event, "crm", route, facts)

        assert payload == {
            "id": "evt-1:crm",
            "type": "entityUpdated",
            "event_id": "evt-1",
            "source": "v3",
            "entity_type": "user",
            "uuid": UUID,
            "occurred_at": "2026-11-22T12:00:00Z",
            "route": "email-to-crm",
            "record": {"uuid": UUID, "email": "ann@example.com"},
            "changes": {"email": {"old": "old@example.com", "new": "ann@example.com"}},
        }

    @pytest.mark.parametrize("event_type", ["entityCreated", "entityDeleted", "test"])
    def test_changes_are_sent_with_updates_only(self, event_type: str) -> None:
        """Created, deleted and test events have no changes key at all."""
        payload = _payload({}, type=event_type)

        assert "changes" not in payload

    def test_a_deleted_record_is_null(self) -> None:
        """A deletion has no record: the payload says null."""
        event = make_event(type="entityDeleted")

        payload = build_payload(event, "crm", CompiledRoute.compile(make_route()), Facts(event.to_dict()))

        assert payload["record"] is None

    def test_the_id_is_the_delivery_id(self) -> None:
        """id is <event-id>:<destination>, what receivers deduplicate on."""
        event = make_event(event_id="abc")

        payload = build_payload(event, "warehouse", CompiledRoute.compile(make_route()), Facts(event.to_dict()))

        assert payload["id"] == "abc:warehouse"

    @pytest.mark.parametrize(
        ("moment", "text"),
        [
            pytest.param(1795348800.0, "2026-11-22T12:00:00Z", id="whole-seconds"),
            pytest.param(1795348800.25, "2026-11-22T12:00:00.250Z", id="fraction"),
            pytest.param(None, None, id="unknown"),
        ],
    )
    def test_occurred_at_is_iso_8601_utc(self, moment: float | None, text: str | None) -> None:
        """Epoch seconds become ISO-8601 in UTC with a Z; unknown stays null."""
        assert iso_utc(moment) == text


class TestShapeRecord:
    def test_no_fields_is_the_whole_record_as_a_copy(self) -> None:
        """Without fields the record is sent whole, and shaping never changes the fetched record."""
        record = make_record()

        shaped = shape_record(make_route(hash=["primaryAddress.city"], drop=["familyName"]), record)

        assert shaped is not None
        assert shaped["primaryAddress"]["city"] == _sha("Oslo")
        assert "familyName" not in shaped
        assert record == make_record()

    def test_fields_project_by_dot_path_keeping_nesting(self) -> None:
        """fields keeps only the listed paths, objects nested, missing ones left out."""
        shaped = shape_record(make_route(fields=["uuid", "primaryAddress.city", "nickname"]), make_record())

        assert shaped == {"uuid": UUID, "primaryAddress": {"city": "Oslo"}}

    def test_no_record_stays_null(self) -> None:
        """There is nothing to shape when there is no record."""
        assert shape_record(make_route(fields=["email"]), None) is None

    @pytest.mark.parametrize(
        ("value", "digest"),
        [
            pytest.param("Ann", _sha("Ann"), id="string-utf8"),
            pytest.param("Åsa", _sha("Åsa".encode()), id="non-ascii"),
            pytest.param(42, _sha("42"), id="number-as-json"),
            pytest.param(True, _sha("true"), id="bool-as-json"),
            pytest.param({"b": 1, "a": [2]}, _sha('{"a":[2],"b":1}'), id="object-with-sorted-keys"),
            pytest.param(None, None, id="null-stays-null"),
        ],
    )
    def test_hash_is_sha256_hex_of_utf8_or_canonical_json(self, value: object, digest: str | None) -> None:
        """Strings hash their UTF-8 bytes; anything else its JSON with sorted keys; null stays null."""
        shaped = shape_record(make_route(hash=["givenName"]), {"givenName": value})

        assert shaped == {"givenName": digest}

    def test_hash_of_an_object_does_not_depend_on_key_order(self) -> None:
        """Equal objects hash equally whatever order their keys came in."""
        assert hash_value({"a": 1, "b": 2}) == hash_value({"b": 2, "a": 1})

    def test_hash_adds_nothing_for_a_missing_path(self) -> None:
        """Hashing an attribute the record lacks does not invent it."""
        shaped = shape_record(make_route(fields=["email"], hash=["nickname"]), make_record())

        assert shaped == {"email": "ann@example.com"}

    def test_rename_moves_values_between_dot_paths(self) -> None:
        """rename moves out of and into objects, and an object it empties goes too."""
        route = make_route(
            fields=["uuid", "primaryAddress.city", "givenName"],
            rename={"primaryAddress.city": "city", "givenName": "name.first"},
        )

        shaped = shape_record(route, make_record())

        assert shaped == {"uuid": UUID, "city": "Oslo", "name": {"first": "Ann"}}

    def test_renames_happen_at_once_so_names_can_swap(self) -> None:
        """Two renames of each other's names swap the values."""
        route = make_route(
            fields=["givenName", "familyName"], rename={"givenName": "familyName", "familyName": "givenName"}
        )

        shaped = shape_record(route, make_record())

        assert shaped == {"familyName": "Ann", "givenName": "Smith"}

    def test_the_more_specific_rename_takes_its_part_first(self) -> None:
        """Renaming an object and one of its parts moves the part out, then the rest."""
        route = make_route(fields=["primaryAddress"], rename={"primaryAddress": "address", "primaryAddress.zip": "zip"})

        shaped = shape_record(route, make_record())

        assert shaped == {"address": {"city": "Oslo", "country": "NO"}, "zip": "0150"}

    def test_steps_run_in_order_fields_hash_rename_drop(self) -> None:
        """hash names the fetched path, drop the renamed one."""
        route = make_route(
            fields=["email", "givenName", "familyName"],
            hash=["email"],
            rename={"email": "contact.email_sha256", "familyName": "surname"},
            drop=["surname"],
        )

        shaped = shape_record(route, make_record())

        assert shaped == {"givenName": "Ann", "contact": {"email_sha256": _sha("ann@example.com")}}

    def test_drop_removes_nested_paths_and_the_objects_it_empties(self) -> None:
        """drop takes out a part of an object; an object left empty goes as well."""
        route = make_route(
            fields=["primaryAddress.city", "primaryAddress.zip", "uuid"],
            drop=["primaryAddress.zip", "primaryAddress.city"],
        )

        shaped = shape_record(route, make_record())

        assert shaped == {"uuid": UUID}


class TestShapeChanges:
    def test_changes_outside_fields_are_left_out(self) -> None:
        """Only changes a kept field covers are sent."""
        changes = {"email": Change("a", "b"), "familyName": Change("x", "y"), "primaryAddress.city": Change("o", "p")}

        shaped = shape_changes(make_route(fields=["email", "primaryAddress"]), changes)

        assert shaped == {"email": Change("a", "b"), "primaryAddress.city": Change("o", "p")}

    def test_hashed_paths_hash_old_and_new(self) -> None:
        """A change under a hashed path carries hashes, never the values."""
        changes = {"email": Change("old@x", "new@x"), "givenName": Change(None, "Ann", old_known=False)}

        shaped = shape_changes(make_route(hash=["email", "givenName"]), changes)

        assert shaped == {
            "email": Change(_sha("old@x"), _sha("new@x")),
            "givenName": Change(None, _sha("Ann"), old_known=False),
        }

    def test_renamed_and_dropped_like_the_record(self) -> None:
        """Change paths are renamed by prefix, and dropped under a drop path (named after renaming)."""
        changes = {
            "primaryAddress.city": Change("a", "b"),
            "primaryAddress.zip": Change("1", "2"),
            "email": Change("c", "d"),
        }
        route = make_route(rename={"primaryAddress": "address", "email": "mail"}, drop=["address.zip"])

        shaped = shape_changes(route, changes)

        assert shaped == {"address.city": Change("a", "b"), "mail": Change("c", "d")}

    def test_a_whole_object_change_is_cut_down_to_the_kept_field(self) -> None:
        """A change to a whole object keeps only the parts the route's fields keep."""
        old = {"city": "Oslo", "zip": "0150", "street": "Karl Johans gate 1"}
        new = {"city": "Bergen", "zip": "5003", "street": "Bryggen 2"}

        shaped = shape_changes(make_route(fields=["primaryAddress.city"]), {"primaryAddress": Change(old, new)})

        assert shaped == {"primaryAddress.city": Change("Oslo", "Bergen")}

    def test_a_part_that_did_not_change_is_not_a_change(self) -> None:
        """Cutting a whole-object change down leaves out kept parts whose value is the same."""
        old, new = {"city": "Oslo", "zip": "0150"}, {"city": "Oslo", "zip": "0151"}

        shaped = shape_changes(make_route(fields=["primaryAddress.city"]), {"primaryAddress": Change(old, new)})

        assert shaped == {}

    def test_a_part_of_a_whole_object_change_is_hashed_renamed_and_dropped(self) -> None:
        """Paths inside a whole-object change apply to its parts."""
        new = {"city": "Bergen", "zip": "5003", "street": "Bryggen 2"}
        route = make_route(
            hash=["primaryAddress.street"], rename={"primaryAddress.zip": "zip"}, drop=["primaryAddress.city"]
        )

        shaped = shape_changes(route, {"primaryAddress": Change(None, new, old_known=False)})

        assert shaped == {
            "primaryAddress.street": Change(None, _sha("Bryggen 2"), old_known=False),
            "zip": Change(None, "5003", old_known=False),
        }

    def test_old_is_omitted_when_not_known(self) -> None:
        """Changes from the attributes list render without old; a known null old is kept."""
        record = make_record()
        event = make_event(type="entityUpdated", attributes=["email"])
        known = Facts(event.to_dict(), record, changes={"email": Change(None, "ann@example.com")})
        unknown = Facts(event.to_dict(), record, changes=from_attributes(["email"], record))
        route = CompiledRoute.compile(make_route(fields=["email"]))

        with_old = build_payload(event, "crm", route, known)["changes"]
        new_only = build_payload(event, "crm", route, unknown)["changes"]

        assert with_old == {"email": {"old": None, "new": "ann@example.com"}}
        assert new_only == {"email": {"new": "ann@example.com"}}

    @pytest.mark.parametrize(
        "route",
        [
            pytest.param({"fields": ["uuid", "givenName"]}, id="fields"),
            pytest.param({"fields": ["uuid", "primaryAddress.city"]}, id="fields-inside-object"),
            pytest.param({"hash": ["familyName", "primaryAddress", "emails"], "drop": ["email"]}, id="hash-and-drop"),
            pytest.param(
                {"fields": ["familyName", "primaryAddress.zip"], "hash": ["familyName", "primaryAddress.zip"]},
                id="fields-hashed",
            ),
            pytest.param(
                {
                    "hash": ["familyName", "emails"],
                    "rename": {"primaryAddress.zip": "zip", "email": "e"},
                    "drop": ["zip", "e"],
                },
                id="renamed-then-dropped",
            ),
        ],
    )
    def test_no_value_outside_the_shaped_record_leaks_through_changes(self, route: dict[str, Any]) -> None:
        """Whatever the route hides in the record is not in the payload, changes included."""
        secrets = {"familyName": "SECRET-1", "email": "SECRET-2", "primaryAddress": {"zip": "SECRET-3"}}
        previous = make_record(
            givenName="Annie",
            familyName="SECRET-4",
            email="SECRET-5",
            primaryAddress={"city": "Oslo", "zip": "SECRET-6"},
            emails=[{"value": "SECRET-7"}],
        )
        record = make_record(**secrets, emails=[{"value": "SECRET-8"}])
        record["primaryAddress"]["city"] = "Bergen"
        event = make_event(type="entityUpdated", attributes=["primaryAddress", "familyName"])
        compiled = CompiledRoute.compile(make_route(**route))
        facts_by_diff = Facts(event.to_dict(), record, previous, diff(previous, record))
        whole_object = {"primaryAddress": Change(previous["primaryAddress"], record["primaryAddress"])}
        facts_by_object = Facts(event.to_dict(), record, previous, whole_object)
        facts_by_attributes = Facts(event.to_dict(), record, None, from_attributes(event.attributes, record))

        documents = [
            build_payload(event, "crm", compiled, facts)
            for facts in (facts_by_diff, facts_by_object, facts_by_attributes)
        ]

        for document in documents:
            text = orjson.dumps(document).decode()
            assert "SECRET" not in text, text
        assert any(document["changes"] for document in documents)


PROFILES: list[dict[str, Any]] = [
    {"domain": "facebook.com", "identifier": "fb-123", "accessCredentials": {"accessToken": "tok-1"}},
    {"domain": "google.com", "identifier": "g-456", "accessCredentials": {"accessToken": "tok-2"}},
]
OLD_PROFILES: list[dict[str, Any]] = [
    {"domain": "facebook.com", "identifier": "fb-000", "accessCredentials": {"accessToken": "tok-0"}},
]


class TestPlurals:
    def test_the_reported_route_hashes_and_drops_in_every_profile(self) -> None:
        """fields [profiles], hash profiles.identifier, drop profiles.accessCredentials: nothing raw is sent."""
        previous, record = make_record(profiles=OLD_PROFILES), make_record(profiles=PROFILES)
        event = make_event(type="entityUpdated")
        route = CompiledRoute.compile(
            make_route(fields=["profiles"], hash=["profiles.identifier"], drop=["profiles.accessCredentials"])
        )

        payload = build_payload(event, "crm", route, Facts(event.to_dict(), record, previous, diff(previous, record)))

        assert payload["record"] == {
            "profiles": [
                {"domain": "facebook.com", "identifier": _sha("fb-123")},
                {"domain": "google.com", "identifier": _sha("g-456")},
            ]
        }
        assert payload["changes"] == {
            "profiles": {
                "old": [{"domain": "facebook.com", "identifier": _sha("fb-000")}],
                "new": payload["record"]["profiles"],
            }
        }
        text = orjson.dumps(payload).decode()
        for raw in ("fb-123", "g-456", "fb-000", "tok-0", "tok-1", "tok-2", "accessCredentials"):
            assert raw not in text

    def test_fields_through_a_plural_keep_those_attributes_per_element(self) -> None:
        """fields [profiles.identifier] sends each profile's identifier and nothing else of it."""
        shaped = shape_record(make_route(fields=["uuid", "profiles.identifier"]), make_record(profiles=PROFILES))

        assert shaped == {"uuid": UUID, "profiles": [{"identifier": "fb-123"}, {"identifier": "g-456"}]}

    def test_hash_and_drop_apply_to_each_element_and_nested_plurals(self) -> None:
        """A path through two plurals reaches every element of both; an emptied element stays."""
        record: dict[str, Any] = {
            "profiles": [
                {"accounts": [{"name": "a", "token": "t1"}, {"name": "b", "token": "t2"}]},
                {"accounts": [{"token": "t3"}]},
            ]
        }
        route = make_route(hash=["profiles.accounts.name"], drop=["profiles.accounts.token"])

        shaped = shape_record(route, record)

        assert shaped == {"profiles": [{"accounts": [{"name": _sha("a")}, {"name": _sha("b")}]}, {"accounts": [{}]}]}

    def test_an_element_hashes_a_value_that_is_itself_an_object_whole(self) -> None:
        """Whatever is at the path in an element is hashed whole, so no part of it is sent."""
        shaped = shape_record(make_route(hash=["profiles.accessCredentials"]), {"profiles": PROFILES})

        assert shaped is not None
        assert [item["accessCredentials"] for item in shaped["profiles"]] == [
            hash_value({"accessToken": "tok-1"}),
            hash_value({"accessToken": "tok-2"}),
        ]

    @pytest.mark.parametrize(
        "profiles",
        [
            pytest.param("a string", id="scalar-plural"),
            pytest.param(["a string", 42, None], id="scalar-elements"),
            pytest.param([{"identifier": None}], id="null-value"),
        ],
    )
    def test_a_path_that_meets_a_scalar_leaves_it(self, profiles: Any) -> None:
        """A scalar where an object was expected is not at the path: hash and drop leave it alone."""
        route = make_route(hash=["profiles.identifier"], drop=["profiles.identifier.x"])

        shaped = shape_record(route, {"profiles": profiles})

        assert shaped == {"profiles": profiles}

    def test_rename_within_a_plural_moves_inside_each_element(self) -> None:
        """A new path through the same plural renames the attribute in every element."""
        route = make_route(
            fields=["profiles.identifier", "profiles.domain"], rename={"profiles.identifier": "profiles.id"}
        )

        shaped = shape_record(route, {"profiles": PROFILES})

        assert shaped == {
            "profiles": [{"domain": "facebook.com", "id": "fb-123"}, {"domain": "google.com", "id": "g-456"}]
        }

    def test_rename_out_of_a_plural_gathers_the_values_into_a_list(self) -> None:
        """A new path outside the plural gets the elements' values, in order, as one list."""
        record: dict[str, Any] = {"profiles": [*PROFILES, {"domain": "x.org"}]}
        route = make_route(fields=["profiles.identifier", "profiles.domain"], rename={"profiles.identifier": "ids"})

        shaped = shape_record(route, record)

        assert shaped == {
            "profiles": [{"domain": "facebook.com"}, {"domain": "google.com"}, {"domain": "x.org"}],
            "ids": ["fb-123", "g-456"],
        }

    def test_a_renamed_plural_keeps_the_renames_inside_it(self) -> None:
        """Renaming the plural and an attribute in it (by its old name) does both."""
        route = make_route(
            fields=["profiles.identifier"], rename={"profiles": "accounts", "profiles.identifier": "profiles.id"}
        )

        shaped = shape_record(route, {"profiles": PROFILES})

        assert shaped == {"accounts": [{"id": "fb-123"}, {"id": "g-456"}]}

    def test_renames_inside_a_plural_happen_at_once(self) -> None:
        """Two attributes of each element can swap names."""
        route = make_route(
            fields=["profiles.identifier", "profiles.domain"],
            rename={"profiles.identifier": "profiles.domain", "profiles.domain": "profiles.identifier"},
        )

        shaped = shape_record(route, {"profiles": PROFILES[:1]})

        assert shaped == {"profiles": [{"domain": "fb-123", "identifier": "facebook.com"}]}

    def test_a_plural_change_is_cut_down_to_the_fields_in_each_element(self) -> None:
        """A whole-plural change keeps only the listed attributes of each element, old and new."""
        changes = {"profiles": Change(OLD_PROFILES, PROFILES)}

        shaped = shape_changes(make_route(fields=["profiles.identifier"]), changes)

        assert shaped == {
            "profiles": Change([{"identifier": "fb-000"}], [{"identifier": "fb-123"}, {"identifier": "g-456"}])
        }

    def test_a_plural_change_outside_the_kept_attributes_is_no_change(self) -> None:
        """Only an attribute left out changed: after shaping nothing differs, so nothing is sent."""
        old = [{"identifier": "a", "accessCredentials": "t1"}]
        new = [{"identifier": "a", "accessCredentials": "t2"}]

        by_fields = shape_changes(make_route(fields=["profiles.identifier"]), {"profiles": Change(old, new)})
        by_drop = shape_changes(make_route(drop=["profiles.accessCredentials"]), {"profiles": Change(old, new)})

        assert by_fields == {}
        assert by_drop == {}

    def test_a_plural_change_is_hashed_and_dropped_per_element(self) -> None:
        """hash and drop inside a plural apply to each element of the old and the new list."""
        route = make_route(hash=["profiles.identifier"], drop=["profiles.accessCredentials"])

        shaped = shape_changes(route, {"profiles": Change(OLD_PROFILES, PROFILES)})

        assert shaped == {
            "profiles": Change(
                [{"domain": "facebook.com", "identifier": _sha("fb-000")}],
                [
                    {"domain": "facebook.com", "identifier": _sha("fb-123")},
                    {"domain": "google.com", "identifier": _sha("g-456")},
                ],
            )
        }

    def test_a_plural_change_with_unknown_old_keeps_new_only(self) -> None:
        """From an attributes list the plural changes with old unknown; shaping keeps that."""
        record = make_record(profiles=PROFILES)
        route = make_route(fields=["profiles.identifier"], hash=["profiles.identifier"])

        shaped = shape_changes(route, from_attributes(["profiles.identifier"], record))

        assert shaped == {
            "profiles": Change(None, [{"identifier": _sha("fb-123")}, {"identifier": _sha("g-456")}], old_known=False)
        }

    def test_a_plural_change_is_renamed_like_the_record(self) -> None:
        """Renames inside the plural apply per element; one out of it gathers; the plural's own applies."""
        route = make_route(
            fields=["profiles.identifier", "profiles.domain"],
            rename={"profiles": "accounts", "profiles.identifier": "profiles.id", "profiles.domain": "domains"},
        )

        shaped = shape_changes(route, {"profiles": Change(OLD_PROFILES, PROFILES)})
        record = shape_record(route, {"profiles": PROFILES})

        assert shaped == {
            "accounts": Change([{"id": "fb-000"}], [{"id": "fb-123"}, {"id": "g-456"}]),
            "domains": Change(["facebook.com"], ["facebook.com", "google.com"]),
        }
        assert record == {"accounts": [{"id": "fb-123"}, {"id": "g-456"}], "domains": ["facebook.com", "google.com"]}

    def test_a_plural_inside_a_whole_object_change_is_reached(self) -> None:
        """A whole-object change is split down to the plural, which is then shaped per element."""
        old = {"profiles": [{"identifier": "a", "token": "t1"}], "note": "n1"}
        new = {"profiles": [{"identifier": "b", "token": "t2"}], "note": "n2"}
        route = make_route(hash=["social.profiles.identifier"], drop=["social.profiles.token"])

        shaped = shape_changes(route, {"social": Change(old, new)})

        assert shaped == {
            "social.profiles": Change([{"identifier": _sha("a")}], [{"identifier": _sha("b")}]),
            "social.note": Change("n1", "n2"),
        }

    def test_a_scalar_where_a_plural_was_expected_is_not_kept_by_fields_inside_it(self) -> None:
        """fields [profiles.identifier] keeps no scalar value of profiles: it is not the identifier."""
        shaped = shape_changes(make_route(fields=["profiles.identifier"]), {"profiles": Change("raw-1", "raw-2")})

        assert shaped == {}
