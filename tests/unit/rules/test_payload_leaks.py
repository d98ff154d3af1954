"""workers.payload, over generated records: what fields leaves out, hash hides or drop removes is never sent.

Records are random nests of objects, plurals (lists of objects, or of anything) and scalars over a
few shared names, so that route paths often go through plurals and sometimes meet scalars. Every
string in a record is a unique token, so a token in the JSON payload can only have come from its
own place in the record. The expectations are restated here from the documented semantics
(a path applies to each element of every plural it goes through), not taken from the code.

Derandomized, as tests/integration/test_fuzz.py: the same examples run everywhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.rules.factories import make_event, make_route
from workers.changes import Change, diff, from_attributes
from workers.payload import build_payload
from workers.rules import CompiledRoute, Facts

NAMES = ("a", "b", "p")
TOKEN = "TOKEN-"

_leaf = st.one_of(st.none(), st.integers(0, 2), st.booleans(), st.just(TOKEN))
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
        st.lists(st.dictionaries(st.sampled_from(NAMES), inner, max_size=3), max_size=3),
        st.lists(inner, max_size=2),
    ),
    max_leaves=14,
)
_record = st.dictionaries(st.sampled_from(NAMES), _value, max_size=3)
_path = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(".".join)
_paths = st.lists(_path, max_size=3)


def _tokenized(value: Any, counter: Iterator[int]) -> Any:
    """``value`` with every string replaced by a token no other place has."""
    if isinstance(value, dict):
        return {key: _tokenized(item, counter) for key, item in value.items()}
    if isinstance(value, list):
        return [_tokenized(item, counter) for item in value]
    if isinstance(value, str):
        return f"{TOKEN}{next(counter):04d}"
    return value


def _at(value: Any, names: Sequence[str]) -> Iterator[Any]:
    """The values a dot path names: through objects, and in each element of every plural on the way."""
    if isinstance(value, list):
        for item in value:
            yield from _at(item, names)
    elif isinstance(value, dict) and names[0] in value:
        if len(names) == 1:
            yield value[names[0]]
        else:
            yield from _at(value[names[0]], names[1:])


def _tokens(values: Any) -> set[str]:
    if isinstance(values, dict):
        return set().union(*(_tokens(item) for item in values.values()))
    if isinstance(values, list | tuple):
        return set().union(*(_tokens(item) for item in values))
    return {values} if isinstance(values, str) and values.startswith(TOKEN) else set()


def _named(paths: Sequence[str], *records: Any) -> set[str]:
    return _tokens([list(_at(record, path.split("."))) for path in paths for record in records])


def _sent(text: str) -> set[str]:
    # Tokens are fixed-width and JSON strings, so each appears quoted, whole.
    return {token for token in _tokens(orjson.loads(text)) if f'"{token}"' in text}


def _documents(route: CompiledRoute, previous: dict[str, Any], record: dict[str, Any], attributes: list[str]) -> str:
    """Every payload the route could send for an update of ``previous`` to ``record``, as JSON text."""
    event = make_event(type="entityUpdated", attributes=attributes)
    # Whole top-level values changed, as an attributes list naming objects and plurals reports them.
    whole = [
        {key: Change(previous.get(key), record.get(key), old_known) for key in {*previous, *record}}
        for old_known in (True, False)
    ]
    sources = [diff(previous, record), from_attributes(attributes, record), *whole]
    payloads = [build_payload(event, "crm", route, Facts(event.to_dict(), record, previous, c)) for c in sources]
    return orjson.dumps(payloads).decode()


class TestNothingHiddenIsSent:
    @settings(derandomize=True, database=None, max_examples=300, deadline=None)
    @given(
        record=_record,
        previous=_record,
        fields=st.one_of(st.none(), st.lists(_path, min_size=1, max_size=3)),
        hashed=_paths,
        dropped=_paths,
        attributes=_paths,
    )
    def test_no_hashed_dropped_or_unlisted_value_reaches_the_payload(
        self,
        record: dict[str, Any],
        previous: dict[str, Any],
        fields: list[str] | None,
        hashed: list[str],
        dropped: list[str],
        attributes: list[str],
    ) -> None:
        """In record and changes, old and new: no token at a hash or drop path, none outside fields."""
        counter = itertools.count()
        record, previous = _tokenized(record, counter), _tokenized(previous, counter)
        route = CompiledRoute.compile(make_route(fields=fields, hash=hashed, drop=dropped))

        sent = _sent(_documents(route, previous, record, attributes))

        assert not sent & _named([*hashed, *dropped], record, previous)
        if fields is not None:
            assert sent <= _named(fields, record, previous)

    @settings(derandomize=True, database=None, max_examples=100, deadline=None)
    @given(record=_record, previous=_record, hashed=_paths, dropped=_paths)
    def test_whatever_is_not_hidden_is_sent(
        self, record: dict[str, Any], previous: dict[str, Any], hashed: list[str], dropped: list[str]
    ) -> None:
        """The check above can fail: without fields, every token of the record not hidden is in the payload."""
        counter = itertools.count()
        record, previous = _tokenized(record, counter), _tokenized(previous, counter)
        route = CompiledRoute.compile(make_route(hash=hashed, drop=dropped))

        sent = _sent(_documents(route, previous, record, []))

        assert sent >= _tokens(record) - _named([*hashed, *dropped], record, previous)
