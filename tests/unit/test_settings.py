"""settings.load and settings.from_mapping: defaults, interpolation, and errors that name the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.secret import Secret
from service.settings import ConfigError, Settings, from_mapping, load

JWKS_URL = "https://v1.api.us.janrain.com/b18fc81d-457e-4a40-ac87-2b78bd946fa2/login/jwk"


def _v3(**overrides: Any) -> dict[str, Any]:
    return {"sources": {"v3": {"jwks_url": JWKS_URL, **overrides}}}


def _problems(data: dict[str, Any], environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        from_mapping(data, environ or {})
    return caught.value.problems


class TestDefaults:
    def test_empty_config_gives_the_documented_defaults(self) -> None:
        """An empty mapping is a valid configuration with every default in place."""
        data: dict[str, Any] = {}

        settings = from_mapping(data, {})

        assert settings.redis_url.reveal() == "redis://localhost:6379/0"
        assert (settings.sources.v3, settings.sources.legacy) == (None, None)
        assert (settings.ingest.queue, settings.ingest.max_body_size) == ("capture-events", 64 * 1024)
        assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8000)
        assert (settings.logging.level, settings.logging.format) == ("info", "json")

    def test_v3_defaults(self) -> None:
        """max_age is 48 h, the cool-down 30 s and the cache ttl 1 h unless configured."""
        data = _v3()

        v3 = from_mapping(data, {}).sources.v3

        assert v3 is not None
        assert (v3.max_age, v3.clock_skew, v3.jwks_refresh_cooldown, v3.jwks_cache_ttl, v3.jwks_timeout) == (
            172800.0,
            60.0,
            30.0,
            3600.0,
            5.0,
        )

    def test_durations_and_sizes_in_operator_units(self) -> None:
        """Durations and sizes may be written as 36h, 5m, 250ms, 1MiB."""
        data = {
            **_v3(max_age="36h", jwks_refresh_cooldown="5m", jwks_timeout="250ms"),
            "ingest": {"max_body_size": "1MiB"},
        }

        settings = from_mapping(data, {})

        assert settings.sources.v3 is not None
        assert (settings.sources.v3.max_age, settings.sources.v3.jwks_refresh_cooldown) == (129600.0, 300.0)
        assert settings.sources.v3.jwks_timeout == 0.25
        assert settings.ingest.max_body_size == 1024 * 1024

    @pytest.mark.parametrize(("value", "expected"), [("https://a/iss", ["https://a/iss"]), (["a", "b"], ["a", "b"])])
    def test_issuer_and_audience_take_one_or_many(self, value: object, expected: list[str]) -> None:
        """issuer and audience accept a string or a list of strings."""
        data = _v3(issuer=value, audience=value)

        v3 = from_mapping(data, {}).sources.v3

        assert v3 is not None
        assert (v3.issuer, v3.audience) == (expected, expected)

    def test_dedup_ttl_defaults_to_max_age_plus_an_hour(self) -> None:
        """A delivery id is remembered for max_age + 1 h unless configured."""
        data = _v3(max_age="10h")

        settings = from_mapping(data, {})

        assert settings.dedup_window == 11 * 3600.0

    def test_dedup_ttl_at_least_max_age_is_accepted(self) -> None:
        """A configured dedup_ttl equal to max_age is kept."""
        data = {**_v3(max_age="10h"), "ingest": {"dedup_ttl": "10h"}}

        settings = from_mapping(data, {})

        assert settings.dedup_window == 10 * 3600.0

    def test_settings_are_frozen(self) -> None:
        """Settings cannot be changed after validation."""
        settings = from_mapping({}, {})

        with pytest.raises(ValueError, match="frozen"):
            settings.server.port = 1

        assert settings.server.port == 8000


class TestErrors:
    def test_missing_field_names_its_key_path(self) -> None:
        """A required field that is absent is reported as 'sources.v3.jwks_url: field required'."""
        data: dict[str, Any] = {"sources": {"v3": {"issuer": "x"}}}

        problems = _problems(data)

        assert problems == [("sources.v3.jwks_url", "field required")]

    def test_unknown_key_lists_the_known_keys(self) -> None:
        """A misspelt key is named, with the keys that are allowed at that level."""
        data = _v3(max_agee="1h")

        problems = _problems(data)

        assert problems == [
            (
                "sources.v3.max_agee",
                "unknown key; known keys here: audience, clock_skew, issuer, jwks_cache_ttl, "
                "jwks_refresh_cooldown, jwks_timeout, jwks_url, max_age",
            )
        ]

    def test_unknown_top_level_key_lists_the_sections(self) -> None:
        """At the top level the known keys are the sections."""
        data: dict[str, Any] = {"sorces": {}}

        problems = _problems(data)

        assert problems == [
            (
                "sorces",
                "unknown key; known keys here: capture, delivery, destinations, ingest, logging, redis_url, routes, "
                "server, sources, webhooks, worker",
            )
        ]

    def test_bad_duration_says_what_is_accepted(self) -> None:
        """A duration that cannot be read is named with its value and the accepted forms."""
        data = _v3(max_age="2 days")

        problems = _problems(data)

        assert problems == [
            (
                "sources.v3.max_age",
                "'2 days' is not a duration; use a number of seconds or N followed by ms, s, m, h or d",
            )
        ]

    def test_bad_size_says_what_is_accepted(self) -> None:
        """A size in an unknown unit is named with the accepted units."""
        data = {"ingest": {"max_body_size": "64 kb"}}

        problems = _problems(data)

        assert problems == [
            ("ingest.max_body_size", "'64 kb' is not a size; use bytes or N followed by B, KiB, MiB, KB or MB")
        ]

    @pytest.mark.parametrize(
        ("data", "key_path"),
        [
            pytest.param(_v3(max_age=None), "sources.v3.max_age", id="duration-null"),
            pytest.param(_v3(clock_skew=[60]), "sources.v3.clock_skew", id="duration-list"),
            pytest.param({"ingest": {"retry_after": {"s": 30}}}, "ingest.retry_after", id="duration-mapping"),
            pytest.param({"ingest": {"max_body_size": 1.5}}, "ingest.max_body_size", id="size-float"),
            pytest.param({"ingest": {"max_body_size": None}}, "ingest.max_body_size", id="size-null"),
        ],
    )
    def test_wrong_yaml_type_for_a_duration_or_size_is_a_config_error(
        self, data: dict[str, Any], key_path: str
    ) -> None:
        """null, a list, a mapping or a float where a duration or size belongs is reported, not a crash."""
        problems = _problems(data)

        assert [path for path, _ in problems] == [key_path]

    def test_dedup_ttl_shorter_than_max_age_is_refused_naming_the_key(self) -> None:
        """dedup_ttl below max_age would accept a retried delivery twice; the error names ingest.dedup_ttl."""
        data = {**_v3(max_age="48h"), "ingest": {"dedup_ttl": "1h"}}

        problems = _problems(data)

        assert len(problems) == 1
        assert problems[0][0] == "ingest.dedup_ttl"
        assert "sources.v3.max_age" in problems[0][1]

    def test_every_problem_is_reported_at_once(self) -> None:
        """All problems of the file are listed, one line each, not only the first."""
        data = {"sources": {"v3": {"max_age": "soon"}}, "server": {"port": 70000}, "logging": {"level": "loud"}}

        with pytest.raises(ConfigError) as caught:
            from_mapping(data, {})

        lines = str(caught.value).splitlines()
        assert [line.split(":", 1)[0] for line in lines] == [
            "sources.v3.jwks_url",
            "sources.v3.max_age",
            "server.port",
            "logging.level",
        ]

    @pytest.mark.parametrize(
        ("data", "key_path"),
        [
            pytest.param(_v3(issuer=[1]), "sources.v3.issuer[0]", id="list-element"),
            pytest.param(
                {"sources": {"legacy": {"callback_hashes": ["ok", ""]}}},
                "sources.legacy.callback_hashes[1]",
                id="secret-in-list",
            ),
            pytest.param({"sources": {"v3": {"jwks_url": "ftp://x/jwk"}}}, "sources.v3.jwks_url", id="url-scheme"),
            pytest.param(
                {"sources": {"legacy": {"basic_auth": {"username": ""}}}},
                "sources.legacy.basic_auth.username",
                id="nested",
            ),
            pytest.param({"ingest": {"queue": "has space"}}, "ingest.queue", id="pattern"),
        ],
    )
    def test_nested_problems_name_the_full_path(self, data: dict[str, Any], key_path: str) -> None:
        """Paths go through mappings (a.b) and lists (a[0]), without pydantic's validator names."""
        problems = _problems(data)

        assert key_path in [path for path, _ in problems]
        assert not any("function-" in path or "is-instance" in path for path, _ in problems)

    def test_secret_values_are_not_repeated_in_errors(self) -> None:
        """An error about a secret field never quotes the value given."""
        data = {"redis_url": "redis://:hunter2@redis:6379/0", "server": {"port": "hunter2"}}

        with pytest.raises(ConfigError) as caught:
            from_mapping(data, {})

        assert "hunter2" not in str(caught.value)


