"""Capture's ``/entity.find`` filter language: parse a filter, list its paths, test a record.

Grammar (keywords are case-insensitive)::

    filter     := or
    or         := and ("or" and)*
    and        := unary ("and" unary)*
    unary      := ("not" | "!") unary | "(" filter ")" | comparison
    comparison := path ("=" | "!=" | ">" | ">=" | "<" | "<=") literal
                | path "is" ["not"] "null"
    literal    := 'single quoted' ('' inside is one quote) | number | true | false
    path       := name ("." name)*

``contains`` was removed from Capture and is error 485; anything else that does not parse is
200 ``invalid_argument``. Comparisons follow SQL: a null attribute matches no comparison (not
even ``!=``), only ``is null``. Two date or datetime strings (``'2016-01-01'``,
``'2016-03-13 19:39:17 +0000'``) compare as instants; a path into a plural matches when any
element does.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simulator.profiles import parse_capture_time


class FilterError(ValueError):
    """A filter Capture would refuse; ``code`` is 200 (does not parse) or 485 (``contains``)."""

    def __init__(self, reason: str, code: int = 200) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True, slots=True)
class Compare:
    """``path <op> value``."""

    path: str
    op: str
    value: str | float | int | bool


@dataclass(frozen=True, slots=True)
class IsNull:
    """``path is null`` (``negated``: ``is not null``)."""

    path: str
    negated: bool


@dataclass(frozen=True, slots=True)
class Not:
    """``not expr``."""

    expr: Expr


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``left and right`` or ``left or right``."""

    op: str
    left: Expr
    right: Expr


Expr = Compare | IsNull | Not | BoolOp

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>'(?:[^']|'')*')
    |(?P<number>-?\d+(?:\.\d+)?(?![\w.]))
    |(?P<op>!=|>=|<=|=|>|<)
    |(?P<punct>[()!])
    |(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = frozenset({"and", "or", "not", "is", "null", "true", "false", "contains"})
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_DATE_LIKE = re.compile(r"^\d{4}-\d{2}-\d{2}(?: \d{2}:\d{2}:\d{2}(?:\.\d+)?(?: [+-]\d{4})?)?$")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string, number, op, punct, keyword, path, end
    text: str


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise FilterError(f"unexpected character {text[position:].lstrip()[:1]!r} at {position}")
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "word":
            kind = "keyword" if value.lower() in _KEYWORDS else "path"
            value = value.lower() if kind == "keyword" else value
        tokens.append(_Token(kind, value))
        position = match.end()
    return [*tokens, _Token("end", "")]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def accept(self, kind: str, text: str) -> bool:
        if self.peek().kind == kind and self.peek().text == text:
            self.index += 1
            return True
        return False

    def parse(self) -> Expr:
        expr = self.or_()
        if self.peek().kind != "end":
            raise FilterError(f"unexpected {self.peek().text!r} after a complete condition")
        return expr

    def or_(self) -> Expr:
        expr = self.and_()
        while self.accept("keyword", "or"):
            expr = BoolOp("or", expr, self.and_())
        return expr

    def and_(self) -> Expr:
        expr = self.unary()
        while self.accept("keyword", "and"):
            expr = BoolOp("and", expr, self.unary())
        return expr

    def unary(self) -> Expr:
        if self.accept("keyword", "not") or self.accept("punct", "!"):
            return Not(self.unary())
        if self.accept("punct", "("):
            expr = self.or_()
            if not self.accept("punct", ")"):
                raise FilterError("missing ')'")
            return expr
        return self.comparison()

    def comparison(self) -> Expr:
        token = self.take()
        if token.kind != "path":
            raise FilterError(f"expected an attribute name, got {token.text or 'the end'!r}")
        if self.accept("keyword", "is"):
            negated = self.accept("keyword", "not")
            if not self.accept("keyword", "null"):
                raise FilterError(f"expected 'null' after '{token.text} is'")
            return IsNull(token.text, negated)
        if self.peek() == _Token("keyword", "contains"):
            raise FilterError("the contains operator is no longer supported", code=485)
        op = self.take()
        if op.kind != "op":
            raise FilterError(f"expected an operator after {token.text!r}, got {op.text or 'the end'!r}")
        return Compare(token.text, op.text, self.literal())

    def literal(self) -> str | float | int | bool:
        token = self.take()
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "keyword" and token.text in ("true", "false"):
            return token.text == "true"
        raise FilterError(f"expected a value ('text', a number, true or false), got {token.text or 'the end'!r}")


def parse_filter(text: str) -> Expr:
    """Parse a filter.

    Raises:
        FilterError: with code 485 for ``contains``, 200 for anything else that does not parse.
    """
    return _Parser(text).parse()


def filter_paths(expr: Expr) -> set[str]:
    """The attribute paths a filter reads."""
    if isinstance(expr, Compare | IsNull):
        return {expr.path}
    if isinstance(expr, Not):
        return filter_paths(expr.expr)
    return filter_paths(expr.left) | filter_paths(expr.right)


def matches(expr: Expr, record: dict[str, Any]) -> bool:
    """Whether ``record`` satisfies the filter."""
    if isinstance(expr, IsNull):
        present = any(value is not None for value in _values(record, expr.path))
        return present if expr.negated else not present
    if isinstance(expr, Compare):
        return any(_compare(value, expr.op, expr.value) for value in _values(record, expr.path))
    if isinstance(expr, Not):
        return not matches(expr.expr, record)
    if expr.op == "and":
        return matches(expr.left, record) and matches(expr.right, record)
    return matches(expr.left, record) or matches(expr.right, record)


def _values(value: Any, path: str) -> Iterator[Any]:
    head, _, rest = path.partition(".")
    if isinstance(value, list):
        for element in value:
            yield from _values(element, path)
        return
    if not isinstance(value, dict):
        return
    found = value.get(head)
    if rest:
        yield from _values(found, rest)
    elif isinstance(found, list):
        yield from found
    else:
        yield found


def _compare(value: Any, op: str, literal: str | float | int | bool) -> bool:
    if value is None:
        return False
    compare = _COMPARE[op]
    if isinstance(literal, bool) or isinstance(value, bool):
        return isinstance(literal, bool) and isinstance(value, bool) and op in ("=", "!=") and compare(value, literal)
    if isinstance(value, int | float):
        number = _number(literal)
        return number is not None and compare(value, number)
    if isinstance(value, str):
        text = literal if isinstance(literal, str) else str(literal)
        instants = _instant(value), _instant(text)
        if instants[0] is not None and instants[1] is not None:
            return compare(instants[0], instants[1])
        return compare(value, text)
    return False


def _number(literal: str | float | int) -> float | None:
    if isinstance(literal, str):
        try:
            return float(literal)
        except ValueError:
            return None
    return literal


def _instant(text: str) -> float | None:
    if not _DATE_LIKE.match(text):
        return None
    if len(text) == 10:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    try:
        return parse_capture_time(text)
    except ValueError:
        return None
