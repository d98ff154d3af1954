"""``CaptureClient``: the Capture API endpoints the workers and the registration job use.

Every call is a form-encoded ``POST`` to the application's Capture domain; structured values
(attribute lists, ``key_value``) travel as JSON strings, as Capture expects. Answers are parsed
whatever their HTTP status, because Capture reports errors as ``{"stat": "error", ...}``, often
with HTTP 200 (reference/capture-protocol.md §4). See ``workers.capture_errors`` for what is
raised and ``workers.capture_calls`` for limits and retries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

import httpx2
import orjson

from service.timeutil import parse_retry_after
from workers.capture_auth import AuthMode, ClientCredentials, authorize
from workers.capture_calls import ApiCaller, answer_excerpt, send_bounded
from workers.capture_errors import CaptureHttpError, CaptureProtocolError, error_from_envelope

Record = dict[str, Any]
# The most /entity.find returns in one page.
MAX_RESULTS = 10_000


@dataclass(frozen=True, slots=True)
class FindResult:
    """One page of ``/entity.find``."""

    results: list[Record]
    result_count: int
    total_count: int | None = None


def _json(value: object) -> str:
    # Compact, as Janrain's clients send it: the same bytes are what janrain-signed signs.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def capture_timestamp(at: datetime | float) -> str:
    """Capture's datetime format, ``2016-03-13 19:39:17.856608 +0000``; a naive datetime is UTC."""
    if isinstance(at, datetime):
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(at, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000")


def parse_capture_timestamp(value: object) -> datetime | None:
    """A Capture datetime (``2015-11-15 01:58:01.862312 +0000``, fraction optional) or ``None``."""
    if not isinstance(value, str):
        return None
    for layout in ("%Y-%m-%d %H:%M:%S.%f %z", "%Y-%m-%d %H:%M:%S %z"):
        try:
            return datetime.strptime(value, layout)
        except ValueError:
            continue
    return None


class CaptureClient:
    """One Capture application's API. Thread-safe: workers share it between their threads."""

    def __init__(
        self,
        base_url: str,
        credentials: ClientCredentials,
        *,
        http: httpx2.Client,
        caller: ApiCaller,
        auth: AuthMode = "basic",
        entity_type: str = "user",
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        # The most one attempt may take, reading the answer included.
        self._timeout = timeout
        self._credentials = credentials
        self._http = http
        self._caller = caller
        self._auth: AuthMode = auth
        self.entity_type = entity_type
        self._clock = clock

    # -- records -------------------------------------------------------------------------

    def entity(
        self,
        *,
        uuid: str | None = None,
        id: int | None = None,
        key: tuple[str, object] | None = None,
        attributes: Sequence[str] | None = None,
        entity_type: str | None = None,
    ) -> Record:
        """One record, by exactly one of ``uuid``, ``id`` or ``key=(attribute, value)``.

        ``attributes`` asks for a subset (dot paths); Capture returns only those keys.

        Raises:
            RecordNotFoundError: no such record (code 310).
            CaptureError: any other failure.
        """
        chosen = [name for name, value in (("uuid", uuid), ("id", id), ("key", key)) if value is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one of uuid, id or key")
        params = {"type_name": entity_type or self.entity_type}
        if uuid is not None:
            params["uuid"] = uuid
        elif id is not None:
            params["id"] = str(id)
        elif key is not None:
            params["key_attribute"] = key[0]
            params["key_value"] = _json(key[1])
        if attributes is not None:
            params["attributes"] = _json(list(attributes))
        return _result(self._post("/entity", params), "/entity")

    def find(
        self,
        *,
        filter: str | None = None,
        attributes: Sequence[str] | None = None,
        sort_on: Sequence[str] | None = None,
        max_results: int | None = None,
        first_result: int | None = None,
        show_total_count: bool = False,
        entity_type: str | None = None,
    ) -> FindResult:
        """One page of records matching a Capture filter (``lastUpdated >= '2016-01-01'``)."""
        params = {"type_name": entity_type or self.entity_type}
        if filter is not None:
            params["filter"] = filter
        if attributes is not None:
            params["attributes"] = _json(list(attributes))
        if sort_on is not None:
            params["sort_on"] = _json(list(sort_on))
        if max_results is not None:
            params["max_results"] = str(max_results)
        if first_result is not None:
            params["first_result"] = str(first_result)
        if show_total_count:
            params["show_total_count"] = "true"
        body = self._post("/entity.find", params)
        results = body.get("results")
        count, total = body.get("result_count", len(results or [])), body.get("total_count")
        if (
            not isinstance(results, list)
            or not all(isinstance(record, dict) for record in results)
            or not _is_count(count)
            or not (total is None or _is_count(total))
        ):
            raise CaptureProtocolError(
                "/entity.find answered without a results list and counts", endpoint="/entity.find"
            )
        return FindResult(results=results, result_count=count, total_count=total)

    def find_all(
        self,
        *,
        filter: str | None = None,
        attributes: Sequence[str] | None = None,
        page_size: int = 1000,
        entity_type: str | None = None,
    ) -> Iterator[Record]:
        """Every matching record, paging on ``id`` (the technique Capture recommends past 100k records).

        The filter of each page is ``(<filter>) and id > <last id>``; parentheses are not in the
        documented filter grammar (reference §4.4), so keep the filter a plain conjunction when
        a tenant refuses them.
        """
        if not 0 < page_size <= MAX_RESULTS:
            raise ValueError(f"page_size must be between 1 and {MAX_RESULTS}")
        wanted = list(attributes) if attributes is not None else None
        if wanted is not None and "id" not in wanted:
            wanted.append("id")
        last_id: object = None
        while True:
            clauses = [f"({filter})"] if filter else []
            if last_id is not None:
                clauses.append(f"id > {last_id}")
            page = self.find(
                filter=" and ".join(clauses) or None,
                attributes=wanted,
                sort_on=["id"],
                max_results=page_size,
                entity_type=entity_type,
            )
            yield from page.results
            if len(page.results) < page_size:
                return
            previous, last_id = last_id, page.results[-1].get("id")
            # A server that ignored the id clause would page forever.
            if not _is_count(last_id) or (isinstance(previous, int) and last_id <= previous):
                raise CaptureProtocolError("/entity.find returned no increasing id to page on", endpoint="/entity.find")

    def version(self, id: int, at: datetime | float | str, *, entity_type: str | None = None) -> Record:
        """The record with ``id`` as it was at ``at`` (``/versions/entity``).

        Raises:
            RecordNotFoundError: the record did not exist then.
        """
        timestamp = at if isinstance(at, str) else capture_timestamp(at)
        params = {"type_name": entity_type or self.entity_type, "id": str(id), "timestamp": timestamp}
        return _result(self._post("/versions/entity", params), "/versions/entity")

    def schema(self, entity_type: str | None = None) -> Record:
        """The entity type's schema (``/entityType``): ``{"name": ..., "attr_defs": [...]}``."""
        body = self._post("/entityType", {"type_name": entity_type or self.entity_type})
        schema = body.get("schema")
        if not isinstance(schema, dict):
            raise CaptureProtocolError("/entityType answered without a schema", endpoint="/entityType")
        return schema

    # -- legacy webhooks -------------------------------------------------------------------

    def add_webhook(
        self, *, callback: str, event_type: str, entity_type: str, attributes: Sequence[str] | None = None
    ) -> Record:
        """Register a legacy webhook; ``attributes`` only applies to ``update`` webhooks."""
        params = {"callback": callback, "event_type": event_type, "entity_type": entity_type}
        if attributes is not None:
            params["attributes"] = _json(list(attributes))
        # Not repeated after a failure that may have reached Capture: it would register a second webhook.
        return _optional_result(self._post("/webhooks/add", params, idempotent=False))

    def update_webhook(
        self,
        uuid: str,
        *,
        callback: str | None = None,
        event_type: str | None = None,
        entity_type: str | None = None,
        attributes: Sequence[str] | None = None,
    ) -> Record:
        """Overwrite the given fields of the webhook with this (webhook) uuid."""
        params = {"uuid": uuid}
        for name, value in (("callback", callback), ("event_type", event_type), ("entity_type", entity_type)):
            if value is not None:
                params[name] = value
        if attributes is not None:
            params["attributes"] = _json(list(attributes))
        return _optional_result(self._post("/webhooks/update", params))

    def list_webhooks(self) -> list[Record]:
        """Every legacy webhook of the application."""
        webhooks = self._post("/webhooks/list", {}).get("webhooks")
        if not isinstance(webhooks, list):
            raise CaptureProtocolError("/webhooks/list answered without a webhooks list", endpoint="/webhooks/list")
        return webhooks

    def find_webhook(self, uuid: str) -> Record:
        """One legacy webhook by its uuid."""
        return _optional_result(self._post("/webhooks/find", {"uuid": uuid}))

    def delete_webhook(self, uuid: str) -> None:
        """Remove one legacy webhook."""
        self._post("/webhooks/delete", {"uuid": uuid}, idempotent=False)

    # -- transport -----------------------------------------------------------------------

    def _post(self, path: str, params: Mapping[str, str], *, idempotent: bool = True) -> Record:
        def attempt() -> Record:
            # Signed per attempt: the Date header must be fresh on every retry.
            headers, fields = authorize(self._auth, self._credentials, path, params, self._clock())
            response = send_bounded(
                self._http, "POST", self._base_url + path, budget=self._timeout, data=fields, headers=headers
            )
            return parse_answer(response, endpoint=path, now=self._clock())

        return self._caller.call(path, attempt, idempotent=idempotent)


def parse_answer(response: httpx2.Response, *, endpoint: str, now: float) -> Record:
    """The body of a Capture answer with ``stat: ok``.

    Raises:
        CaptureApiError: the body is Capture's error envelope, whatever the HTTP status.
        CaptureHttpError: a failing HTTP status without an envelope (a gateway's 502, ...).
        CaptureProtocolError: a success status whose body is not a Capture answer.
    """
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("stat") == "error":
        raise error_from_envelope(body, endpoint=endpoint, http_status=response.status_code, retry_after=retry_after)
    if not response.is_success:
        raise CaptureHttpError(
            endpoint=endpoint,
            http_status=response.status_code,
            detail=answer_excerpt(response, 120),
            retry_after=retry_after,
            location=response.headers.get("Location") if response.is_redirect else None,
        )
    if not isinstance(body, dict) or body.get("stat") != "ok":
        raise CaptureProtocolError(
            f"{endpoint} answered HTTP {response.status_code} without a Capture envelope", endpoint=endpoint
        )
    return body


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _result(body: Record, endpoint: str) -> Record:
    result = body.get("result")
    if not isinstance(result, dict):
        raise CaptureProtocolError(f"{endpoint} answered without a result object", endpoint=endpoint)
    return result


def _optional_result(body: Record) -> Record:
    # The shape of /webhooks/* success bodies is not documented (protocol reference §1.3).
    result = body.get("result", body.get("webhook"))
    if isinstance(result, dict):
        return result
    return {key: value for key, value in body.items() if key != "stat"}