class TestInterpolation:
    def test_variables_and_defaults_are_resolved(self) -> None:
        """${VAR} takes the environment value and ${VAR:-default} falls back when unset."""
        data = {
            "redis_url": "redis://:${REDIS_PASSWORD}@${REDIS_HOST:-localhost}:6379/0",
            "server": {"port": "${PORT:-9000}"},
        }

        settings = from_mapping(data, {"REDIS_PASSWORD": "pw"})

        assert settings.redis_url.reveal() == "redis://:pw@localhost:6379/0"
        assert settings.server.port == 9000

    def test_missing_variable_names_the_key_path(self) -> None:
        """An unset variable without default is reported where it is used, with the fix."""
        data = {"sources": {"legacy": {"callback_hashes": ["${HASH_OLD}", "${HASH_NEW}"]}}}

        problems = _problems(data, {"HASH_OLD": "a" * 40})

        assert problems == [
            (
                "sources.legacy.callback_hashes[1]",
                "environment variable HASH_NEW is not set; set it or write ${HASH_NEW:-default}",
            )
        ]

    def test_file_secret_is_read(self, tmp_path: Path) -> None:
        """${file:/path} reads a mounted secret, without its trailing newline."""
        secret_file = tmp_path / "callback-hash"
        secret_file.write_text("1234567891234567891234567891234567891234\n", encoding="utf-8")
        data = {"sources": {"legacy": {"callback_hashes": [f"${{file:{secret_file}}}"]}}}

        settings = from_mapping(data, {})

        assert settings.sources.legacy is not None
        assert [h.reveal() for h in settings.sources.legacy.callback_hashes] == [
            "1234567891234567891234567891234567891234"
        ]

    def test_unreadable_file_secret_names_the_key_path(self, tmp_path: Path) -> None:
        """A secret file that cannot be read is reported at the key that names it."""
        data = {"redis_url": f"${{file:{tmp_path / 'absent'}}}"}

        problems = _problems(data)

        assert [path for path, _ in problems] == ["redis_url"]
        assert "cannot read secret file" in problems[0][1]

    def test_double_dollar_escapes_a_reference(self) -> None:
        """$${ writes a literal ${ and reads no variable."""
        data = {"sources": {"legacy": {"callback_hashes": ["$${NOT_A_VAR}"]}}}

        settings = from_mapping(data, {"NOT_A_VAR": "resolved"})

        assert settings.sources.legacy is not None
        assert settings.sources.legacy.callback_hashes[0].reveal() == "${NOT_A_VAR}"

    def test_environment_cannot_inject_yaml_structure(self, tmp_path: Path) -> None:
        """A value containing YAML syntax stays one string; it cannot add keys or sections."""
        path = tmp_path / "capture-relay.yaml"
        path.write_text("redis_url: ${REDIS_URL}\nserver:\n  port: 8000\n", encoding="utf-8")
        hostile = "redis://x:6379/0\nsources:\n  legacy:\n    callback_hashes: [pwned]\nserver: {port: 1}"

        settings = load(path, {"REDIS_URL": hostile})

        assert settings.redis_url.reveal() == hostile
        assert settings.sources.legacy is None
        assert settings.server.port == 8000


