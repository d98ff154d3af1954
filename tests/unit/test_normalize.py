"""event_from_claims and events_from_legacy: the Event envelope built from each webhook flavour."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.normalize import event_from_claims, events_from_legacy
from service.verify.errors import MalformedDeliveryError
from tests.support.tokens import RECORD_UUID, claims

NOW = 1_714_566_896
RECEIVED = NOW + 5.0
NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _element(**overrides: Any) -> dict[str, Any]:
    return {
        "uuid": RECORD_UUID,
        "datetime": "2024-05-01 12:34:56.123456 +0000",
        "entityType": "user",
        "hash": "1234567891234567891234567891234567891234",
        **overrides,
    }


def _with_event(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Claims whose single event body has ``changes`` applied (a value of None removes the field)."""
    ((event_type, body),) = payload["events"].items()
    merged = {**body, **changes}
    return {**payload, "events": {event_type: {k: v for k, v in merged.items() if v is not None}}}


class TestEventFromClaims:
    def test_entity_updated_fields(self) -> None:
        """Every envelope field comes from the claim or event field the protocol defines."""
        payload = claims(now=NOW, toe=NOW - 30)
        body = payload["events"]["entityUpdated"]

        event = event_from_claims(payload, received_at=RECEIVED)

        assert event.event_id == body["id"]
        assert event.delivery_id == payload["jti"]
        assert (event.source, event.type, event.entity_type) == ("v3", "entityUpdated", "user")
        assert event.uuid == RECORD_UUID
        assert event.attributes == ("email", "primaryAddress.city")
        assert (event.application_id, event.client_id) == (body["captureApplicationId"], body["captureClientId"])
        assert (event.occurred_at, event.received_at) == (float(NOW - 30), RECEIVED)

    def test_occurred_at_falls_back_to_iat_without_toe(self) -> None:
        """Without toe, the time of the event is taken from iat."""
        payload = {key: value for key, value in claims(now=NOW).items() if key != "toe"}

        event = event_from_claims(payload, received_at=RECEIVED)

        assert event.occurred_at == float(NOW)

    @pytest.mark.parametrize("event_id", [NIL_UUID, "", None, 17], ids=["nil-uuid", "empty", "absent", "number"])
    def test_unusable_event_id_falls_back_to_jti(self, event_id: object) -> None:
        """The oldest sample carries a nil id; the unique jti then stands in as event id."""
        payload = _with_event(claims(now=NOW), id=event_id)

        event = event_from_claims(payload, received_at=RECEIVED)

        assert event.event_id == payload["jti"]

    @pytest.mark.parametrize("event_type", ["entityCreated", "entityDeleted", "userCredentialUpdated"])
    def test_events_without_attributes_have_none(self, event_type: str) -> None:
        """Only entityUpdated lists changed attributes; other types get an empty tuple."""
        payload = claims(event_type, now=NOW)

        event = event_from_claims(payload, received_at=RECEIVED)

        assert (event.type, event.uuid, event.attributes) == (event_type, RECORD_UUID, ())

    def test_test_event_without_sub_is_accepted(self) -> None:
        """A test event names no record: the envelope has an empty uuid and no entity type."""
        payload = claims("test", now=NOW)

        event = event_from_claims(payload, received_at=RECEIVED)

        assert (event.type, event.uuid, event.entity_type) == ("test", "", None)
        assert event.event_id == payload["events"]["test"]["id"]

    def test_unknown_event_type_is_passed_on(self) -> None:
        """A type Akamai adds later is acknowledged and carried as is."""
        payload = claims(now=NOW, events={"entityMerged": {"id": "e-1", "sub": RECORD_UUID}})

        event = event_from_claims(payload, received_at=RECEIVED)

        assert (event.type, event.uuid, event.event_id) == ("entityMerged", RECORD_UUID, "e-1")

    @pytest.mark.parametrize("event_type", ["entityCreated", "entityUpdated", "entityDeleted"])
    @pytest.mark.parametrize("sub", [None, "", 42, "u" * 129], ids=["absent", "empty", "number", "overlong"])
    def test_record_event_without_a_usable_sub_is_malformed(self, event_type: str, sub: object) -> None:
        """A record event must name its record's uuid in sub."""
        payload = _with_event(claims(event_type, now=NOW), sub=sub)

        with pytest.raises(MalformedDeliveryError) as caught:
            event_from_claims(payload, received_at=RECEIVED)

        assert caught.value.reason == "claims_malformed"
        assert f"events.{event_type}.sub" in caught.value.detail

    @pytest.mark.parametrize(
        "attributes", ["email", ["email", 3], {"email": True}], ids=["string", "list-with-number", "object"]
    )
    def test_attributes_not_a_list_of_strings_is_malformed(self, attributes: object) -> None:
        """attributes must be a list of attribute paths."""
        payload = _with_event(claims(now=NOW), attributes=attributes)

        with pytest.raises(MalformedDeliveryError) as caught:
            event_from_claims(payload, received_at=RECEIVED)

        assert caught.value.reason == "claims_malformed"
        assert "events.entityUpdated.attributes" in caught.value.detail


