"""``capture-relay register``: make Capture's webhooks and v3 subscriptions match ``webhooks:``.

::

    register [--config FILE] [--apply | --check] [--prune] [--output text|json]

Without ``--apply`` it reads the current state and prints the plan, changing nothing; ``--check``
does the same and exits 3 when changes are pending (a drift check for CI). ``--prune`` adds the
deletion of extras that carry the managed marker (``webhooks.v3.title_prefix``,
``webhooks.legacy.callback_prefix``); anything else is never deleted. It runs unattended (a Helm
hook, a CronJob): no prompts, the plan and the outcome on stdout, JSON log lines on stderr.

Exit status: 0 nothing pending, or everything applied; 1 Capture refused a call or could not be
reached (its code, error and request_token are printed); 2 bad usage or configuration; 3 with
``--check``, changes pending. Legacy webhooks are managed through the Capture API, whose call
limit all processes share through Redis, so declaring ``webhooks.legacy`` needs ``redis_url``
reachable; v3 subscriptions alone do not.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

import redis
import structlog

from capture_relay.config_args import config_option, settings_from
from service.logs import configure_logging
from service.redisconn import connect_service_sync
from service.secret import mask_url
from service.settings import ConfigError, Settings
from workers.capture_errors import CaptureApiError, CaptureError, CaptureHttpError, CaptureOutcomeUnknownError
from workers.capture_setup import capture_client, subscriptions_client
from workers.registration import ApplyResult, Clients, apply, read_plan
from workers.registration_plan import Action, Plan, PlanStep

EXIT_OK, EXIT_FAILURE, EXIT_PENDING = 0, 1, 3
_URL_FIELDS = frozenset({"endpoint", "callback"})
# Shown in the NAME column already.
_NAME_FIELDS = frozenset({"title", "callback", "event_type", "entity_type"})

log = structlog.get_logger(__name__)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``register`` on the top-level ``commands``."""
    register = commands.add_parser(
        "register",
        help="reconcile Capture's webhooks and v3 subscriptions with the webhooks: section",
        description="Read the registrations Capture has, compare them with webhooks:, and print the plan. "
        "Changes Capture only with --apply.",
        epilog="Exit status: 0 in sync or all applied, 1 Capture error, 2 bad usage or config, "
        "3 changes pending (--check).",
    )
    config_option(register)
    mode = register.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="make the changes (creates, then updates, then deletes)")
    mode.add_argument("--check", action="store_true", help="change nothing; exit 3 when changes are pending")
    register.add_argument(
        "--prune",
        action="store_true",
        help="also delete registrations that are not declared but carry the managed marker "
        "(webhooks.v3.title_prefix, webhooks.legacy.callback_prefix); others are never deleted",
    )
    register.add_argument("--output", choices=("text", "json"), default="text", help="output format (default text)")
    register.set_defaults(run=run)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``register``: plan, and with ``--apply`` apply; returns the exit status."""
    settings = settings_from(args, environ)
    if settings.webhooks.v3 is None and settings.webhooks.legacy is None:
        raise ConfigError([("webhooks", "nothing to register: declare webhooks.v3 and/or webhooks.legacy")])
    # stdout carries the plan (JSON with --output json); log lines go to stderr so they never mix.
    configure_logging(settings.logging.level, settings.logging.format, stream=sys.stderr)
    mode = "apply" if args.apply else "check" if args.check else "plan"
    with ExitStack() as stack:
        try:
            clients = _open_clients(settings, stack)
        except redis.RedisError as exc:
            # One line an operator can act on; the password in the URL stays masked.
            sys.stderr.write(
                f"capture-relay: cannot reach Redis at {mask_url(settings.redis_url.reveal())} ({exc}); "
                "register needs it for the Capture call limit shared with the workers (webhooks.legacy)\n"
            )
            return EXIT_FAILURE
        try:
            plan = read_plan(settings.webhooks, clients, default_entity_type=_entity_type(settings), prune=args.prune)
        except CaptureError as exc:
            log.error(
                "registration.read_failed",
                reason=exc.reason,
                endpoint=exc.endpoint,
                capture_code=getattr(exc, "code", None),
                request_token=getattr(exc, "request_token", None),
                status=getattr(exc, "http_status", None),
            )
            _write(args.output, mode, None, None, exc)
            return EXIT_FAILURE
        result = apply(plan, clients, settle=_settle(settings)) if args.apply else None
    _write(args.output, mode, plan, result, result.error if result is not None else None)
    log.info(
        "registration.done" if args.apply else "registration.planned",
        outcome="failed" if result is not None and result.error is not None else "ok",
        pending=len(plan.pending),
        applied=len(result.done) if result is not None else 0,
    )
    if result is not None:
        return EXIT_OK if result.error is None else EXIT_FAILURE
    return EXIT_PENDING if args.check and plan.pending else EXIT_OK


def _open_clients(settings: Settings, stack: ExitStack) -> Clients:
    """Open a client for each declared kind; ``stack`` closes them.

    Raises:
        redis.RedisError: legacy webhooks are declared and Redis does not answer.
    """
    capture = settings.capture
    if capture is None:
        return Clients()  # unreachable: validation requires capture: for either kind
    subscriptions = stack.enter_context(subscriptions_client(capture)) if settings.webhooks.v3 is not None else None
    legacy = None
    if settings.webhooks.legacy is not None:
        connection = stack.enter_context(connect_service_sync(settings.redis_url))
        # Fail now with one clear line, not after capture.retry_deadline of limiter errors.
        connection.ping()
        legacy = stack.enter_context(capture_client(capture, connection=connection))
    return Clients(subscriptions=subscriptions, capture=legacy)


def _entity_type(settings: Settings) -> str:
    return settings.capture.entity_type if settings.capture is not None else "user"


def _settle(settings: Settings) -> float:
    # A call that timed out on our side may still be at work in Capture for about as long again.
    return settings.capture.timeout if settings.capture is not None else 10.0


# --- output ----------------------------------------------------------------------------------------


def _write(output: str, mode: str, plan: Plan | None, result: ApplyResult | None, error: CaptureError | None) -> None:
    if output == "json":
        document = _report_json(mode, plan, result, error)
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(_report_text(mode, plan, result, error))


def _report_json(
    mode: str, plan: Plan | None, result: ApplyResult | None, error: CaptureError | None
) -> dict[str, Any]:
    """The JSON document ``--output json`` prints: the steps, their results and the error, if any."""
    steps = plan.steps if plan is not None else ()
    return {
        "mode": mode,
        "prune": plan.prune if plan is not None else None,
        "pending": len(plan.pending) if plan is not None else None,
        "summary": {action: plan.count(action) for action in _ACTIONS} if plan is not None else None,
        "steps": [
            {
                "kind": step.kind,
                "action": step.action,
                "name": step.name,
                "id": step.target_id,
                "managed": step.managed,
                "fields": _shown(step.fields),
                "before": _shown(step.before),
                "result": _result(step, result),
            }
            for step in steps
        ],
        "applied": len(result.done) if result is not None else 0,
        "error": _error_json(error, result.failed if result is not None else None) if error is not None else None,
    }


_ACTIONS: tuple[Action, ...] = ("create", "update", "delete", "unchanged", "extra")


def _report_text(mode: str, plan: Plan | None, result: ApplyResult | None, error: CaptureError | None) -> str:
    """The table and summary the text output prints."""
    lines: list[str] = []
    if plan is not None:
        rows = [("KIND", "ACTION", "NAME", "DETAIL", *(("RESULT",) if result is not None else ()))]
        for step in plan.steps:
            outcome = _result(step, result) or ""
            rows.append((step.kind, step.action, step.name, _detail(step), *((outcome,) if result is not None else ())))
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
        lines += [
            "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
            for row in rows
        ]
        lines.append(_summary(mode, plan, result))
    if error is not None:
        lines.append(_error_line(error, result.failed if result is not None else None))
    return "\n".join(lines) + "\n"


def _summary(mode: str, plan: Plan, result: ApplyResult | None) -> str:
    counts = (
        f"{plan.count('create')} to create, {plan.count('update')} to update, {plan.count('delete')} to delete, "
        f"{plan.count('unchanged')} unchanged, {plan.count('extra')} extra kept"
    )
    if not plan.pending:
        return f"no changes ({counts})"
    if result is None:
        hint = "run with --apply to make them" if mode == "plan" else "changes pending"
        return f"plan: {counts}; {hint}"
    if result.error is None:
        return (
            f"applied {len(result.done)} change(s): {plan.count('create')} created, {plan.count('update')} updated, "
            f"{plan.count('delete')} deleted; {plan.count('unchanged')} unchanged, {plan.count('extra')} extra kept"
        )
    return (
        f"stopped after {len(result.done)} of {len(plan.pending)} change(s); "
        f"{len(result.not_attempted)} not attempted; run register again once the error is fixed"
    )


def _detail(step: PlanStep) -> str:
    if step.action == "create":
        return ", ".join(
            f"{name}={_value(name, value)}" for name, value in step.fields.items() if name not in _NAME_FIELDS
        )
    if step.action == "update":
        return "; ".join(
            f"{name}: {_value(name, step.before.get(name))} -> {_value(name, value)}"
            for name, value in step.fields.items()
        )
    if step.action == "delete":
        return "managed, not declared: deleted by --prune"
    if step.action == "extra":
        return "managed, not declared: --prune deletes it" if step.managed else "not managed: never deleted"
    return ""


def _value(name: str, value: Any) -> str:
    if name in _URL_FIELDS and isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "-"
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _shown(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: mask_url(value) if name in _URL_FIELDS and isinstance(value, str) else value
        for name, value in fields.items()
    }


def _result(step: PlanStep, result: ApplyResult | None) -> str | None:
    if result is None or not step.pending:
        return None
    if any(done is step for done in result.done):
        return "done"
    return "failed" if step is result.failed else "not_attempted"


def _error_json(error: CaptureError, step: PlanStep | None) -> dict[str, Any]:
    cause = error.cause if isinstance(error, CaptureOutcomeUnknownError) else error
    return {
        "kind": step.kind if step is not None else None,
        "action": step.action if step is not None else None,
        "name": step.name if step is not None else None,
        "endpoint": error.endpoint,
        "reason": error.reason,
        "message": str(error),
        "code": cause.code if isinstance(cause, CaptureApiError) else None,
        "error": cause.error if isinstance(cause, CaptureApiError) else None,
        "request_token": cause.request_token if isinstance(cause, CaptureApiError) else None,
        "http_status": cause.http_status if isinstance(cause, CaptureApiError | CaptureHttpError) else None,
    }


def _error_line(error: CaptureError, step: PlanStep | None) -> str:
    where = f"{step.kind} {step.action} {step.name!r}" if step is not None else "reading the current state"
    detail = _error_json(error, step)
    if detail["code"] is not None:
        said = f"code {detail['code']} {detail['error']}, request_token {detail['request_token'] or '-'}"
    elif detail["http_status"] is not None:
        said = f"HTTP {detail['http_status']}"
    else:
        said = error.reason
    advice = (
        "\n  it was not sent again, so that nothing is registered twice: run register again to reconcile"
        if isinstance(error, CaptureOutcomeUnknownError)
        else ""
    )
    return f"error: {where} failed: {said} ({error.endpoint})\n  {error}{advice}"
