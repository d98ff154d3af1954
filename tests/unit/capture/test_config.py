"""The ``capture:`` settings section and ``parse_retry_after``."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest

from service.settings import CaptureApi, ConfigError, from_mapping
from service.timeutil import parse_retry_after

SECRET = "0123456789abcdefghijklmnopqrstuv"
WEBHOOKS_SECRET = "config-client-secret-value"
CUSTOMER_ID = "b18fc81d-457e-4a40-ac87-2b78bd946fa2"


def _capture(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "base_url": "https://my-app.janraincapture.com",
        "client_id": "abcdefghijklmnopqrstuvwxyz012345",
        "client_secret": SECRET,
    }
    section.update(overrides)
    return {"capture": section}


def _webhooks_api(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "base_url": "https://v1.api.us.janrain.com",
        "customer_id": CUSTOMER_ID,
        "client_id": "config-client",
        "client_secret": WEBHOOKS_SECRET,
    }
    section.update(overrides)
    return section


def _load(data: dict[str, Any]) -> CaptureApi:
    capture = from_mapping(data, {}).capture
    assert capture is not None
    return capture


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        from_mapping(data, {})
    return caught.value.problems


class TestCaptureSection:
    def test_absent_by_default(self) -> None:
        """Without a ``capture:`` section there is no Capture API configuration."""
        settings = from_mapping({}, {})

        assert settings.capture is None

    def test_defaults(self) -> None:
        """Basic auth, entity type user, 10 s timeout, 30 s retry deadline, 4 calls at once, no rate limit."""
        capture = _load(_capture())

        assert (capture.auth, capture.entity_type, capture.timeout, capture.retry_deadline) == (
            "basic",
            "user",
            10.0,
            30.0,
        )
        assert (capture.max_concurrency, capture.rate_limit, capture.webhooks_api) == (4, None, None)
        assert capture.client_secret.reveal() == SECRET

    @pytest.mark.parametrize(
        ("rate", "per_second"),
        [
            pytest.param("20/s", 20.0, id="per-second"),
            pytest.param("600/m", 10.0, id="per-minute"),
            pytest.param("1000/h", 1000 / 3600, id="per-hour"),
            pytest.param(5, 5.0, id="plain-number"),
            pytest.param(0.5, 0.5, id="fraction"),
        ],
    )
    def test_rate_limit_is_parsed_to_per_second(self, rate: str | float, per_second: float) -> None:
        """``rate_limit`` accepts N/s, N/m, N/h or a number per second and stores calls per second."""
        capture = _load(_capture(rate_limit=rate))

        assert capture.rate_limit == pytest.approx(per_second)

    @pytest.mark.parametrize("rate", ["50/x", "fast", "-1/s", 0, "0/s", True])
    def test_bad_rate_names_the_key(self, rate: object) -> None:
        """A value that is not a positive rate is refused with the key path capture.rate_limit."""
        problems = _problems(_capture(rate_limit=rate))

        assert [path for path, _ in problems] == ["capture.rate_limit"]
        assert "rate" in problems[0][1]

    def test_http_on_a_public_host_is_refused(self) -> None:
        """Credentials must not travel in clear: http:// is refused for anything but loopback."""
        problems = _problems(_capture(base_url="http://my-app.janraincapture.com"))

        assert len(problems) == 1
        assert problems[0][0] == "capture.base_url"
        assert "https" in problems[0][1]

    @pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9000", "http://[::1]:8080"])
    def test_http_on_loopback_is_accepted(self, url: str) -> None:
        """A simulator on this machine may be reached over plain http."""
        capture = _load(_capture(base_url=url))

        assert capture.base_url == url

    def test_not_a_url_is_refused(self) -> None:
        """A value that is no http(s) URL at all names the key."""
        problems = _problems(_capture(base_url="ftp://my-app.janraincapture.com"))

        assert problems == [("capture.base_url", "must be an https:// URL")]

    def test_trailing_slash_is_stripped(self) -> None:
        """``https://host/`` and ``https://host`` give the same base URL, so paths join cleanly."""
        capture = _load(_capture(base_url="https://my-app.janraincapture.com/"))

        assert capture.base_url == "https://my-app.janraincapture.com"

    @pytest.mark.parametrize("mode", ["basic", "signed", "params"])
    def test_known_auth_modes(self, mode: str) -> None:
        """The three authentication modes are accepted as written."""
        capture = _load(_capture(auth=mode))

        assert capture.auth == mode

    def test_unknown_auth_mode_names_the_key(self) -> None:
        """An unknown mode is refused at ``capture.auth`` and the message lists the accepted ones."""
        problems = _problems(_capture(auth="oauth"))

        assert len(problems) == 1
        path, message = problems[0]
        assert path == "capture.auth"
        assert all(mode in message for mode in ("basic", "signed", "params"))

    def test_missing_credentials_are_named(self) -> None:
        """client_id and client_secret are required and each is named."""
        problems = _problems({"capture": {"base_url": "https://my-app.janraincapture.com"}})

        assert problems == [("capture.client_id", "field required"), ("capture.client_secret", "field required")]

    def test_secrets_are_masked_in_repr(self) -> None:
        """Neither secret appears in the repr or str of the settings."""
        settings = from_mapping(_capture(webhooks_api=_webhooks_api()), {})

        text = repr(settings) + str(settings) + repr(settings.capture)

        assert SECRET not in text
        assert WEBHOOKS_SECRET not in text
        assert "Secret('**********')" in repr(settings.capture)

    def test_secret_is_not_echoed_in_errors(self) -> None:
        """A config error elsewhere in the section never prints the secret."""
        with pytest.raises(ConfigError) as caught:
            from_mapping(_capture(rate_limit="2/x"), {})

        assert SECRET not in str(caught.value)

    def test_secret_from_the_environment(self) -> None:
        """The secret may come from ``${ENV}`` interpolation."""
        data = _capture(client_secret="${CAPTURE_SECRET}")

        capture = from_mapping(data, {"CAPTURE_SECRET": "from-env"}).capture

        assert capture is not None
        assert capture.client_secret.reveal() == "from-env"

    @pytest.mark.parametrize(
        ("key", "value"), [("max_concurrency", 0), ("timeout", 0), ("retry_deadline", "0s"), ("entity_type", "")]
    )
    def test_out_of_range_values_name_the_key(self, key: str, value: object) -> None:
        """Zero concurrency, zero timeouts and an empty entity type are refused at their key."""
        problems = _problems(_capture(**{key: value}))

        assert [path for path, _ in problems] == [f"capture.{key}"]