class TestEventsFromLegacy:
    def test_one_event_per_element(self) -> None:
        """Each element becomes one legacy envelope for its uuid, with time and schema."""
        batch = [
            _element(),
            _element(uuid="726087ec-35df-4041-aec8-c11ecc208efa", datetime="2024-05-01 12:34:57 +0000"),
        ]

        events = events_from_legacy(batch, received_at=RECEIVED)

        assert [(event.source, event.uuid, event.entity_type) for event in events] == [
            ("legacy", RECORD_UUID, "user"),
            ("legacy", "726087ec-35df-4041-aec8-c11ecc208efa", "user"),
        ]
        assert [event.occurred_at for event in events] == [
            datetime(2024, 5, 1, 12, 34, 56, 123456, tzinfo=UTC).timestamp(),
            datetime(2024, 5, 1, 12, 34, 57, tzinfo=UTC).timestamp(),
        ]
        assert all(event.received_at == RECEIVED for event in events)

    def test_same_element_twice_gets_the_same_delivery_id(self) -> None:
        """Janrain's retry of a batch yields the same ids, so the retry is recognised as a duplicate."""
        first = events_from_legacy([_element()], received_at=RECEIVED)[0]

        again = events_from_legacy([_element()], received_at=RECEIVED + 10)[0]

        assert again.delivery_id == first.delivery_id
        assert again.event_id == first.event_id == first.delivery_id

    @pytest.mark.parametrize(
        "change",
        [
            {"uuid": "726087ec-35df-4041-aec8-c11ecc208efa"},
            {"datetime": "2024-05-01 12:34:56.123457 +0000"},
            {"entityType": "admin"},
            {"action": "delete"},
        ],
        ids=["other-uuid", "other-time", "other-schema", "other-action"],
    )
    def test_different_elements_get_different_delivery_ids(self, change: dict[str, Any]) -> None:
        """Elements that differ in record, time, schema or action are separate deliveries."""
        first = events_from_legacy([_element()], received_at=RECEIVED)[0]

        other = events_from_legacy([_element(**change)], received_at=RECEIVED)[0]

        assert other.delivery_id != first.delivery_id

    def test_hash_does_not_change_the_delivery_id(self) -> None:
        """A rotated callback hash does not make a retried element look new."""
        first = events_from_legacy([_element()], received_at=RECEIVED)[0]

        other = events_from_legacy([_element(hash="abcdefabcdefabcdefabcdefabcdefabcdefabcd")], received_at=RECEIVED)[0]

        assert other.delivery_id == first.delivery_id

    def test_element_without_timestamp_gets_a_new_id_each_time(self) -> None:
        """Without a timestamp two real updates look identical, so each element is its own delivery."""
        element = {"uuid": RECORD_UUID}

        ids = {events_from_legacy([element], received_at=RECEIVED)[0].delivery_id for _ in range(5)}

        assert len(ids) == 5

    @pytest.mark.parametrize("key", ["datetime", "dateTime", "timestamp"])
    def test_timestamp_spellings_are_recognised(self, key: str) -> None:
        """Any of the guessed timestamp keys makes the id stable and sets occurred_at."""
        element = {"uuid": RECORD_UUID, key: "2024-05-01 12:34:56 +0000"}

        first, again = (events_from_legacy([element], received_at=RECEIVED)[0] for _ in range(2))

        assert first.delivery_id == again.delivery_id
        assert first.occurred_at == datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC).timestamp()

    def test_unparseable_timestamp_leaves_occurred_at_unset(self) -> None:
        """A timestamp in an unknown layout still identifies the element but gives no time."""
        element = _element(datetime="May 1st, 2024")

        event = events_from_legacy([element], received_at=RECEIVED)[0]

        assert event.occurred_at is None

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            pytest.param({}, "entityUpdated", id="no-action"),
            pytest.param({"action": "add"}, "entityCreated", id="add"),
            pytest.param({"action": "ADD"}, "entityCreated", id="add-upper-case"),
            pytest.param({"action": "create"}, "entityCreated", id="create"),
            pytest.param({"event_type": "update"}, "entityUpdated", id="event_type-update"),
            pytest.param({"eventType": "delete"}, "entityDeleted", id="eventType-delete"),
            pytest.param({"event": "entityDeleted"}, "entityDeleted", id="event-entityDeleted"),
            pytest.param({"action": "deleted"}, "entityDeleted", id="deleted"),
            pytest.param({"action": "merge"}, "entityUpdated", id="unknown-action"),
            pytest.param({"action": ""}, "entityUpdated", id="empty-action"),
            pytest.param({"action": 3}, "entityUpdated", id="non-string-action"),
        ],
    )
    def test_action_mapping(self, fields: dict[str, Any], expected: str) -> None:
        """Recognised action spellings map to v3 types; anything else is handled as an update."""
        element = _element(**fields)

        event = events_from_legacy([element], received_at=RECEIVED)[0]

        assert event.type == expected

    def test_entity_type_spellings_are_recognised(self) -> None:
        """entity_type is accepted as well as entityType; without either the schema is unknown."""
        batch = [{"uuid": RECORD_UUID, "entity_type": "user"}, {"uuid": RECORD_UUID}]

        events = events_from_legacy(batch, received_at=RECEIVED)

        assert [event.entity_type for event in events] == ["user", None]
