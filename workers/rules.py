"""Routing rules at work: which routes an event may match, what to fetch for them, and which match.

The configuration (``service/routing_config.py``) has already validated every route; this module
compiles them once and answers the pipeline's three questions, in the order it asks them:

1. :meth:`RuleBook.candidates`: the routes whose ``on`` and ``entity_type`` take the event
   (cheap, before any Capture call);
2. :meth:`RuleBook.fetch_plan`: what to fetch from Capture for them, since Capture calls are the
   scarce resource: only the attributes the routes name where that is known, and the previous
   version only when a condition needs old values the event does not carry;
3. :meth:`RuleBook.routes_for`: the routes whose conditions hold (``changed_any``,
   ``changed_all``, ``when``), each with the destinations it delivers to: a destination takes the
   first matching route, in config order, that names it, so an event reaches it once.

A ``when`` that fails at run time (a type error on an unexpected record) does not match; it never
fails the event. Reasons are short and name config paths only, never record values: they are logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.parser

from service.events import Event
from service.routing_config import Route
from service.settings import Settings
from workers.capture_api import Record
from workers.changes import Change, changed_at, is_within, project

# Attributes every fetch includes: the identity and the stale guard's clock.
ALWAYS_FETCHED = ("id", "lastUpdated", "uuid")
# Event types whose record is fetched; a deletion has nothing left to fetch, a test no record.
FETCHED_EVENTS = frozenset({"entityCreated", "entityUpdated"})
# The names a ``when`` may use for what only a previous version (or the change list) can give.
_PREVIOUS_NAMES = frozenset({"previous", "changes"})


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules are evaluated over.

    Attributes:
        event: the event envelope in its :meth:`Event.to_dict` form.
        record: the record as fetched, ``None`` when deleted or not fetched.
        previous: the previous version, ``None`` when not fetched (or none exists).
        changes: changed dot paths, from a diff or from the event's ``attributes`` list.
    """

    event: dict[str, Any]
    record: Record | None = None
    previous: Record | None = None
    changes: dict[str, Change] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a route matched, and if not, why (config paths only, no values)."""

    matched: bool
    reason: str


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """What the pipeline fetches from Capture for an event.

    Attributes:
        fetch: whether to fetch the record at all.
        attributes: the top-level attribute names to ask for, ``None`` for the whole record.
        previous: whether to fetch the previous version too (``/versions/entity``).
    """

    fetch: bool
    attributes: tuple[str, ...] | None = None
    previous: bool = False

    def trim(self, version: Record | None) -> Record | None:
        """``version`` cut to the planned attributes, so that it compares with the record fetched.

        ``/versions/entity`` returns a whole version: diffing it against a record fetched with
        :attr:`attributes` would report every other attribute as removed.
        """
        if version is None or self.attributes is None:
            return version
        return project(version, self.attributes)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route with its ``when`` compiled and what it needs from Capture worked out once.

    Attributes:
        route: the route as configured.
        expression: the compiled ``when``, if any.
        needs_previous: ``when`` refers to ``previous`` or ``changes``, so old values must be known.
        needs_full_record: the payload is the whole record (no ``fields``) or ``when`` may read
            any attribute.
    """

    route: Route
    expression: jmespath.parser.ParsedResult | None
    needs_previous: bool
    needs_full_record: bool

    @classmethod
    def compile(cls, route: Route) -> CompiledRoute:
        """Compile ``route`` (already validated at config load, so it compiles)."""
        expression = jmespath.compile(route.when) if route.when is not None else None
        names = _field_names(expression.parsed) if expression is not None else set()
        return cls(
            route=route,
            expression=expression,
            needs_previous=bool(names & _PREVIOUS_NAMES),
            needs_full_record=route.fields is None or expression is not None,
        )

    @property
    def name(self) -> str:
        """The route's name."""
        return self.route.name

    @property
    def has_change_conditions(self) -> bool:
        """Whether the route has ``changed_any`` or ``changed_all``."""
        return bool(self.route.changed_any or self.route.changed_all)

    def attribute_paths(self) -> list[str]:
        """Every dot path the route reads from a record: fields, hash, changed_*, rename keys."""
        route = self.route
        return [*(route.fields or ()), *route.hash, *route.changed_any, *route.changed_all, *route.rename]