class TestBaseUrls:
    @pytest.mark.parametrize("section", ["capture", "capture.webhooks_api"])
    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("https://user:pw@myapp.janraincapture.com", "must not carry credentials"),
            ("https://myapp.janraincapture.com/prefix", "must be the bare origin"),
            ("https://myapp.janraincapture.com/?a=b", "must be the bare origin"),
        ],
    )
    def test_only_a_bare_origin_is_accepted(self, section: str, url: str, problem: str) -> None:
        """Credentials would reach logs and key names; a path would not be covered by the signature."""
        data = _capture(webhooks_api=_webhooks_api())
        target = data["capture"] if section == "capture" else data["capture"]["webhooks_api"]
        target["base_url"] = url

        problems = _problems(data)

        assert [path for path, _ in problems] == [f"{section}.base_url"]
        assert problem in problems[0][1]
        assert "pw" not in problems[0][1]

    def test_the_jwks_url_keeps_its_path_and_slash(self) -> None:
        """jku is compared with the configured JWKS URL exactly, so it is not normalised."""
        settings = from_mapping({"sources": {"v3": {"jwks_url": "https://v1.api.us.janrain.com/c/login/jwk/"}}}, {})
        assert settings.sources.v3 is not None
        assert settings.sources.v3.jwks_url == "https://v1.api.us.janrain.com/c/login/jwk/"


class TestWebhooksApi:
    def test_valid_section(self) -> None:
        """A complete ``webhooks_api`` section loads with its trailing slash stripped."""
        capture = _load(_capture(webhooks_api=_webhooks_api(base_url="https://v1.api.us.janrain.com/")))

        api = capture.webhooks_api
        assert api is not None
        assert (api.base_url, api.customer_id, api.client_id) == (
            "https://v1.api.us.janrain.com",
            CUSTOMER_ID,
            "config-client",
        )
        assert api.client_secret.reveal() == WEBHOOKS_SECRET

    @pytest.mark.parametrize("customer_id", ["a/b", "../admin", "abc_def", "id with space", ""])
    def test_customer_id_must_be_a_path_segment(self, customer_id: str) -> None:
        """The customer id goes into URL paths, so only letters, digits and dashes are accepted."""
        problems = _problems(_capture(webhooks_api=_webhooks_api(customer_id=customer_id)))

        assert [path for path, _ in problems] == ["capture.webhooks_api.customer_id"]

    def test_http_base_url_is_refused(self) -> None:
        """The token endpoint gets the configuration client's secret, so it must be https."""
        problems = _problems(_capture(webhooks_api=_webhooks_api(base_url="http://v1.api.us.janrain.com")))

        assert [path for path, _ in problems] == ["capture.webhooks_api.base_url"]

    def test_unknown_key_lists_the_known_ones(self) -> None:
        """A typo is refused and the message lists the section's keys."""
        problems = _problems(_capture(webhooks_api=_webhooks_api(customer="x")))

        assert problems == [
            (
                "capture.webhooks_api.customer",
                "unknown key; known keys here: base_url, client_id, client_secret, customer_id",
            )
        ]


class TestParseRetryAfter:
    NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()

    @pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("7", 7.0), (" 120 ", 120.0)])
    def test_delta_seconds(self, value: str, seconds: float) -> None:
        """A whole number of seconds is returned as is."""
        assert parse_retry_after(value, self.NOW) == seconds

    def test_http_date_in_the_future(self) -> None:
        """An HTTP date gives the seconds from ``now`` until then."""
        when = format_datetime(datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC), usegmt=True)

        assert parse_retry_after(when, self.NOW) == pytest.approx(30.0)

    def test_http_date_in_the_past_gives_zero(self) -> None:
        """A date already passed means "now", never a negative wait."""
        assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", self.NOW) == 0.0

    @pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Wed, 01 May 2024 12:00:30", "\u00b2", "\u0663"])
    def test_missing_or_garbage_gives_none(self, value: str | None) -> None:
        """A missing, unreadable or zone-less value lets the caller fall back to its own backoff."""
        assert parse_retry_after(value, self.NOW) is None