class TestLoad:
    def test_reads_yaml_and_the_environment(self, tmp_path: Path) -> None:
        """load() parses the file and interpolates from the environ it is given, not os.environ."""
        path = tmp_path / "capture-relay.yaml"
        path.write_text(f"sources:\n  v3:\n    jwks_url: {JWKS_URL}\n    max_age: ${{MAX_AGE}}\n", encoding="utf-8")

        settings = load(path, {"MAX_AGE": "24h"})

        assert settings.sources.v3 is not None
        assert settings.sources.v3.max_age == 86400.0

    def test_on_is_a_key_and_no_is_a_word(self, tmp_path: Path) -> None:
        """YAML 1.2 booleans: a route's ``on:`` stays a key and ``NO`` stays text (PyYAML's 1.1 rules
        would read them as True and False)."""
        path = tmp_path / "routes.yaml"
        path.write_text(
            "capture: {base_url: 'https://app.example.com', client_id: c, client_secret: s}\n"
            "destinations: {crm: {type: http, url: 'https://crm.example.com/hooks'}}\n"
            "routes:\n"
            "  - name: norway\n"
            "    on: [entityUpdated]\n"
            '    when: record.country == `"NO"`\n'
            "    to: [crm]\n"
            "    entity_type: NO\n",
            encoding="utf-8",
        )

        settings = load(path, {})

        assert settings.routes[0].on == ["entityUpdated"]
        assert settings.routes[0].entity_type == ["NO"]

    def test_empty_file_gives_defaults(self, tmp_path: Path) -> None:
        """An empty file is the default configuration."""
        path = tmp_path / "empty.yaml"
        path.write_text("", encoding="utf-8")

        settings = load(path, {})

        assert settings == Settings()

    def test_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        """A path that does not exist is reported with the path and the reason."""
        path = tmp_path / "nope.yaml"

        with pytest.raises(ConfigError) as caught:
            load(path, {})

        assert caught.value.problems == [(str(path), "cannot read the config file: No such file or directory")]

    def test_invalid_yaml_names_the_line(self, tmp_path: Path) -> None:
        """Broken YAML is reported with its line and column."""
        path = tmp_path / "broken.yaml"
        path.write_text("sources:\n  v3: {jwks_url: [\n", encoding="utf-8")

        with pytest.raises(ConfigError) as caught:
            load(path, {})

        ((where, problem),) = caught.value.problems
        assert where == str(path)
        assert problem.startswith("not valid YAML at line ")

    @pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"], ids=["list", "string", "number"])
    def test_top_level_that_is_not_a_mapping_is_a_config_error(self, tmp_path: Path, text: str) -> None:
        """The document must be a mapping of keys to values."""
        path = tmp_path / "list.yaml"
        path.write_text(text, encoding="utf-8")

        with pytest.raises(ConfigError) as caught:
            load(path, {})

        assert caught.value.problems == [(str(path), "the top level must be a mapping of keys to values")]

    def test_secret_fields_are_masked_in_the_settings_repr(self) -> None:
        """repr(settings) shows no secret: not the Redis password, not a hash, not a Basic password."""
        data = {
            "redis_url": "redis://:redis-pw-123@redis:6379/0",
            "sources": {
                "legacy": {
                    "callback_hashes": ["hash-value-456"],
                    "basic_auth": {"username": "capture", "password": "basic-pw-789"},
                }
            },
        }

        text = repr(from_mapping(data, {}))

        assert not any(secret in text for secret in ("redis-pw-123", "hash-value-456", "basic-pw-789"))
        assert isinstance(from_mapping(data, {}).redis_url, Secret)


