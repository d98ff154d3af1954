"""The webhook emitter over real HTTP: what a receiver gets, faults, retries, workloads, control API."""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid as uuid_module
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from capture_relay.embedded_redis import free_port
from service.normalize import event_from_claims
from service.verify.jwks import JwksCache
from service.verify.set_token import V3Policy, verify_token
from simulator.akamai import AkamaiState, akamai_routes
from simulator.config import SimulatorConfig
from simulator.emitter import Emitter, add_cli_arguments, apply_cli_arguments
from simulator.emitter_targets import WorkloadPlan
from simulator.profiles import ProfileChange, ProfileStore
from tests.support.servers import serve_in_thread

FAST = {"retry_delays": (0.02, 0.05), "legacy_retry_delays": (0.02, 0.02, 0.02), "reorder_linger": 0.05}
HASH = "1234567891234567891234567891234567891234"


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver that records requests and answers scripted statuses (then 200)."""

    requests: list[Received] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.requests.append(Received(request.url.path, dict(request.headers), body))
            status = self.statuses.popleft() if self.statuses else 200
        return Response(status_code=status)

    def tokens(self) -> list[str]:
        with self.lock:
            return [request.body.decode() for request in self.requests]

    def claims(self) -> list[dict[str, Any]]:
        """The claims of every token received, unverified (the tests verify separately)."""
        return [jwt.decode(token, options={"verify_signature": False}) for token in self.tokens()]


@dataclass
class Stack:
    """The simulator's Akamai side and emitter, served together, and a receiver."""

    config: SimulatorConfig
    store: ProfileStore
    emitter: Emitter
    base_url: str
    receiver: Receiver
    hook_url: str
    http: httpx2.Client

    @property
    def jwk_url(self) -> str:
        return f"{self.base_url}/{self.config.customer_id}/login/jwk"

    def add_target(self, **fields: Any) -> str:
        """Register a target through the control API; the receiver's URL unless ``url`` is given."""
        response = self.http.post(f"{self.base_url}/__sim/targets", json={"url": self.hook_url, **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def wait(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the emitter is idle; returns the deliveries snapshot."""
        response = self.http.post(f"{self.base_url}/__sim/emitter/wait", json={"timeout": timeout})
        assert response.status_code == 200, response.text
        snapshot: dict[str, Any] = self.http.get(f"{self.base_url}/__sim/deliveries").json()
        return snapshot

    def create_user(self, **values: Any) -> str:
        """Create a profile through the store, from this (the test's) thread."""
        defaults = {"email": "ada@example.com", "givenName": "Ada", "primaryAddress": {"city": "Lyon"}}
        record = self.store.create("user", {**defaults, **values})
        return str(record["uuid"])


@contextmanager
def running_stack(configure: Callable[[Emitter, str], None] | None = None, **emitter_options: Any) -> Iterator[Stack]:
    """Serve the receiver, then the simulator with the emitter's lifespan; ``configure`` runs before start."""
    receiver = Receiver()
    receiver_app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    config = SimulatorConfig()
    state = AkamaiState(config)
    store = ProfileStore()
    emitter = Emitter(config, store, state.keys, seed=1, **{**FAST, **emitter_options})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await emitter.start()
        yield
        await emitter.stop()

    with serve_in_thread(receiver_app) as receiver_url:
        if configure is not None:
            configure(emitter, receiver_url + "/hook")
        app = Starlette(routes=akamai_routes(state) + emitter.routes(), lifespan=lifespan)
        with serve_in_thread(app) as base_url, httpx2.Client() as http:
            config.base_url = base_url
            yield Stack(config, store, emitter, base_url, receiver, receiver_url + "/hook", http)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """A running stack with no targets yet."""
    with running_stack() as running:
        yield running


def verified(stack: Stack, token: str, audience: str) -> dict[str, Any]:
    """Verify with PyJWT against the JWK page fetched over HTTP, checking iss and aud."""
    key = jwt.PyJWKClient(stack.jwk_url).get_signing_key_from_jwt(token)
    issuer = f"{stack.base_url}/{stack.config.customer_id}/webhooks"
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["RS256"], audience=audience, issuer=issuer)
    return claims


def test_created_updated_and_deleted_each_arrive_as_a_verifiable_token(stack: Stack) -> None:
    """Three changes give three tokens with the right event, claims, header and HTTP headers."""
    stack.add_target()
    started = int(time.time())

    uuid = stack.create_user()
    _, changed = stack.store.update("user", uuid, {"email": "ada@example.org", "primaryAddress": {"city": "Leeds"}})
    stack.store.delete("user", uuid)
    snapshot = stack.wait()

    assert snapshot["counters"]["delivered"] == 3
    requests = stack.receiver.requests
    assert [request.path for request in requests] == ["/hook"] * 3
    for request in requests:
        assert request.headers["user-agent"] == "Akamai Identity Cloud Webhooks/3.0"
        assert request.headers["content-type"] == "application/secevent+jwt"
        assert request.headers["accept"] == "*/*"
        header = jwt.get_unverified_header(request.body.decode())
        assert header == {
            "alg": "RS256",
            "jku": stack.jwk_url,
            "kid": stack.emitter.keys.signing_key.kid,
            "typ": "secevent+jwt",
        }
    claims = [verified(stack, token, stack.hook_url) for token in stack.receiver.tokens()]
    assert [next(iter(claim["events"])) for claim in claims] == ["entityCreated", "entityUpdated", "entityDeleted"]
    assert changed == ["email", "primaryAddress.city"]
    bodies = [next(iter(claim["events"].values())) for claim in claims]
    assert bodies[1]["attributes"] == ["email", "primaryAddress.city"]
    assert "attributes" not in bodies[0]
    assert "attributes" not in bodies[2]
    for claim, body in zip(claims, bodies, strict=True):
        assert claim["aud"] == [stack.hook_url]
        assert started <= claim["iat"] <= time.time() + 1
        assert isinstance(claim["toe"], int)
        assert uuid_module.UUID(claim["jti"]).version == 4
        assert body["sub"] == uuid
        assert body["entityType"] == "user"
        assert body["captureApplicationId"] == stack.config.application_id
        assert body["captureClientId"] == stack.config.api_client.client_id
        assert body["globalSub"] == f"capture-v1://us.janraincapture.com/{stack.config.application_id}/user/{uuid}"
        assert uuid_module.UUID(body["id"])
    assert len({claim["jti"] for claim in claims}) == 3


def test_the_audience_of_a_target_can_differ_from_its_url(stack: Stack) -> None:
    """``audience`` becomes the only entry of ``aud``."""
    stack.add_target(audience="https://hooks.example.com/webhooks/capture/v3")

    stack.create_user()
    stack.wait()

    (token,) = stack.receiver.tokens()
    assert verified(stack, token, "https://hooks.example.com/webhooks/capture/v3")["aud"] == [
        "https://hooks.example.com/webhooks/capture/v3"
    ]


@pytest.mark.anyio
async def test_our_receiver_accepts_the_simulators_tokens(stack: Stack) -> None:
    """``service.verify`` accepts every token, the test event, and one signed with a key rotated in later."""
    stack.add_target()
    issuer = f"{stack.base_url}/{stack.config.customer_id}/webhooks"
    policy = V3Policy(stack.jwk_url, (issuer,), (stack.hook_url,), max_age=172800, clock_skew=60)
    uuid = stack.create_user()
    stack.store.update("user", uuid, {"givenName": "Grace"})
    stack.wait()
    stack.http.post(f"{stack.base_url}/__sim/emit/test", json={})

    async with httpx2.AsyncClient() as http:
        cache = JwksCache(stack.jwk_url, http, cooldown=0, ttl=3600, timeout=5)
        before = [await verify_token(token, cache, policy, time.time()) for token in stack.receiver.tokens()]
        stack.http.post(f"{stack.base_url}/__sim/keys/rotate", json={"retire_oldest": True})
        stack.store.delete("user", uuid)
        stack.wait()
        after = await verify_token(stack.receiver.tokens()[-1], cache, policy, time.time())

    events = [event_from_claims(claims, time.time()) for claims in [*before, after]]
    assert [event.type for event in events] == ["entityCreated", "entityUpdated", "test", "entityDeleted"]
    assert [event.uuid for event in events] == [uuid, uuid, "", uuid]
    assert events[1].attributes == ("givenName",)
    assert events[0].application_id == stack.config.application_id
    assert jwt.get_unverified_header(stack.receiver.tokens()[-1])["kid"] == stack.emitter.keys.signing_key.kid


def test_the_test_event_goes_to_a_v3_target_only(stack: Stack) -> None:
    """``POST /__sim/emit/test`` sends ``events.test = {"id"}``; a legacy target cannot get one."""
    v3 = stack.add_target()
    legacy = stack.add_target(format="legacy")

    sent = stack.http.post(f"{stack.base_url}/__sim/emit/test", json={"target": v3})
    refused = stack.http.post(f"{stack.base_url}/__sim/emit/test", json={"target": legacy})
    unknown = stack.http.post(f"{stack.base_url}/__sim/emit/test", json={"target": "target-99"})

    assert sent.status_code == 200
    (record,) = sent.json()["deliveries"]
    assert (record["kind"], record["status"], record["outcome"]) == ("test", 200, "delivered")
    (claims,) = stack.receiver.claims()
    assert claims["events"] == {"test": {"id": record["event_id"]}}
    assert claims["jti"] == record["delivery_id"]
    assert refused.status_code == 400
    assert unknown.status_code == 404


def test_a_legacy_target_gets_a_json_array_with_its_hash(stack: Stack) -> None:
    """Legacy bodies are ``[{"uuid","datetime","entityType","hash"}]`` sent as application/json."""
    stack.add_target(format="legacy", callback_hash=HASH)

    uuid = stack.create_user()
    stack.wait()

    (request,) = stack.receiver.requests
    assert request.headers["content-type"] == "application/json"
    (element,) = json.loads(request.body)
    assert set(element) == {"uuid", "datetime", "entityType", "hash"}
    assert (element["uuid"], element["entityType"], element["hash"]) == (uuid, "user", HASH)
    assert time.strptime(element["datetime"], "%Y-%m-%d %H:%M:%S.%f +0000")


def test_duplicates_one_sends_every_delivery_twice(stack: Stack) -> None:
    """With probability 1.0 every jti arrives exactly twice, with the same body."""
    stack.add_target(duplicates=1.0)

    for n in range(3):
        stack.create_user(email=f"user{n}@example.com")
    snapshot = stack.wait()

    tokens = stack.receiver.tokens()
    jtis = Counter(jwt.decode(token, options={"verify_signature": False})["jti"] for token in tokens)
    assert len(tokens) == 6
    assert sorted(jtis.values()) == [2, 2, 2]
    assert len(set(tokens)) == 3
    assert snapshot["counters"]["duplicates"] == 3
    assert sum(record["duplicate"] for record in snapshot["deliveries"]) == 3


def test_reorder_shuffles_but_delivers_every_event() -> None:
    """Twelve changes in windows of five arrive in another order, all of them (the last two after the linger)."""
    # A linger long enough that a slow test machine cannot flush a window before it is full.
    with running_stack(reorder_linger=0.5) as stack:
        stack.add_target(reorder_window=5)

        created = [stack.create_user(email=f"user{n}@example.com") for n in range(12)]
        stack.wait()

        received = [claims["events"]["entityCreated"]["sub"] for claims in stack.receiver.claims()]
        assert sorted(received) == sorted(created)
        assert received != created
        assert set(received[:5]) == set(created[:5])
        assert set(received[5:10]) == set(created[5:10])


def test_without_faults_deliveries_keep_the_order_of_the_changes(stack: Stack) -> None:
    """One sender, no reorder window: the receiver sees the changes in the order they were made."""
    stack.add_target()

    created = [stack.create_user(email=f"user{n}@example.com") for n in range(8)]
    stack.wait()

    assert [claims["events"]["entityCreated"]["sub"] for claims in stack.receiver.claims()] == created


def test_a_500_answer_is_retried_with_the_same_token(stack: Stack) -> None:
    """Two 500s then a 200: three attempts of one token, the last delivered."""
    stack.add_target()
    stack.receiver.statuses.extend([500, 500])

    stack.create_user()
    snapshot = stack.wait()

    tokens = stack.receiver.tokens()
    assert len(tokens) == 3
    assert len(set(tokens)) == 1
    attempts = [(record["attempt"], record["status"], record["outcome"]) for record in snapshot["deliveries"]]
    assert attempts == [(1, 500, "retrying"), (2, 500, "retrying"), (3, 200, "delivered")]


def test_a_400_answer_is_not_retried(stack: Stack) -> None:
    """A 4xx fails the delivery at once: one request, even after the retry delays have passed."""
    stack.add_target()
    stack.receiver.statuses.append(400)

    stack.create_user()
    snapshot = stack.wait()
    time.sleep(0.2)

    assert len(stack.receiver.requests) == 1
    (record,) = snapshot["deliveries"]
    assert (record["attempt"], record["status"], record["outcome"]) == (1, 400, "failed")
    assert snapshot["counters"]["failed"] == 1


def test_retries_stop_when_the_schedule_runs_out(stack: Stack) -> None:
    """A receiver that never answers: one attempt plus one per delay, each with an error, then failed."""
    stack.add_target(url=f"http://127.0.0.1:{free_port()}/hook")

    stack.create_user()
    snapshot = stack.wait()

    records = snapshot["deliveries"]
    assert [record["outcome"] for record in records] == ["retrying", "retrying", "failed"]
    assert all(record["status"] is None and record["error"] for record in records)


def test_a_legacy_delivery_is_retried_until_it_gets_200(stack: Stack) -> None:
    """Janrain retries any answer but 200, a 202 and a 400 included."""
    stack.add_target(format="legacy", callback_hash=HASH)
    stack.receiver.statuses.extend([202, 400])

    stack.create_user()
    snapshot = stack.wait()

    assert [record["status"] for record in snapshot["deliveries"]] == [202, 400, 200]
    assert len({request.body for request in stack.receiver.requests}) == 1


def test_a_workload_at_a_rate_delivers_count_events(stack: Stack) -> None:
    """``POST /__sim/emit`` at 100/s makes 20 changes, spaced out, each delivered in the order made."""
    stack.add_target()
    made: list[ProfileChange] = []
    stack.store.subscribe(made.append)
    started = time.monotonic()

    response = stack.http.post(f"{stack.base_url}/__sim/emit", json={"count": 20, "rate": 100, "seed": 7})
    snapshot = stack.wait()

    assert response.status_code == 202
    assert time.monotonic() - started >= 0.19
    assert snapshot["counters"]["delivered"] == 20
    received = [next(iter(claims["events"].items())) for claims in stack.receiver.claims()]
    assert [(kind, body["sub"]) for kind, body in received] == [(change.kind, change.uuid) for change in made]
    assert {kind for kind, _ in received} >= {"entityCreated", "entityUpdated"}
    assert all(body["attributes"] for kind, body in received if kind == "entityUpdated")


def test_a_workload_in_bursts_delivers_count_events(stack: Stack) -> None:
    """Bursts of five at 500/s on average: all twelve changes delivered."""
    stack.add_target()

    response = stack.http.post(f"{stack.base_url}/__sim/emit", json={"count": 12, "burst": 5, "rate": 500})
    snapshot = stack.wait()

    assert response.status_code == 202
    assert snapshot["counters"]["changes"] == 12
    assert len(stack.receiver.requests) == 12


def test_the_targets_control_lists_and_removes(stack: Stack) -> None:
    """A target is listed with its defaults; after DELETE it is gone and gets nothing."""
    target_id = stack.add_target()

    listed = stack.http.get(f"{stack.base_url}/__sim/targets").json()["targets"]
    removed = stack.http.delete(f"{stack.base_url}/__sim/targets/{target_id}")
    again = stack.http.delete(f"{stack.base_url}/__sim/targets/{target_id}")
    stack.create_user()
    stack.wait()

    (target,) = listed
    assert target["url"] == target["audience"] == stack.hook_url
    assert (target["format"], target["duplicates"], target["reorder_window"]) == ("v3", 0.0, 0)
    assert len(target["callback_hash"]) == 40
    assert (removed.status_code, again.status_code) == (204, 404)
    assert stack.receiver.requests == []


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/__sim/targets", {"url": "ftp://hooks.example.com"}, "url:"),
        ("/__sim/targets", {"url": "http://127.0.0.1/hook", "duplicates": 2}, "duplicates:"),
        ("/__sim/targets", {"url": "http://127.0.0.1/hook", "format": "v2"}, "format:"),
        ("/__sim/targets", {"url": "http://127.0.0.1/hook", "reorder_window": True}, "reorder_window:"),
        ("/__sim/targets", {"url": "http://127.0.0.1/hook", "colour": "blue"}, "colour:"),
        ("/__sim/targets", {}, "url: required"),
        ("/__sim/emit", {"count": -1}, "count:"),
        ("/__sim/emit", {"count": "5"}, "count:"),
        ("/__sim/emit", {"count": 5, "rate": 0}, "rate:"),
        ("/__sim/emit", {"count": 5, "burst": 0}, "burst:"),
        ("/__sim/emitter/wait", {"timeout": "soon"}, "timeout:"),
        ("/__sim/emit/test", [1], "JSON object"),
    ],
)
def test_bad_control_input_is_400_with_a_reason(stack: Stack, path: str, body: Any, reason: str) -> None:
    """Each refusal names the field (or the body) and changes nothing."""
    response = stack.http.post(f"{stack.base_url}{path}", json=body)

    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert reason in response.json()["reason"]
    assert stack.emitter.targets == []


def test_wait_answers_504_while_a_delivery_is_pending() -> None:
    """A delivery waiting for a long retry keeps the emitter busy: wait gives up with 504."""
    with running_stack(retry_delays=(30.0,)) as stack:
        stack.add_target()
        stack.receiver.statuses.append(503)

        stack.create_user()
        response = stack.http.post(f"{stack.base_url}/__sim/emitter/wait", json={"timeout": 0.3})

        assert response.status_code == 504
        assert response.json()["idle"] is False
        assert response.json()["counters"]["retrying"] == 1


def test_the_command_line_registers_targets_and_starts_a_workload() -> None:
    """``--emit-*`` options become a target and a workload that ``start()`` runs."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    plans: list[WorkloadPlan | None] = []

    def configure(emitter: Emitter, hook_url: str) -> None:
        argv = ["--emit-to", hook_url, "--emit-count", "6", "--emit-rate", "200", "--emit-seed", "3"]
        apply_cli_arguments(emitter, parser.parse_args([*argv, "--duplicates", "0", "--reorder", "2"]))
        plans.append(emitter.startup_workload)

    with running_stack(configure) as stack:
        snapshot = stack.wait()

        assert plans == [WorkloadPlan(6, 200.0, None, 3)]
        (target,) = stack.emitter.targets
        assert (target.url, target.format, target.reorder_window) == (stack.hook_url, "v3", 2)
        assert snapshot["counters"]["delivered"] == 6


@pytest.mark.parametrize(
    "argv", [["--duplicates", "2"], ["--emit-rate", "0"], ["--emit-burst", "0"], ["--emit-format", "v2"]]
)
def test_the_command_line_refuses_bad_values(argv: list[str]) -> None:
    """argparse exits with 2 for out-of-range values."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)

    with pytest.raises(SystemExit) as exited:
        parser.parse_args(argv)

    assert exited.value.code == 2


def test_changes_after_stop_are_ignored() -> None:
    """Once the lifespan has stopped the emitter, a change is counted as ignored and not sent."""
    with running_stack() as stack:
        stack.add_target()
        emitter, store = stack.emitter, stack.store

    store.create("user", {"email": "late@example.com"})

    assert emitter.log.counters["ignored"] == 1
    assert emitter.log.counters["changes"] == 0
