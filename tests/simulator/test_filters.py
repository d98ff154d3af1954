"""Capture's filter grammar: what parses, what it means, and what is refused with which code."""

from __future__ import annotations

from typing import Any

import pytest

from simulator.filters import BoolOp, Compare, FilterError, IsNull, Not, filter_paths, matches, parse_filter

RECORD: dict[str, Any] = {
    "id": 7,
    "email": "ada@example.com",
    "familyName": "O'Brien",
    "emailVerified": None,
    "optIn": True,
    "score": 2.5,
    "lastUpdated": "2016-03-13 19:39:17.856608 +0000",
    "birthday": "1990-12-10",
    "primaryAddress": {"city": "Leeds", "zip": None},
    "profiles": [{"domain": "github.com"}, {"domain": "example.org"}],
}


def test_precedence_not_binds_tighter_than_and_than_or() -> None:
    """``not a and b or c`` is ``((not a) and b) or c``."""
    expr = parse_filter("not id = 1 and id = 2 or id = 3")

    assert expr == BoolOp("or", BoolOp("and", Not(Compare("id", "=", 1)), Compare("id", "=", 2)), Compare("id", "=", 3))


def test_parentheses_group() -> None:
    """Parentheses override precedence; ``!`` is ``not``."""
    expr = parse_filter("!(id = 1 or id = 2)")

    assert expr == Not(BoolOp("or", Compare("id", "=", 1), Compare("id", "=", 2)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("email = 'a@b.c'", Compare("email", "=", "a@b.c"), id="string"),
        pytest.param("familyName = 'O''Brien'", Compare("familyName", "=", "O'Brien"), id="doubled-quote"),
        pytest.param("id >= -3", Compare("id", ">=", -3), id="negative-integer"),
        pytest.param("score < 2.75", Compare("score", "<", 2.75), id="decimal"),
        pytest.param("optIn = TRUE", Compare("optIn", "=", True), id="boolean-any-case"),
        pytest.param("emailVerified IS NOT NULL", IsNull("emailVerified", negated=True), id="is-not-null"),
        pytest.param("primaryAddress.city is null", IsNull("primaryAddress.city", negated=False), id="dot-path"),
        pytest.param("id!=1", Compare("id", "!=", 1), id="no-spaces"),
    ],
)
def test_parses(text: str, expected: object) -> None:
    """Literals, keywords in any case, dot paths and operators without spaces."""
    assert parse_filter(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("id = 7", True, id="integer-equal"),
        pytest.param("id != 7", False, id="integer-not-equal"),
        pytest.param("id > 5 and id <= 7", True, id="range"),
        pytest.param("score > 2", True, id="decimal-value"),
        pytest.param("id = '7'", True, id="number-as-string"),
        pytest.param("email = 'ADA@example.com'", False, id="strings-are-exact"),
        pytest.param("email < 'b'", True, id="string-order"),
        pytest.param("familyName = 'O''Brien'", True, id="quote"),
        pytest.param("optIn = true", True, id="boolean"),
        pytest.param("optIn > false", False, id="boolean-has-no-order"),
        pytest.param("emailVerified is null", True, id="null-is-null"),
        pytest.param("emailVerified != 'x'", False, id="null-matches-no-comparison"),
        pytest.param("not emailVerified = 'x'", True, id="not-of-no-match"),
        pytest.param("shoeSize is null", True, id="absent-is-null"),
        pytest.param("primaryAddress.city = 'Leeds'", True, id="nested"),
        pytest.param("primaryAddress.zip is not null", False, id="nested-null"),
        pytest.param("lastUpdated >= '2016-01-01'", True, id="datetime-after-date"),
        pytest.param("lastUpdated < '2016-03-13 19:39:18 +0000'", True, id="datetime-to-the-second"),
        pytest.param("birthday > '1990-12-09'", True, id="date"),
        pytest.param("profiles.domain = 'example.org'", True, id="plural-any-element"),
        pytest.param("profiles.domain = 'x.org'", False, id="plural-no-element"),
        pytest.param("(id = 1 or id = 7) and !(email is null)", True, id="combined"),
    ],
)
def test_matches(text: str, expected: bool) -> None:
    """Comparisons follow SQL for nulls, compare dates as instants and look into plurals."""
    assert matches(parse_filter(text), RECORD) is expected


def test_filter_paths_lists_every_attribute() -> None:
    """The paths a filter reads, for the unknown-attribute check."""
    expr = parse_filter("id > 1 and not (primaryAddress.city is null or email = 'x')")

    assert filter_paths(expr) == {"id", "primaryAddress.city", "email"}


def test_contains_is_485() -> None:
    """``contains`` was removed from Capture: error 485, not 200."""
    with pytest.raises(FilterError) as refused:
        parse_filter("email contains 'ada'")

    assert refused.value.code == 485


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('email = "a@b.c"', id="double-quotes"),
        pytest.param("email = 'a@b.c", id="unclosed-string"),
        pytest.param("id = ", id="no-value"),
        pytest.param("id 7", id="no-operator"),
        pytest.param("id == 7", id="double-equals"),
        pytest.param("email = null", id="null-literal"),
        pytest.param("(id = 7", id="unclosed-parenthesis"),
        pytest.param("id = 7)", id="extra-parenthesis"),
        pytest.param("id = 7 id = 8", id="missing-and"),
        pytest.param("id = 7 and", id="dangling-and"),
        pytest.param("7 = id", id="value-first"),
        pytest.param("email is 'x'", id="is-without-null"),
        pytest.param("email like 'a%'", id="like"),
        pytest.param("", id="empty"),
    ],
)
def test_unparsable_is_200(text: str) -> None:
    """Anything else that does not parse is 200 invalid_argument, with a reason."""
    with pytest.raises(FilterError) as refused:
        parse_filter(text)

    assert refused.value.code == 200
    assert refused.value.reason
