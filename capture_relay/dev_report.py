"""What ``capture-relay dev`` has seen so far, and how each observation is printed.

``Observer`` gathers the three real sources of ``dev_observe`` (the ingress's answers, the
events worker's ``event.processed`` lines and the receiver's deliveries, plus the deliveries
worker's lines about attempts that did not deliver) into one view with cursors, so that the
story can wait for a condition and ``--keep-running`` can print whatever arrives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from capture_relay.dev_observe import ARCHIVE, Delivered, WebhookAnswer
from capture_relay.dev_stack import Stack

INDENT = "      "
# Record attributes Capture maintains itself: left out of the printed payloads to keep them short.
_HIDDEN_RECORD_KEYS = frozenset({"id", "uuid", "created", "lastUpdated"})
_LONGEST_VALUE = 24


@dataclass(frozen=True, slots=True)
class Processed:
    """An ``event.processed`` line of the events worker."""

    event_id: str
    type: str
    uuid: str
    outcome: str  # routed, unrouted, gone
    destinations: int


@dataclass(frozen=True, slots=True)
class AttemptNote:
    """A line of the deliveries worker about an attempt that did not deliver (retry, dead letter, ...)."""

    event: str
    destination: str
    route: str
    reason: str


Observation = WebhookAnswer | Processed | Delivered | AttemptNote


class WaitTimeoutError(RuntimeError):
    """What the story waited for did not happen in time; the message says what it was."""


@dataclass
class Observer:
    """Everything observed so far; :meth:`poll` adds what is new and returns it."""

    stack: Stack
    answers: list[WebhookAnswer] = field(default_factory=list)
    processed: dict[str, Processed] = field(default_factory=dict)
    delivered: list[Delivered] = field(default_factory=list)

    def poll(self) -> list[Observation]:
        """Read every source once; returns the new observations (answers, processing, deliveries)."""
        new: list[Observation] = []
        answers = self.stack.wire.answers(len(self.answers))
        self.answers.extend(answers)
        new.extend(answers)
        for line in self.stack.events_log.read():
            if line.get("event") == "event.processed":
                processed = Processed(
                    event_id=str(line.get("event_id", "")),
                    type=str(line.get("type", "")),
                    uuid=str(line.get("uuid", "")),
                    outcome=str(line.get("outcome", "")),
                    destinations=int(line.get("destinations", 0)),
                )
                self.processed[processed.event_id] = processed
                new.append(processed)
        deliveries = self.stack.receiver.deliveries(len(self.delivered))
        self.delivered.extend(deliveries)
        new.extend(deliveries)
        for line in self.stack.deliveries_log.read():
            event = str(line.get("event", ""))
            if event.startswith("delivery.") and event != "delivery.delivered":
                reason = str(line.get("reason", line.get("outcome", "")))
                new.append(AttemptNote(event, str(line.get("destination")), str(line.get("route")), reason))
        return new

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        """Poll until ``condition()`` returns something truthy, and return that.

        Raises:
            WaitTimeoutError: naming ``what`` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            found = condition()
            if found:
                return found
            if time.monotonic() > deadline:
                raise WaitTimeoutError(f"{what}: not seen within {timeout:.0f} s")
            time.sleep(0.02)

    def deliveries_of(self, event_id: str) -> list[Delivered]:
        """The deliveries of one event, in the order they arrived."""
        return [d for d in self.delivered if d.payload.get("event_id") == event_id]


def line(label: str, text: str) -> str:
    """One indented, labelled line of the report."""
    return f"{INDENT}{label:<9} {text}"


def describe(observation: Observation) -> str:
    """The report line for any observation (``--keep-running`` prints these as they come)."""
    if isinstance(observation, WebhookAnswer):
        return answer_line(observation, with_event=True)
    if isinstance(observation, Processed):
        return processed_line(observation, with_event=True)
    if isinstance(observation, Delivered):
        return delivered_line(observation)
    return line("delivery", f"{observation.destination}: {observation.event} ({observation.reason})")


def answer_line(answer: WebhookAnswer, *, with_event: bool = False) -> str:
    """What the ingress said: verified and stored, a duplicate, or rejected and why."""
    about = f"{' '.join(filter(None, (answer.kind, short_id(answer.uuid))))}: " if with_event else ""
    ids = ", ".join(short_id(event_id) for event_id in answer.event_ids)
    if answer.outcome == "accepted":
        kid = short_id(str(answer.header.get("kid", "?")))
        text = f"{answer.status} accepted: signature verified (RS256, kid {kid} from the JWKS), stored as event {ids}"
    elif answer.outcome == "duplicate":
        jtis = ", ".join(short_id(jti) for jti in answer.delivery_ids)
        text = f"{answer.status} duplicate: delivery {jtis} was accepted before; nothing stored again"
    else:
        reason = answer.answer.get("reason", "?")
        text = f"{answer.status} {answer.outcome}, {reason}: {answer.answer.get('detail', '')}"
    return line("ingress", about + text)


def processed_line(processed: Processed, *, with_event: bool = False) -> str:
    """What the events worker did with one event."""
    about = ""
    if with_event:
        subject = " ".join(filter(None, (processed.type, short_id(processed.uuid))))
        about = f"{subject} (event {short_id(processed.event_id)}): "
    count = f"{processed.destinations} deliver{'y' if processed.destinations == 1 else 'ies'} queued"
    text = {
        "routed": f"record fetched from Capture, routes evaluated: {count}",
        "unrouted": "no route matched: nothing to deliver",
        "gone": f"the record is gone from Capture, handled as a deletion: {count}",
    }.get(processed.outcome, f"{processed.outcome}: {count}")
    if processed.type == "entityDeleted" and processed.outcome == "routed":
        text = f"a deletion (nothing to fetch), routes evaluated: {count}"
    return line("worker", about + text)


def delivered_line(delivered: Delivered) -> str:
    """What one destination received."""
    signed = "signature ok" if delivered.signature_ok else "BAD SIGNATURE"
    where = f" -> archive.jsonl line {delivered.archive_line}" if delivered.destination == ARCHIVE else ""
    route = delivered.payload.get("route", "?")
    return line(delivered.destination, f"<- {route} ({signed}){where}: {short_payload(delivered.payload)}")


def short_payload(payload: dict[str, Any]) -> str:
    """The payload as compact JSON, trimmed: type, uuid, record and changes, long values cut."""
    shown: dict[str, Any] = {"type": payload.get("type"), "uuid": payload.get("uuid")}
    record = payload.get("record")
    if isinstance(record, dict):
        record = {key: value for key, value in record.items() if key not in _HIDDEN_RECORD_KEYS}
    shown["record"] = record
    if "changes" in payload:
        shown["changes"] = payload["changes"]
    return json.dumps(_trimmed(shown), separators=(",", ":"))


def _trimmed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _trimmed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trimmed(item) for item in value]
    if isinstance(value, str) and len(value) > _LONGEST_VALUE:
        return short_id(value)
    return value


def short_id(value: str) -> str:
    """The first 8 characters of a long id, hash or uuid, then ``...``."""
    return value if len(value) <= 12 else f"{value[:8]}..."
