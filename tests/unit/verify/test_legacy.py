"""Legacy deliveries: batch shape, callback hashes and HTTP Basic, including the reference's 6.3 batch."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from service.normalize import events_from_legacy
from service.secret import Secret
from service.settings import LegacySource
from service.verify.errors import MalformedDeliveryError, UnauthenticDeliveryError, VerificationError
from service.verify.legacy import check_basic_auth, check_hashes, parse_batch

LEGACY_VECTORS: dict[str, Any] = json.loads((Path(__file__).parents[2] / "vectors" / "legacy.json").read_text("utf-8"))
CALLBACK_HASH = LEGACY_VECTORS["callback_hash"]
OTHER_HASH = "abcdefabcdefabcdefabcdefabcdefabcdefabcd"
UUID_A = "6b004bc5-179c-45c2-815d-31b06169371d"
UUID_B = "726087ec-35df-4041-aec8-c11ecc208efa"
BASIC_USER = "capture"
BASIC_PASSWORD = "s3cret pass:word"


def _body(batch: Any) -> bytes:
    return json.dumps(batch).encode()


def _element(**overrides: Any) -> dict[str, Any]:
    return {
        "uuid": UUID_A,
        "datetime": "2024-05-01 12:34:56.123456 +0000",
        "entityType": "user",
        "hash": CALLBACK_HASH,
        **overrides,
    }


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _source_with_basic() -> LegacySource:
    return LegacySource.model_validate({"basic_auth": {"username": BASIC_USER, "password": BASIC_PASSWORD}})


class RecordingSecret(Secret):
    """A real Secret that records which candidates it was compared with."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.compared: list[str | bytes] = []

    def matches(self, candidate: str | bytes) -> bool:
        self.compared.append(candidate)
        return super().matches(candidate)


class TestVectors:
    @pytest.mark.parametrize(
        "vector", LEGACY_VECTORS["batches"], ids=[vector["id"] for vector in LEGACY_VECTORS["batches"]]
    )
    def test_reference_batches(self, vector: dict[str, Any]) -> None:
        """Each batch of capture-protocol.md 6.3 is accepted or refused as the reference says."""
        hashes = [Secret(CALLBACK_HASH)]
        expected = vector["expected"]

        def receive() -> list[str]:
            batch = parse_batch(_body(vector["body"]), 1000)
            check_hashes(batch, hashes)
            return [event.uuid for event in events_from_legacy(batch, received_at=0.0)]

        if expected["outcome"] == "accepted":
            assert receive() == expected["uuids"]
        else:
            with pytest.raises(VerificationError) as caught:
                receive()
            assert type(caught.value).__name__ == expected["error"]
            assert caught.value.reason == expected["reason"]


class TestParseBatch:
    def test_returns_the_elements_with_extra_keys_kept(self) -> None:
        """A well-formed batch comes back as parsed, unknown keys included."""
        batch = [_element(), _element(uuid=UUID_B, action="delete", somethingNew=[1, 2])]

        parsed = parse_batch(_body(batch), 1000)

        assert parsed == batch

    def test_empty_batch_is_accepted(self) -> None:
        """[] is a valid (empty) batch."""
        body = b"[]"

        parsed = parse_batch(body, 1000)

        assert parsed == []

    @pytest.mark.parametrize(
        ("body", "detail"),
        [
            pytest.param(_body([_element(), {"datetime": "x"}]), "[1].uuid: field required", id="uuid-missing"),
            pytest.param(_body([_element(), _element(uuid=None)]), "[1].uuid: field required", id="uuid-null"),
            pytest.param(
                _body([_element(uuid=42)]), "[0].uuid: must be a string of 1 to 128 characters", id="uuid-number"
            ),
            pytest.param(
                _body([_element(uuid="")]), "[0].uuid: must be a string of 1 to 128 characters", id="uuid-empty"
            ),
            pytest.param(
                _body([_element(uuid="u" * 129)]),
                "[0].uuid: must be a string of 1 to 128 characters",
                id="uuid-overlong",
            ),
            pytest.param(
                _body([_element(), _element(), _element(hash=1)]), "[2].hash: must be a string", id="hash-num"
            ),
            pytest.param(_body([_element(), 5]), "[1]: must be a JSON object", id="element-not-object"),
            pytest.param(_body([[_element()]]), "[0]: must be a JSON object", id="nested-array"),
            pytest.param(_body(_element()), "the body must be a JSON array of objects", id="object-not-array"),
            pytest.param(b'"uuid"', "the body must be a JSON array of objects", id="string-not-array"),
            pytest.param(b"null", "the body must be a JSON array of objects", id="null"),
            pytest.param(b"uuid=6b004bc5", "the body is not JSON", id="form-encoded"),
            pytest.param(b"", "the body is not JSON", id="empty-body"),
            pytest.param(b"[{", "the body is not JSON", id="truncated-json"),
            pytest.param(b"\xff\xfe[]", "the body is not JSON", id="not-utf8"),
        ],
    )
    def test_malformed_batches_name_the_index_and_field(self, body: bytes, detail: str) -> None:
        """A 400 says which element and which field is wrong."""
        with pytest.raises(MalformedDeliveryError) as caught:
            parse_batch(body, 1000)

        assert (caught.value.reason, caught.value.detail) == ("body_malformed", detail)