def _field_names(node: Any) -> set[str]:
    """Every identifier (JMESPath ``field`` node) in a parsed expression, wherever it appears."""
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if not isinstance(current, dict):
            continue
        if current.get("type") == "field":
            names.add(str(current.get("value")))
        stack.extend(current.get("children") or ())
    return names


# Node types whose children all read the same document as the node itself.
_SAME_SCOPE = frozenset(
    {"and_expression", "or_expression", "not_expression", "comparator", "function_expression"}
    | {"multi_select_list", "multi_select_dict", "key_val_pair", "flatten"}
)
# Node types whose first child reads the node's document and the others what it produced.
_LEFT_SCOPE = frozenset({"subexpression", "index_expression", "projection", "filter_projection"})
_LEFT_SCOPE |= {"value_projection", "pipe"}


def root_names(expression: str) -> set[str]:
    """The identifiers a JMESPath expression looks up in the document it is evaluated over.

    For ``record.email && length(changes) > `1``` that is ``record`` and ``changes``: names
    inside projections, filters, pipes and ``&`` expressions read other values and are not
    counted. ``rules check`` uses it to flag a ``when`` that names no part of
    ``{event, record, previous, changes}`` (``email`` for ``record.email``), which is always null.
    """
    names: set[str] = set()
    stack: list[Any] = [jmespath.compile(expression).parsed]
    while stack:
        node = stack.pop()
        kind, children = node.get("type"), node.get("children") or []
        if kind == "field":
            names.add(str(node.get("value")))
        elif kind in _SAME_SCOPE:
            stack.extend(child for child in children if child.get("type") != "expref")
        elif kind in _LEFT_SCOPE and children:
            stack.append(children[0])
    return names


def effective_entity_type(event_entity_type: str | None, settings: Settings) -> str | None:
    """The entity type routes filter an event on: its own, else the configured ``capture.entity_type``.

    Legacy webhooks may name no entity type; the relay registers them for one, so the configured
    one is what they are about. ``None`` only without either.
    """
    if event_entity_type:
        return event_entity_type
    return settings.capture.entity_type if settings.capture is not None else None