class TestValuesThatWouldLoseEvents:
    """Values that validate in form but would make the service drop or refuse every event."""

    @pytest.mark.parametrize("url", ["http://redis:6379/0", "redis://:secret-pw@host:port/0", "not a url"])
    def test_redis_url_that_cannot_work_is_refused_without_echoing_it(self, url: str) -> None:
        """A malformed redis_url is a config error, and the message does not repeat it (it may hold a password)."""
        problems = _problems({"redis_url": url})

        assert problems[0][0] == "redis_url"
        assert "secret-pw" not in problems[0][1]
        assert "is not a Redis URL" in problems[0][1]

    @pytest.mark.parametrize(
        ("section", "key", "value"),
        [
            ("ingest", "dedup_ttl", "0.5s"),
            ("ingest", "job_timeout", 0),
            ("ingest", "result_ttl", "200ms"),
            ("ingest", "retry_after", 0),
            ("worker", "maintenance_interval", "0s"),
        ],
    )
    def test_times_under_a_second_are_refused(self, section: str, key: str, value: object) -> None:
        """Redis TTLs and rq timeouts are whole seconds; a value that would round to 0 is an error."""
        problems = _problems({section: {key: value}})

        assert problems == [
            (f"{section}.{key}", f"{value!r} is shorter than one second, the smallest time-to-live Redis keeps")
        ]

    def test_fractions_round_up(self) -> None:
        """1.5 s becomes 2 s, never less than asked."""
        settings = from_mapping({"ingest": {"job_timeout": "1.5s"}}, {})

        assert settings.ingest.job_timeout == 2

    def test_max_age_under_a_second_is_refused(self) -> None:
        """max_age 0 would refuse every token as too old."""
        problems = _problems(_v3(max_age=0))

        assert problems[0][0] == "sources.v3.max_age"

    @pytest.mark.parametrize(
        ("overrides", "where"),
        [({"issuer": ""}, "sources.v3.issuer[0]"), ({"audience": []}, "sources.v3.audience")],
        ids=["empty-issuer", "empty-audience-list"],
    )
    def test_empty_issuer_or_audience_is_refused(self, overrides: dict[str, Any], where: str) -> None:
        """An unset ${ISSUER:-} must not become an issuer no token has, nor [] switch the check off."""
        problems = _problems(_v3(**overrides))

        assert problems[0][0] == where

    def test_plain_http_jwks_url_is_refused(self) -> None:
        """Keys fetched in clear could be swapped on the way; only https is accepted."""
        problems = _problems(_v3(jwks_url="http://v1.api.us.janrain.com/x/login/jwk"))

        assert problems[0][0] == "sources.v3.jwks_url"
        assert "https" in problems[0][1]

    @pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000"])
    def test_plain_http_jwks_url_on_loopback_is_allowed(self, host: str) -> None:
        """A local simulator may serve its keys over plain http on loopback."""
        settings = from_mapping(_v3(jwks_url=f"http://{host}/jwk"), {})

        assert settings.sources.v3 is not None

    def test_legacy_without_credentials_is_refused(self) -> None:
        """A legacy section without a hash or Basic credentials would accept nothing; it is an error."""
        problems = _problems({"sources": {"legacy": {}}})

        assert problems[0][0] == "sources.legacy"
        assert "callback_hashes and/or basic_auth" in problems[0][1]

    def test_reference_typo_is_refused(self) -> None:
        """${VAR:default} (missing '-') would otherwise become the literal text of a secret."""
        problems = _problems({"sources": {"legacy": {"callback_hashes": ["${HASH:abc}"]}}}, {"HASH": "x"})

        assert problems[0][0] == "sources.legacy.callback_hashes[0]"
        assert "malformed ${...} reference" in problems[0][1]

    def test_file_that_is_not_utf8(self, tmp_path: Path) -> None:
        """A config file in another encoding is a config error, not a traceback."""
        path = tmp_path / "config.yaml"
        path.write_bytes(b"redis_url: \xff\xfe\n")

        with pytest.raises(ConfigError) as caught:
            load(path, {})

        assert "not UTF-8" in caught.value.problems[0][1]


