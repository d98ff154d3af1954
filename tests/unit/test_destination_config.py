"""The destination types beyond HTTP, as the config file states them: what is accepted, what is
refused with which key path, and that no credential is repeated in an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.destination_config import (
    DESTINATION_TYPES,
    AmqpDestination,
    KafkaDestination,
    NatsDestination,
    PostgresDestination,
    RedisStreamDestination,
)
from service.secret import Secret
from service.settings import ConfigError, from_mapping

POSTGRES = {"type": "postgres", "dsn": "postgresql://relay:pw@db:5432/app", "table": "capture_profiles"}
STREAM = {"type": "redis_stream", "stream": "capture.profile-events"}
AMQP = {"type": "amqp", "url": "amqp://relay:pw@rabbit:5672/%2F", "exchange": "capture"}
NATS = {"type": "nats", "url": "nats://relay:pw@nats:4222"}
KAFKA = {"type": "kafka", "bootstrap_servers": "kafka-0:9092", "topic": "capture.profiles"}


def _destination(section: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return from_mapping({"destinations": {"target": section}}, environ or {}).destinations["target"]


def _problems(section: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"destinations": {"target": section}}, {})
    return caught.value.problems


class TestAccepted:
    def test_a_postgres_mirror_with_its_defaults(self) -> None:
        destination = _destination(POSTGRES)

        assert isinstance(destination, PostgresDestination)
        assert destination.deletes == "soft"
        assert destination.dsn == Secret("postgresql://relay:pw@db:5432/app")
        assert "pw" not in repr(destination)

    def test_a_schema_qualified_table(self) -> None:
        assert _destination({**POSTGRES, "table": "mirror.capture_profiles"}).table == "mirror.capture_profiles"

    def test_a_redis_stream_defaults_to_no_url_of_its_own(self) -> None:
        destination = _destination(STREAM)

        assert isinstance(destination, RedisStreamDestination)
        assert destination.url is None
        assert destination.maxlen == 1_000_000
        assert destination.dedup_window == 7 * 86400

    def test_amqp_routing_key_may_name_the_event_type(self) -> None:
        destination = _destination({**AMQP, "routing_key": "profiles.{entity_type}.{event_type}"})

        assert isinstance(destination, AmqpDestination)
        assert destination.mandatory is True
        assert destination.routing_key == "profiles.{entity_type}.{event_type}"

    def test_nats_with_its_default_subject(self) -> None:
        destination = _destination(NATS)

        assert isinstance(destination, NatsDestination)
        assert destination.subject == "capture.{event_type}"

    def test_kafka_takes_one_server_or_several_and_secret_options(self) -> None:
        destination = _destination(
            {**KAFKA, "bootstrap_servers": ["k0:9092", "k1:9092"], "options": {"sasl.password": "${KAFKA_PW}"}},
            {"KAFKA_PW": "s3cret"},
        )

        assert isinstance(destination, KafkaDestination)
        assert destination.bootstrap_servers == ["k0:9092", "k1:9092"]
        assert destination.options["sasl.password"] == Secret("s3cret")
        assert "s3cret" not in repr(destination)

    def test_every_type_has_the_delivery_knobs(self) -> None:
        for section in (POSTGRES, STREAM, AMQP, NATS, KAFKA):
            destination = _destination({**section, "timeout": "3s", "rate_limit": "10/s", "schedule": [0, "5s"]})

            assert (destination.timeout, destination.rate_limit, destination.schedule) == (3.0, 10.0, [0.0, 5.0])


class TestRefused:
    @pytest.mark.parametrize(
        "table",
        ["Capture", "capture-profiles", "a.b.c", "x; DROP TABLE users", '"quoted"', "1table", "a" * 64],
    )
    def test_a_table_name_that_would_need_quoting(self, table: str) -> None:
        [(path, _)] = _problems({**POSTGRES, "table": table})

        assert path == "destinations.target.table"

    def test_deletes_is_soft_or_hard(self) -> None:
        [(path, problem)] = _problems({**POSTGRES, "deletes": "sometimes"})

        assert path == "destinations.target.deletes"
        assert "'soft'" in problem
        assert "'hard'" in problem

    def test_a_template_names_only_delivery_fields(self) -> None:
        [(path, problem)] = _problems({**AMQP, "routing_key": "capture.{record}"})

        assert path == "destinations.target.routing_key"
        assert "{record}" in problem
        assert "{event_type}" in problem

    def test_a_broken_template(self) -> None:
        [(path, problem)] = _problems({**NATS, "subject": "capture.{event_type"})

        assert path == "destinations.target.subject"
        assert "not a valid template" in problem

    @pytest.mark.parametrize(
        ("section", "scheme"),
        [(AMQP, "amqp://"), (NATS, "nats://")],
    )
    def test_a_broker_url_of_another_kind_is_refused_without_repeating_it(
        self, section: dict[str, Any], scheme: str
    ) -> None:
        [(path, problem)] = _problems({**section, "url": "https://relay:hunter2@elsewhere"})

        assert path == "destinations.target.url"
        assert scheme in problem
        assert "hunter2" not in problem

    def test_kafka_options_may_not_weaken_the_delivery_guarantees(self) -> None:
        [(path, problem)] = _problems({**KAFKA, "options": {"acks": "1", "enable.idempotence": "false"}})

        assert path == "destinations.target"
        assert "acks, enable.idempotence" in problem

    def test_kafka_options_may_not_change_how_records_are_partitioned(self) -> None:
        # One profile's changes stay in one partition, in order, only with the default partitioner.
        [(path, problem)] = _problems({**KAFKA, "options": {"partitioner": "random"}})

        assert path == "destinations.target"
        assert "partitioner" in problem

    @pytest.mark.parametrize(
        "subject",
        ["cap ture.{event_type}", "capture..{event_type}", "capture.*", "capture.>", ".{event_type}", "{event_type}."],
    )
    def test_a_subject_nats_would_refuse_or_that_is_a_wildcard(self, subject: str) -> None:
        [(path, _)] = _problems({**NATS, "subject": subject})

        assert path == "destinations.target.subject"

    def test_a_stream_name_with_a_hash_tag(self) -> None:
        # The dedup marker shares the stream's cluster slot through a {hash tag} of its own.
        [(path, _)] = _problems({**STREAM, "stream": "{events}"})

        assert path == "destinations.target.stream"

    def test_a_key_of_another_type_names_the_keys_of_this_one(self) -> None:
        [(path, problem)] = _problems({**POSTGRES, "stream": "x"})

        assert path == "destinations.target.stream"
        assert "dsn" in problem
        assert "table" in problem

    def test_a_missing_dsn(self) -> None:
        section = {key: value for key, value in POSTGRES.items() if key != "dsn"}

        assert _problems(section) == [("destinations.target.dsn", "field required")]


def test_the_config_reference_documents_every_key_of_every_type() -> None:
    reference = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name, model in DESTINATION_TYPES.items():
        assert f"`{name}`" in reference
        for key in model.model_fields:
            assert f"| `destinations.<name>.{key}` |" in reference, f"{name}.{key} is not in docs/configuration.md"