class RuleBook:
    """The configured routes, compiled, in config order."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(CompiledRoute.compile(route) for route in routes)

    @classmethod
    def from_settings(cls, settings: Settings) -> RuleBook:
        """The rule book of a loaded configuration."""
        return cls(settings.routes)

    def candidates(self, event_type: str, entity_type: str | None) -> list[CompiledRoute]:
        """Routes whose ``on`` lists ``event_type`` and whose ``entity_type`` (if set) takes ``entity_type``.

        A ``test`` event therefore only reaches routes that list ``test``. An ``entity_type`` of
        ``None`` passes any filter: pass :func:`effective_entity_type`, which gives legacy events
        without one the configured ``capture.entity_type``.
        """
        return [
            compiled
            for compiled in self.routes
            if event_type in compiled.route.on
            and (entity_type is None or compiled.route.entity_type is None or entity_type in compiled.route.entity_type)
        ]

    def fetch_plan(self, candidates: Sequence[CompiledRoute], event: Event) -> FetchPlan:
        """What to fetch from Capture before the candidates can be evaluated and shaped.

        Nothing for deletions, tests, or events no route may take. The whole record when a
        candidate needs it, else the union of the top-level attributes the candidates name (plus
        ``id``, ``lastUpdated``, ``uuid``). The previous version for an update when a ``when``
        reads ``previous`` or ``changes``, or when a change condition has no ``attributes`` list
        to go by (legacy events never carry one).
        """
        if not candidates or event.type not in FETCHED_EVENTS:
            return FetchPlan(fetch=False)
        attributes: tuple[str, ...] | None = None
        if not any(compiled.needs_full_record for compiled in candidates):
            names = {path.split(".", 1)[0] for compiled in candidates for path in compiled.attribute_paths()}
            attributes = tuple(sorted(names | set(ALWAYS_FETCHED)))
        # A created record has no previous version: every attribute counts as changed.
        previous = event.type == "entityUpdated" and any(
            compiled.needs_previous or (compiled.has_change_conditions and not event.attributes)
            for compiled in candidates
        )
        return FetchPlan(fetch=True, attributes=attributes, previous=previous)

    def evaluate(self, route: CompiledRoute, facts: Facts) -> Verdict:
        """Whether ``route``'s conditions hold for ``facts`` (``on``/``entity_type`` are :meth:`candidates`')."""
        return _evaluate(route, facts, _WhenData(facts))

    def routes_for(
        self, candidates: Sequence[CompiledRoute], facts: Facts
    ) -> list[tuple[CompiledRoute, tuple[str, ...]]]:
        """The matching candidates, in config order, each with the destinations it delivers to.

        A destination receives only the first matching route that names it; a matching route
        whose destinations were all taken by earlier routes is listed with an empty tuple.
        """
        data = _WhenData(facts)
        taken: set[str] = set()
        matched: list[tuple[CompiledRoute, tuple[str, ...]]] = []
        for compiled in candidates:
            if not _evaluate(compiled, facts, data).matched:
                continue
            mine = tuple(dict.fromkeys(name for name in compiled.route.to if name not in taken))
            taken.update(mine)
            matched.append((compiled, mine))
        return matched


def _evaluate(compiled: CompiledRoute, facts: Facts, data: _WhenData) -> Verdict:
    # Cheapest first: the change conditions look at paths, ``when`` runs an interpreter.
    route, changes = compiled.route, facts.changes
    if route.changed_any and not any(_changed(path, changes) for path in route.changed_any):
        return Verdict(False, f"changed_any: none of {', '.join(route.changed_any)} changed")
    missing = [path for path in route.changed_all if not _changed(path, changes)]
    if missing:
        return Verdict(False, f"changed_all: {', '.join(missing)} did not change")
    if compiled.expression is not None:
        try:
            result = compiled.expression.search(data.value())
        except (ValueError, TypeError) as exc:
            # JMESPath errors are ValueErrors, mixed-type comparisons TypeErrors. Their messages
            # quote record values, so only the error's kind is kept.
            return Verdict(False, f"when: failed to evaluate ({type(exc).__name__})")
        if not truthy(result):
            return Verdict(False, "when: evaluated to false")
    return Verdict(True, "matched")


def _changed(route_path: str, changes: dict[str, Change]) -> bool:
    """Whether ``route_path`` changed: a change at or below it, or a change of a whole value around it.

    Change paths never go into a plural, so a route path inside one (``profiles.identifier``)
    meets the change of the whole plural; it counts when that attribute differs in some element
    (or when the old value is not known). Likewise for a whole object replaced by a scalar.
    """
    for path, change in changes.items():
        if is_within(path, route_path):
            return True
        if route_path.startswith(f"{path}.") and changed_at(change, route_path[len(path) + 1 :]):
            return True
    return False


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null and empty strings, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return bool(value)
    return True


def render_changes(changes: dict[str, Change]) -> dict[str, dict[str, Any]]:
    """Changes as JSON: ``{path: {"old": ..., "new": ...}}``, without ``old`` where it is not known."""
    return {
        path: {"old": change.old, "new": change.new} if change.old_known else {"new": change.new}
        for path, change in changes.items()
    }


class _WhenData:
    """The document a ``when`` reads, built once per event and only if some route has a ``when``."""

    __slots__ = ("_facts", "_value")

    def __init__(self, facts: Facts) -> None:
        self._facts = facts
        self._value: dict[str, Any] | None = None

    def value(self) -> dict[str, Any]:
        if self._value is None:
            facts = self._facts
            self._value = {
                "event": facts.event,
                "record": facts.record,
                "previous": facts.previous,
                "changes": render_changes(facts.changes),
            }
        return self._value
