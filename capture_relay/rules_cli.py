"""``capture-relay rules check | explain``: see what the routing rules do before an event does.

``check`` loads the configuration (an invalid one exits 2 like every command), lists the routes
in the order they are tried, and warns about rules that cannot do what they seem to say.
``explain`` runs one event, given as files, through the same code the workers run (candidates,
conditions, payload shaping), without Redis or Capture: it prints which routes match and why the
others do not, and the exact document each destination would receive.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capture_relay.config_args import config_option, settings_from
from service.events import Event
from service.routing_config import Route
from service.settings import Settings
from workers.changes import Change, diff, from_attributes, is_within, path_covers
from workers.payload import build_payload, renamed_path
from workers.rules import (
    FETCHED_EVENTS,
    CompiledRoute,
    Facts,
    FetchPlan,
    RuleBook,
    effective_entity_type,
    root_names,
)

EXIT_OK, EXIT_USAGE = 0, 2
_CHANGE_EVENTS = frozenset({"entityCreated", "entityUpdated"})
_WHEN_NAMES = frozenset({"event", "record", "previous", "changes"})
_EVENT_DEFAULTS: dict[str, Any] = {"event_id": "explain", "source": "v3", "entity_type": "user", "attributes": []}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``rules`` with its sub-commands ``check`` and ``explain`` on the top-level parser."""
    rules = commands.add_parser("rules", help="check the routing rules, or explain what one event would do")
    actions = rules.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)

    check = actions.add_parser("check", help="validate the config and summarise its routes, with warnings")
    config_option(check)
    check.set_defaults(run=run_check)

    explain = actions.add_parser(
        "explain",
        help="show which routes an event matches and the payload each destination gets",
        description="Run one event through the routing rules offline (no Redis, no Capture API calls).",
    )
    config_option(explain)
    explain.add_argument("--event", required=True, metavar="FILE", help="the event envelope as JSON (type required)")
    explain.add_argument("--record", metavar="FILE", help="the record as Capture returns it (JSON)")
    explain.add_argument("--previous", metavar="FILE", help="the previous version of the record (JSON)")
    explain.add_argument("--output", choices=("text", "json"), default="text", help="output format (default text)")
    explain.set_defaults(run=run_explain)


class InputError(Exception):
    """A file given to ``rules explain`` cannot be used; the message names it and says why."""


# --- rules check ---------------------------------------------------------------------------------


