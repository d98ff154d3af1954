"""The story ``capture-relay dev`` plays, step by step, and what each step must lead to.

A profile is created in Capture (the simulator), its email changed, its address changed; Akamai
delivers one token twice; an attacker sends a forged token; the profile is deleted. Each step
prints what the ingress answered, what the events worker did and what each destination
received, as it happens, then compares that with what the sample routes should give.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx2

from capture_relay.dev_observe import ARCHIVE, Delivered, WebhookAnswer
from capture_relay.dev_report import (
    Observer,
    Processed,
    WaitTimeoutError,
    answer_line,
    delivered_line,
    line,
    processed_line,
    short_id,
)
from capture_relay.dev_stack import Stack
from simulator.keys import KeyRing

CRM_ROUTE = "email-changes-to-crm"
ARCHIVE_ROUTE = "everything-to-archive"
ROUTE_ORDER = (CRM_ROUTE, ARCHIVE_ROUTE)
PROFILE = {"email": "ada@example.com", "givenName": "Ada", "primaryAddress": {"city": "London"}}
NEW_EMAIL = "ada@lovelace.example"
NEW_ADDRESS = {"primaryAddress": {"city": "Cambridge"}}
ARCHIVED_TYPES = ["entityCreated", "entityUpdated", "entityUpdated", "entityDeleted"]
_V3_HEADERS = {"Content-Type": "application/secevent+jwt"}


@dataclass(frozen=True, slots=True)
class Expected:
    """What a step must lead to: the ingress's answer and, per destination, the route that delivers."""

    status: int
    outcome: str
    reason: str | None = None
    routes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What was observed for one step."""

    answer: WebhookAnswer
    processed: Processed | None
    deliveries: list[Delivered]


@dataclass(frozen=True, slots=True)
class _Step:
    title: str
    act: Callable[[], str]  # does the step; returns the line saying what was done
    expected: Expected
    check: Callable[[StepOutcome], list[str]] | None = None


class Story:
    """The six steps, played against a running stack."""

    def __init__(
        self, stack: Stack, observer: Observer, say: Callable[[str], None], pause: Callable[[str], None]
    ) -> None:
        self.stack = stack
        self.observer = observer
        self.say = say
        self.pause = pause
        self.uuid = str(uuid_module.uuid4())
        self._outcomes: list[StepOutcome] = []
        self._control = httpx2.Client(base_url=stack.addresses.simulator, timeout=10)

    def play(self) -> bool:
        """Play every step; True when each had its expected outcome."""
        steps = self._steps()
        try:
            for number, step in enumerate(steps, 1):
                heading = f"{number}/{len(steps)}  {step.title}"
                if number > 1:
                    self.pause(heading)
                self.say(heading)
                problems = self._play(step)
                if problems:
                    # Later steps build on this one (the token replayed, the record changed).
                    self.say(_unexpected(problems))
                    self.say(line("stopped", f"the story stops at step {number}; the logs are in {self._logs}"))
                    return False
                self.say(line("ok", _summary(step.expected, self._outcomes[-1])))
            problems = self._check_archive()
        finally:
            self._control.close()
        if problems:
            self.say(_unexpected(problems))
        return not problems

    @property
    def _logs(self) -> str:
        return str(self.stack.directory / "logs")

    def _steps(self) -> list[_Step]:
        both = {"crm": CRM_ROUTE, ARCHIVE: ARCHIVE_ROUTE}
        archive_only = {ARCHIVE: ARCHIVE_ROUTE}
        return [
            _Step("a profile is created in Capture", self._create, Expected(202, "accepted", routes=archive_only)),
            _Step("its email changes", self._change_email, Expected(202, "accepted", routes=both), self._crm_shape),
            _Step("its address changes", self._change_address, Expected(202, "accepted", routes=archive_only)),
            _Step(
                "Akamai delivers the address change a second time",
                self._redeliver,
                Expected(200, "duplicate"),
                self._same_delivery_as_before,
            ),
            _Step(
                "an attacker posts a forged token deleting the profile",
                self._forge,
                Expected(401, "rejected", reason="signature_invalid"),
            ),
            _Step("the profile is deleted in Capture", self._delete, Expected(202, "accepted", routes=archive_only)),
        ]

    # --- one step: act, then watch the ingress, the events worker and the receiver ---

    def _play(self, step: _Step) -> list[str]:
        self.observer.poll()
        start = len(self.observer.answers)
        try:
            self.say(step.act())
            answer: WebhookAnswer = self.observer.wait(
                lambda: self.observer.answers[start] if len(self.observer.answers) > start else None,
                "the ingress's answer",
            )
            self.say(answer_line(answer))
            outcome = self._follow(answer)
        except (WaitTimeoutError, httpx2.HTTPError) as exc:
            return [str(exc) or type(exc).__name__]
        self._outcomes.append(outcome)
        problems = _compare(outcome, step.expected)
        if not problems and step.check is not None:
            problems = step.check(outcome)
        return problems

    def _follow(self, answer: WebhookAnswer) -> StepOutcome:
        if answer.outcome != "accepted" or not answer.event_ids:
            return StepOutcome(answer, None, [])
        event_id = answer.event_ids[0]
        processed: Processed = self.observer.wait(
            lambda: self.observer.processed.get(event_id), f"the events worker's event.processed for {event_id}"
        )
        self.say(processed_line(processed))
        for index in range(processed.destinations):
            delivered: Delivered = self.observer.wait(
                partial(self._delivery_at, event_id, index),
                f"delivery {index + 1} of {processed.destinations} of event {event_id}",
            )
            self.say(delivered_line(delivered))
        return StepOutcome(answer, processed, self.observer.deliveries_of(event_id))

    def _delivery_at(self, event_id: str, index: int) -> Delivered | None:
        deliveries = self.observer.deliveries_of(event_id)
        return deliveries[index] if len(deliveries) > index else None

    # --- the actions ---

    def _create(self) -> str:
        body = {"uuid": self.uuid, "attributes": PROFILE}
        self._control.post("/__sim/profiles", json=body).raise_for_status()
        shown = {**body, "uuid": short_id(self.uuid)}
        return line("capture", f"POST /__sim/profiles {_compact(shown)}")

    def _change_email(self) -> str:
        return self._patch({"email": NEW_EMAIL})

    def _change_address(self) -> str:
        return self._patch(NEW_ADDRESS)

    def _patch(self, changes: Mapping[str, object]) -> str:
        body = {"changes": changes}
        self._control.patch(f"/__sim/profiles/{self.uuid}", json=body).raise_for_status()
        return line("capture", f"PATCH /__sim/profiles/{short_id(self.uuid)} {_compact(body)}")

    def _delete(self) -> str:
        self._control.delete(f"/__sim/profiles/{self.uuid}").raise_for_status()
        return line("capture", f"DELETE /__sim/profiles/{short_id(self.uuid)}")

    def _redeliver(self) -> str:
        genuine = self._outcomes[-1].answer
        httpx2.post(self.stack.wire_url, content=genuine.token, headers=_V3_HEADERS, timeout=10)
        jti = short_id(str(genuine.claims.get("jti", "?")))
        return line("akamai", f"the same signed token again (jti {jti}), as after a lost answer")

    def _forge(self) -> str:
        genuine = self._outcomes[-1].answer
        token = forge_deletion(genuine.token, self.uuid)
        httpx2.post(self.stack.wire_url, content=token, headers=_V3_HEADERS, timeout=10)
        kid = short_id(str(genuine.header.get("kid", "?")))
        return line("attacker", f"entityDeleted for {short_id(self.uuid)}, kid {kid} copied, signed with its own key")

    # --- what must hold beyond the answer and the routes ---

    def _crm_shape(self, outcome: StepOutcome) -> list[str]:
        digest = hashlib.sha256(NEW_EMAIL.encode()).hexdigest()
        expected = {"uuid": self.uuid, "email": digest, "firstName": PROFILE["givenName"]}
        [crm] = [d for d in outcome.deliveries if d.destination == "crm"]
        if crm.payload.get("record") != expected:
            return [f"crm: expected the record {_compact(expected)}, got {_compact(crm.payload.get('record'))}"]
        if NEW_EMAIL in json.dumps(crm.payload):
            return ["crm: the email reached the CRM in clear"]
        return []

    def _same_delivery_as_before(self, outcome: StepOutcome) -> list[str]:
        before = [str(self._outcomes[-2].answer.claims.get("jti"))]
        if outcome.answer.delivery_ids != before:
            return [f"expected the delivery id of the first delivery {before}, got {outcome.answer.delivery_ids}"]
        return []

    def _check_archive(self) -> list[str]:
        # Wait briefly: a duplicate that had been stored after all would be delivered by now too.
        time.sleep(0.3)
        self.observer.poll()
        lines = [json.loads(raw) for raw in self.stack.archive.read_text(encoding="utf-8").splitlines()]
        types = [payload.get("type") for payload in lines]
        crm = [d for d in self.observer.delivered if d.destination == "crm"]
        problems = []
        if types != ARCHIVED_TYPES or any(payload.get("uuid") != self.uuid for payload in lines):
            problems.append(f"{self.stack.archive.name}: expected {', '.join(ARCHIVED_TYPES)}, found {types}")
        if len(crm) != 1:
            problems.append(f"crm: expected 1 delivery in all, got {len(crm)}")
        if not problems:
            self.say(
                line(
                    "check",
                    f"{self.stack.archive.name} holds {len(lines)} lines ({', '.join(types)}) and the CRM got 1 "
                    "delivery: the duplicate and the forged token delivered nothing",
                )
            )
        return problems


def forge_deletion(genuine: bytes, uuid: str) -> bytes:
    """A token claiming the deletion of ``uuid``: the real header (kid, jku), signed with another key.

    What an attacker who saw one real token could make: the header and claims look right, but the
    key is not one the JWK page publishes, so the signature does not verify.
    """
    header_segment, claims_segment, _ = genuine.split(b".")
    header = _decoded(header_segment)
    claims = _decoded(claims_segment)
    real_event = next(iter(claims["events"].values()))
    event = {key: value for key, value in real_event.items() if key != "attributes"}
    event.update(sub=uuid, id=str(uuid_module.uuid4()))
    claims.update(events={"entityDeleted": event}, jti=str(uuid_module.uuid4()), iat=int(time.time()))
    attacker = KeyRing(1)  # a fresh key pair, published nowhere
    return attacker.sign(header, claims).encode()


def _decoded(segment: bytes) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))
    if not isinstance(value, dict):
        raise ValueError("a token segment is not a JSON object")
    return value


def _compare(outcome: StepOutcome, expected: Expected) -> list[str]:
    answer = outcome.answer
    problems = []
    if (answer.status, answer.outcome) != (expected.status, expected.outcome):
        problems.append(f"expected {expected.status} {expected.outcome}, got {answer.status} {answer.outcome}")
    if expected.reason is not None and answer.answer.get("reason") != expected.reason:
        problems.append(f"expected reason {expected.reason}, got {answer.answer.get('reason')}")
    routes = {d.destination: str(d.payload.get("route")) for d in outcome.deliveries}
    if routes != expected.routes:
        problems.append(f"expected deliveries {_compact(expected.routes)}, got {_compact(routes)}")
    unsigned = [d.destination for d in outcome.deliveries if not d.signature_ok]
    if unsigned:
        problems.append(f"bad webhook-signature at {', '.join(unsigned)}")
    return problems


def _summary(expected: Expected, outcome: StepOutcome) -> str:
    # What was observed (it equals what was expected, or this line would not be printed).
    observed = sorted(((str(d.payload.get("route")), d.destination) for d in outcome.deliveries), key=_route_order)
    if observed:
        matched = ", ".join(f"{route} -> {destination}" for route, destination in observed)
        return f"as expected; routes matched: {matched}"
    if expected.outcome == "duplicate":
        return "as expected: nothing stored twice, nothing delivered twice"
    return "as expected: refused before anything was stored"


def _route_order(pair: tuple[str, str]) -> int:
    # The order of the routes in the sample config, in which the workers try them.
    return ROUTE_ORDER.index(pair[0]) if pair[0] in ROUTE_ORDER else len(ROUTE_ORDER)


def _unexpected(problems: list[str]) -> str:
    return line("UNEXPECTED", "; ".join(problems))


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