class TestCheckHashes:
    def test_matching_hashes_pass(self) -> None:
        """Every element carrying the configured hash passes."""
        batch = [_element(), _element(uuid=UUID_B)]

        check_hashes(batch, [Secret(CALLBACK_HASH)])  # passes by not raising

    def test_missing_hash_is_refused_naming_the_element(self) -> None:
        """An element without hash is hash_missing, naming its index."""
        batch = [_element(), {"uuid": UUID_B}]

        with pytest.raises(UnauthenticDeliveryError) as caught:
            check_hashes(batch, [Secret(CALLBACK_HASH)])

        assert (caught.value.reason, caught.value.detail) == ("hash_missing", "[1].hash: field required")

    @pytest.mark.parametrize(
        "given",
        [OTHER_HASH, CALLBACK_HASH[:-1], CALLBACK_HASH + "0", CALLBACK_HASH.upper() + "X", "", "h\u00e9"],
        ids=["other", "one-short", "one-long", "different-case-and-long", "empty", "non-ascii"],
    )
    def test_wrong_hash_is_refused(self, given: str) -> None:
        """Any hash other than a configured one is hash_mismatch, and the whole batch is refused."""
        batch = [_element(), _element(uuid=UUID_B, hash=given)]

        with pytest.raises(UnauthenticDeliveryError) as caught:
            check_hashes(batch, [Secret(CALLBACK_HASH)])

        assert (caught.value.reason, caught.value.detail) == (
            "hash_mismatch",
            "[1].hash: does not match a configured hash",
        )

    @pytest.mark.parametrize("given", [CALLBACK_HASH, OTHER_HASH], ids=["old-hash", "new-hash"])
    def test_any_of_several_configured_hashes_is_accepted(self, given: str) -> None:
        """During a rotation both the old and the new callback hash are accepted."""
        batch = [_element(hash=given)]

        check_hashes(batch, [Secret(CALLBACK_HASH), Secret(OTHER_HASH)])  # passes by not raising

    def test_every_configured_hash_is_compared(self) -> None:
        """The comparison does not stop at the first match, so timing does not tell which hash matched."""
        configured = [RecordingSecret(CALLBACK_HASH), RecordingSecret(OTHER_HASH)]

        check_hashes([_element(hash=CALLBACK_HASH)], list(configured))

        assert [secret.compared for secret in configured] == [[CALLBACK_HASH], [CALLBACK_HASH]]

    def test_no_configured_hash_checks_nothing(self) -> None:
        """Without callback hashes (Basic only), elements need no hash."""
        batch = [{"uuid": UUID_A}]

        check_hashes(batch, [])  # passes by not raising


class TestCheckBasicAuth:
    def test_matching_credentials_pass(self) -> None:
        """The configured user and password pass, a colon inside the password included."""
        source = _source_with_basic()

        check_basic_auth(_basic(BASIC_USER, BASIC_PASSWORD), source)  # passes by not raising

    def test_scheme_is_case_insensitive(self) -> None:
        """'basic' and 'BASIC' are the same scheme (RFC 7235)."""
        header = _basic("capture", "s3cret pass:word").replace("Basic", "bAsIc")

        check_basic_auth(header, _source_with_basic())  # passes by not raising

    @pytest.mark.parametrize(
        "header",
        [_basic("capture", "wrong"), _basic("someone", "s3cret pass:word"), _basic("capture", ""), _basic("", "")],
        ids=["wrong-password", "wrong-user", "empty-password", "empty-both"],
    )
    def test_wrong_credentials_are_refused(self, header: str) -> None:
        """A wrong user or password is basic_auth_invalid."""
        with pytest.raises(UnauthenticDeliveryError) as caught:
            check_basic_auth(header, _source_with_basic())

        assert caught.value.reason == "basic_auth_invalid"

    @pytest.mark.parametrize(
        "header",
        [None, "", "Basic", "Basic ", "Bearer dG9rZW4=", "Y2FwdHVyZTpzM2NyZXQ="],
        ids=["absent", "empty", "scheme-only", "scheme-and-space", "bearer", "no-scheme"],
    )
    def test_missing_credentials_are_refused(self, header: str | None) -> None:
        """No Basic credentials at all is basic_auth_missing."""
        with pytest.raises(UnauthenticDeliveryError) as caught:
            check_basic_auth(header, _source_with_basic())

        assert caught.value.reason == "basic_auth_missing"

    @pytest.mark.parametrize(
        "header",
        ["Basic !!!not-base64!!!", "Basic Y2FwdHVyZQ", "Basic /w==", "Basic \u00e9t\u00e9"],
        ids=["not-base64", "bad-padding", "not-utf8", "non-ascii"],
    )
    def test_malformed_header_is_refused(self, header: str) -> None:
        """A Basic header that cannot be decoded is basic_auth_invalid, never an unhandled error."""
        with pytest.raises(UnauthenticDeliveryError) as caught:
            check_basic_auth(header, _source_with_basic())

        assert caught.value.reason == "basic_auth_invalid"

    @pytest.mark.parametrize("header", [None, "Basic !!!", _basic("anyone", "anything")], ids=["absent", "junk", "any"])
    def test_not_configured_is_a_no_op(self, header: str | None) -> None:
        """Without basic_auth configured, any Authorization header (or none) passes."""
        source = LegacySource.model_validate({"callback_hashes": [CALLBACK_HASH]})

        check_basic_auth(header, source)  # passes by not raising