def run_check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``rules check``: print the routes in the order they are tried, then any warnings."""
    settings = settings_from(args, environ)
    lines = [f"routes ({len(settings.routes)}), tried in this order:"]
    for index, route in enumerate(settings.routes, 1):
        lines.extend(_describe(index, route))
    lines.append(
        "destinations: "
        + (", ".join(f"{name} ({config.type})" for name, config in settings.destinations.items()) or "none")
    )
    problems = warnings(settings)
    lines.extend(f"warning: {problem}" for problem in problems)
    lines.append(
        f"ok: {len(settings.routes)} route(s), {len(settings.destinations)} destination(s), {len(problems)} warning(s)"
    )
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def _describe(index: int, route: Route) -> list[str]:
    conditions = [
        *([f"changed_any {', '.join(route.changed_any)}"] if route.changed_any else []),
        *([f"changed_all {', '.join(route.changed_all)}"] if route.changed_all else []),
        *([f"when {route.when}"] if route.when else []),
    ]
    shape = [
        *([f"fields {', '.join(route.fields)}"] if route.fields is not None else ["whole record"]),
        *([f"hash {', '.join(route.hash)}"] if route.hash else []),
        *([f"rename {', '.join(f'{old} -> {new}' for old, new in route.rename.items())}"] if route.rename else []),
        *([f"drop {', '.join(route.drop)}"] if route.drop else []),
    ]
    return [
        f"  {index}. {route.name}",
        f"     on:          {', '.join(route.on)}",
        f"     entity_type: {', '.join(route.entity_type) if route.entity_type else 'any'}",
        f"     conditions:  {'; '.join(conditions) or 'none'}",
        f"     to:          {', '.join(route.to)}",
        f"     payload:     {'; '.join(shape)}",
    ]


def warnings(settings: Settings) -> list[str]:
    """What in the routing rules cannot work as written (the config is valid, so none is fatal)."""
    routes = settings.routes
    problems = [] if routes else ["no routes: every event is acknowledged and delivered nowhere"]
    for index, route in enumerate(routes):
        problems.extend(_route_warnings(route))
        problems.extend(_shadowed(route, routes[:index]))
    used = {name for route in routes for name in route.to}
    problems.extend(
        f"destination {name!r} is named by no route: it never receives anything"
        for name in settings.destinations
        if name not in used
    )
    return problems


def _route_warnings(route: Route) -> list[str]:
    problems = []
    name = repr(route.name)
    if (route.changed_any or route.changed_all) and not set(route.on) & _CHANGE_EVENTS:
        problems.append(
            f"route {name} can never match: changed_any/changed_all need entityCreated or entityUpdated in on, "
            "and deleted and test events carry no changes"
        )
    if route.when is not None:
        names = root_names(route.when)
        literals = sorted(names & {"true", "false"})
        if literals:
            problems.append(
                f"route {name}: when reads {', '.join(literals)} as a field name, which is always null; "
                "JMESPath writes literals in backticks: `true`, `false`"
            )
        # A bare null is a field too, but always null, so it does what the operator meant.
        strays = sorted(names - _WHEN_NAMES - {"true", "false", "null"})
        if strays:
            problems.append(
                f"route {name}: when reads {', '.join(strays)}, which is not one of event, record, previous, "
                f"changes, so it is always null (did you mean record.{strays[0]}?)"
            )
    problems.extend(_shaping_warnings(route))
    return problems


def _shaping_warnings(route: Route) -> list[str]:
    """``hash``, ``rename`` and ``drop`` paths that name nothing the payload has at their step."""
    name = repr(route.name)
    # drop runs after rename: a path renamed away is gone by then, and what it named is sent under the new name.
    renamed_away = [
        path
        for path in route.drop
        if any(is_within(path, old) for old in route.rename)
        and not any(path_covers(new, path) for new in route.rename.values())
    ]
    problems = [
        f"route {name}: drop {path} names a path that rename moves away; drop runs after rename, "
        "so it has no effect (name the new path)"
        for path in renamed_away
    ]
    if route.fields is None:
        return problems
    fields = route.fields
    for key, paths in (("hash", route.hash), ("rename", list(route.rename))):
        problems.extend(
            f"route {name}: {key} {path} is outside fields, so it has no effect"
            for path in paths
            if not any(path_covers(field, path) for field in fields)
        )
    # What fields keeps, under the names it has after rename.
    kept = [renamed_path(field, route.rename) for field in fields]
    kept += [new for old, new in route.rename.items() if any(path_covers(field, old) for field in fields)]
    problems.extend(
        f"route {name}: drop {path} is outside fields (after rename), so it has no effect"
        for path in route.drop
        if path not in renamed_away and not any(path_covers(field, path) for field in kept)
    )
    return problems


def _shadowed(route: Route, earlier: list[Route]) -> list[str]:
    """Destinations an earlier unconditional route always takes before ``route`` can reach them."""
    problems = []
    for destination in dict.fromkeys(route.to):
        for before in earlier:
            if destination in before.to and _takes_all_of(before, route):
                problems.append(
                    f"route {route.name!r} never delivers to {destination}: the earlier route {before.name!r} "
                    "has no conditions and takes every event it could match (a destination gets the first "
                    "matching route only)"
                )
                break
    return problems


def _takes_all_of(before: Route, route: Route) -> bool:
    unconditional = not (before.changed_any or before.changed_all or before.when)
    types = before.entity_type is None or (
        route.entity_type is not None and set(route.entity_type) <= set(before.entity_type)
    )
    return unconditional and set(route.on) <= set(before.on) and types


# --- rules explain -------------------------------------------------------------------------------


def run_explain(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``rules explain``: which routes an event matches and the exact payload per destination."""
    settings = settings_from(args, environ)
    try:
        record = _read_record(args.record, "--record")
        previous = _read_record(args.previous, "--previous")
        event = event_from_json(_read_json(args.event, "--event"), record, now=time.time())
    except InputError as exc:
        sys.stderr.write(f"capture-relay: {exc}\n")
        return EXIT_USAGE
    report = explain(settings, event, record, previous)
    if args.output == "json":
        sys.stdout.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(_text(report))
    return EXIT_OK