CAPTURE = {"base_url": "https://app.example.com", "client_id": "c", "client_secret": "s"}
CRM = {"type": "http", "url": "https://crm.example.com/hooks"}


class TestRouting:
    """destinations, routes and delivery: each mistake is refused at load with its key path."""

    def test_a_route_to_an_unknown_destination(self) -> None:
        data = {"capture": CAPTURE, "destinations": {"crm": CRM}, "routes": [{"name": "r", "to": ["crm", "bus"]}]}

        assert _problems(data) == [("routes[0].to[1]", "unknown destination 'bus'; known: crm")]

    def test_an_invalid_when_expression(self) -> None:
        data = {"capture": CAPTURE, "destinations": {"crm": CRM}, "routes": [{"name": "r", "to": "crm", "when": "a.["}]}

        [(path, problem)] = _problems(data)

        assert path == "routes[0].when"
        assert problem.startswith("is not a valid JMESPath expression")

    def test_an_unknown_destination_type(self) -> None:
        data = {"destinations": {"bus": {"type": "carrier-pigeon"}}}

        known = "http, postgres, redis_stream, amqp, nats, kafka"
        problem = f"unknown destination type 'carrier-pigeon'; known: {known}"
        assert _problems(data) == [("destinations.bus.type", problem)]

    def test_a_signing_secret_is_not_repeated_in_its_error(self) -> None:
        data = {"destinations": {"crm": {**CRM, "signing_secret": "hunter2-not-whsec"}}}

        [(path, problem)] = _problems(data)

        assert path == "destinations.crm.signing_secret[0]"
        assert "hunter2" not in problem

    def test_routes_that_fetch_records_need_capture(self) -> None:
        data = {"destinations": {"crm": CRM}, "routes": [{"name": "r", "on": ["entityUpdated"], "to": "crm"}]}

        [(path, problem)] = _problems(data)

        assert path == "routes[0].on"
        assert "configure the capture: section" in problem

    def test_deletions_alone_need_no_capture(self) -> None:
        data = {"destinations": {"crm": CRM}, "routes": [{"name": "r", "on": ["entityDeleted"], "to": "crm"}]}

        assert from_mapping(data, {}).routes[0].on == ["entityDeleted"]

    def test_two_routes_with_one_name(self) -> None:
        route = {"name": "r", "on": ["entityDeleted"], "to": "crm"}
        data = {"destinations": {"crm": CRM}, "routes": [route, route]}

        assert _problems(data) == [("routes[1].name", "'r' is already the name of an earlier route")]

    def test_a_schedule_starts_with_the_first_attempt(self) -> None:
        problems = _problems({"delivery": {"schedule": ["5s", "30s"]}})

        assert problems == [
            ("delivery.schedule", "must start with 0: the first attempt is made at once, each later entry is a wait")
        ]

    def test_the_stale_guard_outlives_the_dead_letter(self) -> None:
        [(path, problem)] = _problems({"delivery": {"dead_letter_retention": "60d"}})

        assert path == "delivery"
        assert problem.startswith("stale_guard_ttl (2592000 s) must be at least dead_letter_retention")

    def test_a_destination_schedule_longer_than_the_stale_guard(self) -> None:
        data = {"destinations": {"crm": {**CRM, "schedule": [0, "30d"]}}}

        [(path, problem)] = _problems(data)

        assert path == "destinations.crm.schedule"
        assert problem.startswith("with this schedule delivery.stale_guard_ttl (2592000 s) must be at least")
