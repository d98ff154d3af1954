"""Secret (masked everywhere but reveal()) and mask_url (passwords out of DSNs)."""

from __future__ import annotations

import pytest

from service.secret import Secret, mask_url

VALUE = "hunter2-very-secret"


class TestSecret:
    @pytest.mark.parametrize(
        "render",
        [
            pytest.param(str, id="str"),
            pytest.param(repr, id="repr"),
            pytest.param(lambda s: f"{s}", id="f-string"),
            pytest.param(lambda s: f"{s!r}", id="f-string-repr"),
            pytest.param(lambda s: f"{s!s:>40}", id="f-string-format-spec"),
            pytest.param(lambda s: "%s %r" % (s, s), id="percent-format"),  # noqa: UP031 - the old style must mask too
            pytest.param(lambda s: "{}".format(s), id="str-format"),  # noqa: UP032 - str.format must mask too
            pytest.param(lambda s: repr([s, {"k": s}]), id="inside-containers"),
        ],
    )
    def test_value_never_shows_when_rendered(self, render: object) -> None:
        """Every way of turning a Secret into text masks it."""
        secret = Secret(VALUE)

        text = render(secret)  # type: ignore[operator]

        assert VALUE not in text
        assert "**********" in text

    def test_reveal_returns_the_value(self) -> None:
        """reveal() is the one way out."""
        secret = Secret(VALUE)

        value = secret.reveal()

        assert value == VALUE

    @pytest.mark.parametrize(
        ("candidate", "expected"),
        [(VALUE, True), (VALUE.encode(), True), (VALUE + "x", False), ("", False), ("h\u00e9", False)],
        ids=["same-str", "same-bytes", "longer", "empty", "non-ascii"],
    )
    def test_matches_compares_str_and_bytes(self, candidate: str | bytes, expected: bool) -> None:
        """matches() accepts str or bytes, and a non-ASCII candidate is a mismatch, not an error."""
        secret = Secret(VALUE)

        result = secret.matches(candidate)

        assert result is expected

    def test_equal_secrets_compare_equal(self) -> None:
        """Two Secrets with the same value are equal and hash alike; different values are not equal."""
        first, second, other = Secret(VALUE), Secret(VALUE), Secret("other")

        equal = (first == second, first == other, first == VALUE)

        assert equal == (True, False, False)
        assert hash(first) == hash(second)

    def test_non_ascii_secrets_compare_without_error(self) -> None:
        """A password with non-ASCII characters can be compared (settings equality compares secrets)."""
        first, second = Secret("p\u00e4ssw\u00f6rd"), Secret("p\u00e4ssw\u00f6rd")

        equal = first == second

        assert equal is True


class TestMaskUrl:
    @pytest.mark.parametrize(
        ("url", "masked"),
        [
            pytest.param("redis://user:pw@redis:6379/0", "redis://user:****@redis:6379/0", id="user-and-password"),
            pytest.param("redis://:pw@redis:6379/0", "redis://:****@redis:6379/0", id="password-only"),
            pytest.param(
                "rediss://u:p%40ss@redis.example.com/1?ssl_cert_reqs=none",
                "rediss://u:****@redis.example.com/1?ssl_cert_reqs=none",
                id="tls-with-query",
            ),
            pytest.param("redis://redis:6379/0", "redis://redis:6379/0", id="no-credentials"),
            pytest.param("redis://user@redis:6379/0", "redis://user@redis:6379/0", id="user-without-password"),
            pytest.param("unix:///run/redis.sock", "unix:///run/redis.sock", id="unix-socket"),
        ],
    )
    def test_password_is_replaced(self, url: str, masked: str) -> None:
        """The password becomes ****; everything else is kept."""
        given = url

        result = mask_url(given)

        assert result == masked

    def test_ipv6_host_keeps_its_brackets(self) -> None:
        """A masked IPv6 DSN is still a valid URL with the host in brackets."""
        url = "redis://:pw@[::1]:6379/0"

        result = mask_url(url)

        assert result == "redis://:****@[::1]:6379/0"