def explain(
    settings: Settings, event: Event, record: dict[str, Any] | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """What the pipeline would do with ``event``, as one JSON-able report.

    ``record`` and ``previous`` stand for what Capture would answer; each is used only where the
    worker would fetch it (a note says when one is ignored), so the payloads are exactly the
    worker's.
    """
    book = RuleBook.from_settings(settings)
    entity_type = effective_entity_type(event.entity_type, settings)
    candidates = book.candidates(event.type, entity_type)
    plan = book.fetch_plan(candidates, event)
    notes = []
    if not event.entity_type and entity_type:
        notes.append(f"the event names no entity type: routes take it as capture.entity_type {entity_type}")
    record, previous = _as_fetched(event, plan, record, previous, notes)
    facts = Facts(event.to_dict(), record, previous, _changes(event, record, previous, notes))
    delivering = {compiled.name: destinations for compiled, destinations in book.routes_for(candidates, facts)}
    candidate_names = {compiled.name for compiled in candidates}
    taken_by: dict[str, str] = {}
    routes = []
    for compiled in book.routes:
        entry = _route_entry(book, compiled, candidate_names, facts, event, entity_type)
        if compiled.name in delivering:
            entry["delivers_to"] = list(delivering[compiled.name])
            entry["already_taken"] = {name: taken_by[name] for name in compiled.route.to if name in taken_by}
            taken_by.update((name, compiled.name) for name in delivering[compiled.name])
        routes.append(entry)
    by_name = {compiled.name: compiled for compiled in book.routes}
    deliveries = {
        destination: build_payload(event, destination, by_name[route], facts) for destination, route in taken_by.items()
    }
    return {"event": event.to_dict(), "fetch": _plan(plan), "notes": notes, "routes": routes, "deliveries": deliveries}


def _as_fetched(
    event: Event, plan: FetchPlan, record: dict[str, Any] | None, previous: dict[str, Any] | None, notes: list[str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The record and previous version as the worker would have them: only what it fetches, trimmed alike."""
    if not plan.fetch:
        if record is not None or previous is not None:
            why = (
                f"{event.type} events fetch no record"
                if event.type not in FETCHED_EVENTS
                else "no route is a candidate, so the worker fetches nothing"
            )
            notes.append(f"{why}: --record and --previous are ignored")
        return None, None
    if record is None:
        notes.append("no --record: the record is taken as null")
    if previous is not None and not plan.previous:
        why = (
            "a created record has none"
            if event.type == "entityCreated"
            else "no candidate route needs old values the event does not carry"
        )
        notes.append(f"the worker would not fetch the previous version ({why}): --previous is ignored")
        previous = None
    elif previous is None and plan.previous:
        notes.append("the worker would fetch the previous version: without --previous, none is taken to exist")
    # The worker asks Capture for the planned attributes only, and cuts the version to match.
    return plan.trim(record), plan.trim(previous)


def _changes(
    event: Event, record: dict[str, Any] | None, previous: dict[str, Any] | None, notes: list[str]
) -> dict[str, Change]:
    # The same sources, in the same order, as the pipeline, without the Capture calls.
    if event.type == "entityCreated":
        return diff(None, record)
    if event.type != "entityUpdated":
        return {}
    if previous is not None:
        return diff(previous, record)
    if not event.attributes:
        notes.append("no previous version and no attributes in the event: no changes are known")
    return from_attributes(event.attributes, record)


def _route_entry(
    book: RuleBook,
    compiled: CompiledRoute,
    candidates: set[str],
    facts: Facts,
    event: Event,
    entity_type: str | None,
) -> dict[str, Any]:
    route = compiled.route
    if compiled.name not in candidates:
        if event.type not in route.on:
            reason = f"on: {event.type} is not one of {', '.join(route.on)}"
        else:
            reason = f"entity_type: {entity_type} is not one of {', '.join(route.entity_type or ())}"
        return {"name": route.name, "candidate": False, "matched": False, "reason": reason}
    verdict = book.evaluate(compiled, facts)
    return {"name": route.name, "candidate": True, "matched": verdict.matched, "reason": verdict.reason}


def _plan(plan: FetchPlan) -> dict[str, Any]:
    return {
        "record": plan.fetch,
        "attributes": list(plan.attributes) if plan.attributes is not None else None,
        "previous": plan.previous,
    }


def _text(report: dict[str, Any]) -> str:
    event, fetch = report["event"], report["fetch"]
    lines = [f"event: {event['type']} {event['entity_type'] or '-'} {event['uuid'] or '-'} (id {event['event_id']})"]
    if not fetch["record"]:
        lines.append("fetch: nothing")
    else:
        what = "whole record" if fetch["attributes"] is None else f"attributes {', '.join(fetch['attributes'])}"
        lines.append(f"fetch: {what}" + (" + previous version" if fetch["previous"] else ""))
    lines.extend(f"note: {note}" for note in report["notes"])
    lines.append("routes:")
    for entry in report["routes"]:
        lines.append(f"  {entry['name']}: {_outcome(entry)}")
    deliveries = report["deliveries"]
    lines.append(f"deliveries ({len(deliveries)}):" if deliveries else "deliveries: none")
    for destination, payload in deliveries.items():
        lines.append(f"  {destination} (route {payload['route']}):")
        body = json.dumps(payload, indent=2, ensure_ascii=False)
        lines.extend(f"    {line}" for line in body.splitlines())
    return "\n".join(lines) + "\n"


def _outcome(entry: dict[str, Any]) -> str:
    if not entry["candidate"]:
        return f"not a candidate ({entry['reason']})"
    if not entry["matched"]:
        return f"no match ({entry['reason']})"
    text = f"matched -> {', '.join(entry['delivers_to']) or 'nothing'}"
    taken = entry["already_taken"]
    if taken:
        text += "; " + ", ".join(f"{name} already taken by {route}" for name, route in taken.items())
    return text


def _read_json(path: str, option: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(f"{option} {path}: is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} {path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _read_record(path: str | None, option: str) -> dict[str, Any] | None:
    if path is None:
        return None
    data = _read_json(path, option)
    # A saved /entity answer works too: its record is under "result".
    if isinstance(data, dict) and data.get("stat") == "ok" and isinstance(data.get("result"), dict):
        data = data["result"]
    if data is not None and not isinstance(data, dict):
        raise InputError(f"{option} {path}: must be a JSON object (the record), not {type(data).__name__}")
    return data


def event_from_json(data: Any, record: dict[str, Any] | None, *, now: float) -> Event:
    """An event from the JSON of its envelope (``Event.to_dict`` form), with defaults for all but ``type``.

    Raises:
        InputError: not an object, no ``type``, an unknown key or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise InputError(f"--event: must be a JSON object (the event envelope), not {type(data).__name__}")
    known = set(Event.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"--event: unknown key {unknown[0]!r}; the envelope has {', '.join(sorted(known))}")
    if not isinstance(data.get("type"), str) or not data["type"]:
        raise InputError("--event: 'type' is required, e.g. entityUpdated")
    uuid = record.get("uuid") if record is not None else None
    values = {**_EVENT_DEFAULTS, "uuid": uuid if isinstance(uuid, str) else "", "received_at": now, **data}
    values.setdefault("delivery_id", values["event_id"])
    _check_types(values)
    return Event.from_dict(values)


def _check_types(values: dict[str, Any]) -> None:
    for key in ("event_id", "delivery_id", "uuid"):
        if not isinstance(values[key], str):
            raise InputError(f"--event: {key!r} must be a string")
    if values["source"] not in ("v3", "legacy"):
        raise InputError("--event: 'source' must be v3 or legacy")
    for key in ("entity_type", "application_id", "client_id"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise InputError(f"--event: {key!r} must be a string or null")
    attributes = values["attributes"]
    if attributes is not None and (
        not isinstance(attributes, list) or not all(isinstance(item, str) for item in attributes)
    ):
        raise InputError("--event: 'attributes' must be a list of dot paths")
    for key, optional in (("occurred_at", True), ("received_at", False)):
        value = values.get(key)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"--event: {key!r} must be epoch seconds (a number)")
