"""janrain-signed, Basic and parameter credentials for Capture calls (reference/capture-protocol.md §4.2, §6.1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from service.secret import Secret
from workers.capture_auth import ClientCredentials, authorize, signature, signing_date, string_to_sign

B_CLIENT = ClientCredentials("abcdefghijklmnopqrstuvwxyz012345", Secret("0123456789abcdefghijklmnopqrstuv"))
B_PARAMS = {
    "type_name": "user",
    "uuid": "6b004bc5-179c-45c2-815d-31b06169371d",
    "attributes": '["email","givenName","lastUpdated"]',
}
# 2024-05-01 12:34:56 UTC, the Date of vector B.
B_NOW = datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC).timestamp()

VECTORS = [
    pytest.param(
        "/entity",
        "2000-01-01 01:01:01",
        ClientCredentials("foo", Secret("bar")),
        {"param1": "this is a string", "param2": "10", "param3": "one=1\ntwo=2,three=3"},
        "Signature foo:G3N5RxCVc0d6rDLmBRGvcg2hCVY=",
        id="A-pyapi-test-signature",
    ),
    pytest.param(
        "/entity",
        "2024-05-01 12:34:56",
        B_CLIENT,
        B_PARAMS,
        "Signature abcdefghijklmnopqrstuvwxyz012345:TyHntwK5h7/1eKUT0Iq+k7nt1pU=",
        id="B-entity-by-uuid",
    ),
    pytest.param(
        "/versions/entity",
        "2024-05-01 12:35:00",
        B_CLIENT,
        {"type_name": "user", "id": "999", "timestamp": "2016-03-13 19:39:17.856608 +0000"},
        "Signature abcdefghijklmnopqrstuvwxyz012345:1ErYgLvZf5ieDvZYSfRtt5kvBng=",
        id="C-versions-entity",
    ),
    pytest.param(
        "/webhooks/add",
        "2024-05-01 12:36:00",
        B_CLIENT,
        {
            "callback": "https://hooks.example.com/janrain",
            "event_type": "update",
            "entity_type": "user",
            "attributes": '["email","givenName"]',
        },
        "Signature abcdefghijklmnopqrstuvwxyz012345:wUtnGIddMzvT3mOlzZsMHjC6KeI=",
        id="D-webhooks-add",
    ),
]


class TestSignatureVectors:
    @pytest.mark.parametrize(("path", "date", "client", "params", "expected"), VECTORS)
    def test_signature_matches_the_reference_vector(
        self, path: str, date: str, client: ClientCredentials, params: dict[str, str], expected: str
    ) -> None:
        """signature() reproduces the Authorization values of §6.1 byte for byte."""
        signed = signature(path, date, params, client.client_secret)

        assert f"Signature {client.client_id}:{signed}" == expected

    @pytest.mark.parametrize(("path", "date", "client", "params", "expected"), VECTORS)
    def test_signed_authorize_sends_the_reference_header(
        self, path: str, date: str, client: ClientCredentials, params: dict[str, str], expected: str
    ) -> None:
        """authorize('signed') at the vector's moment sends its Date and Authorization headers."""
        now = datetime.strptime(date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()

        headers, fields = authorize("signed", client, path, params, now)

        assert headers == {"Date": date, "Authorization": expected}
        assert fields == params

    def test_string_to_sign_for_vector_b(self) -> None:
        """B's string to sign is path, date, then the sorted k=v lines, each ending in a newline."""
        expected = (
            "/entity\n"
            "2024-05-01 12:34:56\n"
            'attributes=["email","givenName","lastUpdated"]\n'
            "type_name=user\n"
            "uuid=6b004bc5-179c-45c2-815d-31b06169371d\n"
        )

        assert string_to_sign("/entity", "2024-05-01 12:34:56", B_PARAMS) == expected

    def test_no_parameters_signs_path_and_date_only(self) -> None:
        """With no parameters the string is ``path\\ndate\\n`` (PYAPI), not the doc sample's extra newline."""
        text = string_to_sign("/entityType", "2024-05-01 12:34:56", {})

        assert text == "/entityType\n2024-05-01 12:34:56\n"

    def test_prefix_keys_sort_as_key_value_strings(self) -> None:
        """``a1=…`` sorts before ``a=…`` because '1' < '='; sorting by key would put ``a`` first (§7 item 7)."""
        params = {"a": "y", "a1": "x"}

        text = string_to_sign("/entity", "2024-05-01 12:34:56", params)

        assert text.splitlines()[2:] == ["a1=x", "a=y"]

    def test_prefix_keys_signature_uses_the_string_sort(self) -> None:
        """The HMAC is over the string-sorted lines, so it differs from a key-sorted one."""
        secret = Secret("s3cret")
        by_string = "/entity\nD\na1=x\na=y\n"
        by_key = "/entity\nD\na=y\na1=x\n"

        signed = signature("/entity", "D", {"a": "y", "a1": "x"}, secret)

        assert signed == base64.b64encode(hmac.new(b"s3cret", by_string.encode(), hashlib.sha1).digest()).decode()
        assert signed != base64.b64encode(hmac.new(b"s3cret", by_key.encode(), hashlib.sha1).digest()).decode()


class TestAuthorize:
    def test_basic_header_for_vector_b_client(self) -> None:
        """Basic mode sends base64(client_id:client_secret) as printed in §6.1 and leaves the fields alone."""
        headers, fields = authorize("basic", B_CLIENT, "/entity", B_PARAMS, B_NOW)

        assert headers == {
            "Authorization": "Basic YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIz"
            "NDU6MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3BxcnN0dXY="
        }
        assert fields == B_PARAMS

    def test_params_mode_puts_credentials_into_the_fields(self) -> None:
        """Params mode adds client_id and client_secret as form fields and sends no header."""
        headers, fields = authorize("params", B_CLIENT, "/entity", B_PARAMS, B_NOW)

        assert headers == {}
        assert fields == {
            **B_PARAMS,
            "client_id": "abcdefghijklmnopqrstuvwxyz012345",
            "client_secret": "0123456789abcdefghijklmnopqrstuv",
        }

    def test_authorize_does_not_change_the_callers_params(self) -> None:
        """The caller's mapping is not modified, so a retry signs the same fields again."""
        params = dict(B_PARAMS)

        authorize("params", B_CLIENT, "/entity", params, B_NOW)

        assert params == B_PARAMS

    def test_signed_date_is_utc_from_the_given_clock(self) -> None:
        """The Date header is ``YYYY-MM-DD HH:MM:SS`` in UTC, taken from ``now``, not the wall clock."""
        now = datetime(1999, 12, 31, 23, 59, 58, 750000, tzinfo=UTC).timestamp()

        headers, _ = authorize("signed", B_CLIENT, "/entity", B_PARAMS, now)

        assert headers["Date"] == "1999-12-31 23:59:58"
        assert signing_date(0.0) == "1970-01-01 00:00:00"

    def test_signed_mode_never_signs_or_sends_the_credentials(self) -> None:
        """The signature is over the call's own fields only; neither the secret nor the id becomes a field."""
        headers, fields = authorize("signed", B_CLIENT, "/entity", B_PARAMS, B_NOW)

        expected = signature("/entity", "2024-05-01 12:34:56", B_PARAMS, B_CLIENT.client_secret)
        assert headers["Authorization"] == f"Signature abcdefghijklmnopqrstuvwxyz012345:{expected}"
        assert "client_id" not in fields
        assert "client_secret" not in fields
        assert all("0123456789abcdefghijklmnopqrstuv" not in value for value in headers.values())
