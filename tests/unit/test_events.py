"""The Event envelope: its JSON form and the RQ job id derived from the event id."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from service.events import Event, job_id_for

RQ_JOB_ID = re.compile(r"^[A-Za-z0-9_-]+$")


BASE_EVENT = Event(
    event_id="e0a70b4f-1eef-4856-bcdb-f050fee66aae",
    delivery_id="0a3b5f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
    source="v3",
    type="entityUpdated",
    entity_type="user",
    uuid="6b004bc5-179c-45c2-815d-31b06169371d",
    attributes=("primaryAddress.city", "primaryAddress.state"),
    application_id="zzyn9gy9r8xdy5zkru4y54syk6",
    client_id="elrrniux51a3nrhfwzklvz3t46lb5n2m",
    occurred_at=1714566896.0,
    received_at=1714566900.5,
)


def _event(**overrides: Any) -> Event:
    return dataclasses.replace(BASE_EVENT, **overrides)


class TestJobIdFor:
    @pytest.mark.parametrize(
        "event_id", ["e0a70b4f-1eef-4856-bcdb-f050fee66aae", "abc_DEF-123", "x" * 64], ids=["uuid", "mixed", "max-len"]
    )
    def test_safe_ids_are_used_as_they_are(self, event_id: str) -> None:
        """An id of rq-safe characters, up to 64 long, is kept readable in the job id."""
        source = "v3"

        job_id = job_id_for(source, event_id)

        assert job_id == f"event-v3-{event_id}"

    @pytest.mark.parametrize(
        "event_id",
        ["has:colon", "has/slash", "has space", "caf\u00e9", "x" * 65, ""],
        ids=["colon", "slash", "space", "non-ascii", "too-long", "empty"],
    )
    def test_other_ids_are_hashed_into_safe_characters(self, event_id: str) -> None:
        """Ids with characters rq refuses, or too long, become a digest: safe, stable and of fixed length."""
        source = "legacy"

        job_id = job_id_for(source, event_id)

        assert RQ_JOB_ID.match(job_id)
        assert re.fullmatch(r"event-legacy-h[0-9a-f]{40}", job_id)
        assert job_id == job_id_for(source, event_id)

    def test_long_ids_are_hashed_not_truncated(self) -> None:
        """Two long ids sharing their first 64 characters still get different job ids."""
        common = "x" * 64

        first, second = job_id_for("v3", common + "a"), job_id_for("v3", common + "b")

        assert first != second

    def test_source_is_part_of_the_job_id(self) -> None:
        """The same id from the two webhook flavours never collides."""
        event_id = "e-1"

        ids = {job_id_for("v3", event_id), job_id_for("legacy", event_id)}

        assert ids == {"event-v3-e-1", "event-legacy-e-1"}

    def test_event_job_id_uses_its_source_and_event_id(self) -> None:
        """Event.job_id is job_id_for(source, event_id)."""
        event = _event(source="legacy", event_id="0f1e2d3c4b5a69788796a5b4c3d2e1f0")

        job_id = event.job_id

        assert job_id == "event-legacy-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


class TestEventDict:
    def test_round_trip_through_to_dict(self) -> None:
        """from_dict(to_dict()) gives back an equal event."""
        event = _event()

        rebuilt = Event.from_dict(event.to_dict())

        assert rebuilt == event

    def test_to_dict_is_json_shaped(self) -> None:
        """attributes become a list, so the dict survives JSON unchanged."""
        event = _event()

        data = event.to_dict()

        assert data["attributes"] == ["primaryAddress.city", "primaryAddress.state"]
        assert data["source"] == "v3"
