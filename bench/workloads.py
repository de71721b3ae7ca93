"""Every function of the stack with a real event it answers 2xx, each served as the stack
serves it, and the bare function beside them.

A workload is a function, the event it is sent and the I/O that event costs. Its
`stream()` makes events for one client: each fresh (a new `ce-id`, and new ids in the
data where the function keeps one row per id), so no inbox ever answers from its record
and no function takes a cheaper "already done" path. A stream is told each answer
(`answered`), for the one function whose next event depends on the last (lease-key:
release what was leased).

The functions get what they need from the running stack (`./taskw start`): their own
PostgreSQL login (`DATABASE_URL_<SCHEMA>`), etcd, lease-key (sign-tx leases its keys
from the stack's lease-key over HTTP), the GitHub API stand-in, the key-encryption key
and the JWT secret, and the K_SINK the stack's SinkBindings give them.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batch import requests
from bench.processes import BenchFailure
from bench.subjects import Subject
from broker import manifests
from broker.dispatcher_process import function_resolver
from eventing import auth, callers, ethereum
from eventing.events import KEY_LEASE, KEY_RELEASE
from stack import services
from stack.layout import Layout
from tests.factory import Event, cloudevent, github, issue_comment

Post = tuple[bytes, dict[str, str]]
SOURCE = "/eventworks/bench"
LEASE_TTL_SECONDS = 30
FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


class Stream(Protocol):
    def fresh(self) -> Post: ...

    def answered(self, status: int, body: bytes) -> None: ...

    def settle(self) -> Post | None:
        """The event that undoes what the stream holds (a lease), or None."""
        ...


class Fresh:
    """Events that need nothing from earlier answers."""

    def __init__(self, make: Callable[[], Event]) -> None:
        self._make = make

    def fresh(self) -> Post:
        event = self._make()
        return event.body, dict(event.headers)

    def answered(self, status: int, body: bytes) -> None:
        pass

    def settle(self) -> Post | None:
        return None


class LeasePairs:
    """lease-key: `key.lease`, then `key.release` of what it leased, and so on; each is
    an event. Sent to the bare function, every answer is empty: it leases for ever.
    `caller`: the Authorization header sign-tx sends, which lease-key demands."""

    def __init__(self, caller: Callable[[], str]) -> None:
        self.worker_id = f"bench-{uuid.uuid4().hex[:10]}"
        self.caller = caller
        self._held: dict[str, Any] | None = None

    def fresh(self) -> Post:
        if self._held is None:
            data: dict[str, Any] = {"worker_id": self.worker_id,
                                    "ttl_seconds": LEASE_TTL_SECONDS}
            event = cloudevent(KEY_LEASE, data, source=SOURCE)
        else:
            event = cloudevent(KEY_RELEASE, {"lease_id": self._held["lease_id"],
                                             "address": self._held["address"]},
                               source=SOURCE)
        return event.body, {**event.headers, "authorization": self.caller()}

    def answered(self, status: int, body: bytes) -> None:
        if self._held is not None:
            self._held = None
        elif status == 200 and body:
            leased = json.loads(body)
            self._held = {"lease_id": leased["lease_id"], "address": leased["address"]}

    def settle(self) -> Post | None:
        return self.fresh() if self._held is not None else None


@dataclass(frozen=True)
class Workload:
    name: str                       # the row's name: the function, or a path of it
    function: str                   # the function served (functions/<function>)
    event: str                      # what each event is
    io: str                         # what the function does per event, beyond the CPU
    stream: Callable[[], Stream]    # events for one client
    cold_start: bool = True         # False: a second path of a function already measured
    target_rate: float | None = None  # events/s at least this times the bare function's


# -- the events ------------------------------------------------------------------------------

def _comment(text: str) -> Callable[[], Event]:
    def make() -> Event:
        # A comment of its own (new comment id) in a delivery of its own (new ce-id).
        return github("issue_comment", issue_comment(text))
    return make


# link-identity's own golden event: what parse-comment sends for a `/link 0x…` comment.
_LINK_STARTED: dict[str, Any] = json.loads(
    (FUNCTIONS / "link-identity" / "tests" / "data" / "identity.link.started.json").read_text())


def _link_started() -> Event:
    return cloudevent("dev.eventworks.identity.link.started",
                      {**_LINK_STARTED, "github_login": f"bench-{uuid.uuid4().hex[:8]}"},
                      source="/eventworks/parse-comment")


def _sign_requested() -> Event:
    (request,) = requests.mocked(1)
    headers, body = request.http_event()
    return Event(headers=headers, body=body)


class _Signer:
    """verify-tx's events: transactions signed here, by a key of this run, one nonce
    after the other (a new slot each: nothing is a replay or a double sign)."""

    def __init__(self) -> None:
        self.key = secrets.token_bytes(31).rjust(32, b"\x01")
        self.address = ethereum.address_of(self.key)
        self.nonce = 0

    def __call__(self) -> Event:
        (request,) = requests.mocked(1)
        nonce, self.nonce = self.nonce, self.nonce + 1
        raw, tx_hash, _ = ethereum.sign(ethereum.UnsignedTx(
            chain_id=request.chain_id, nonce=nonce,
            max_priority_fee_per_gas=request.max_priority_fee_per_gas,
            max_fee_per_gas=request.max_fee_per_gas, gas_limit=request.gas_limit,
            to=request.to, value=request.value, data=b""), self.key)
        return cloudevent("dev.eventworks.tx.signed", {
            "request_id": request.request_id, "from": self.address,
            "chain_id": request.chain_id, "nonce": nonce, "tx_hash": "0x" + tx_hash.hex(),
            "raw_tx": "0x" + raw.hex(), "fencing_token": 1},
            source="/eventworks/sign-tx", subject=request.request_id)


def _list_create(token: str) -> Callable[[], Event]:
    def make() -> Event:
        event = cloudevent("dev.eventworks.todo.list.create", {"title": "bench"},
                           source=SOURCE)
        return Event(headers={**event.headers, "authorization": f"Bearer {token}"},
                     body=event.body, attributes=event.attributes)
    return make


def _task_fact() -> Event:
    task_id = f"bench-{uuid.uuid4().hex[:12]}"
    task = {"task_id": task_id, "list_id": "bench", "owner": "bench", "title": "bench",
            "status": "open", "assignee": f"bench-{secrets.randbelow(20)}",
            "assign_fee": "15.5", "reward": "10.25", "denomination": "USDC", "decimals": 6,
            "version": 2, "actor": "bench", "created_at": "2026-11-21T00:00:00Z",
            "updated_at": "2026-11-21T00:00:00Z"}
    return cloudevent("dev.eventworks.todo.task.assigned", task,
                      source="/eventworks/todo-crud", subject=task_id)


DECISION_PATH = "parse-comment (decision path)"


def lease_key_caller(stack_env: Mapping[str, str]) -> Callable[[], str]:
    """sign-tx's Authorization header, the one caller lease-key answers: minted anew for
    each event, as a caller token lives seconds (eventing/callers.py)."""
    secret = stack_env["LEASE_KEY_TOKEN_SECRET"]
    return lambda: f"Bearer {callers.caller_token(secret, 'sign-tx', 'lease-key')}"


def catalog(stack_env: Mapping[str, str]) -> list[Workload]:
    """Every function, with the I/O its event costs; and parse-comment's decision path."""
    token = auth.sign(stack_env["JWT_SECRET"], f"bench-{uuid.uuid4().hex[:8]}",
                      ttl_seconds=24 * 3600)
    caller = lease_key_caller(stack_env)
    return [
        Workload("parse-comment", "parse-comment",
                 "github issue_comment `Worth $USDC:100$` (a new comment) → bounty.requested",
                 "PostgreSQL: 1 transaction (inbox claim, bounty read and write, bot comment "
                 "row, inbox record); GitHub: the bot's comment (a POST to the API stand-in)",
                 lambda: Fresh(_comment("Worth $USDC:100$"))),
        Workload(DECISION_PATH, "parse-comment",
                 "github issue_comment without a bounty pattern (a new comment) → 202",
                 "PostgreSQL: 1 transaction (inbox claim, bounty read, inbox record); no "
                 "GitHub call. Every event of parse-comment goes through its inbox: it has "
                 "no path without PostgreSQL",
                 lambda: Fresh(_comment("Thanks, this looks good to me.")),
                 cold_start=False, target_rate=0.8),
        Workload("link-identity", "link-identity",
                 "identity.link.started (a new login) → identity.challenged",
                 "PostgreSQL: 1 transaction (inbox claim, challenge insert, inbox record)",
                 lambda: Fresh(_link_started)),
        Workload("lease-key", "lease-key",
                 "key.lease → key.leased, then key.release of it → key.released",
                 "etcd: lease: the pool's keys and locks read, a lease granted, a "
                 "transaction; release: a transaction and the lease revoked. No PostgreSQL",
                 lambda: LeasePairs(caller)),
        Workload("sign-tx", "sign-tx",
                 "tx.sign.requested (a new request id) → tx.signed",
                 "HTTP to the stack's lease-key (key.lease, key.release; etcd behind it), "
                 "etcd: the sealed key read; PostgreSQL: 1 transaction (inbox claim, nonce "
                 "allocation, signed row, inbox record); one secp256k1 signature",
                 lambda: Fresh(_sign_requested)),
        Workload("verify-tx", "verify-tx",
                 "tx.signed (signed by the run's own key, the next nonce) → tx.verified",
                 "PostgreSQL: 1 transaction (inbox claim, advisory lock, fence and slot "
                 "read, signed row, fence raised, inbox record); one signature recovery",
                 lambda: Fresh(_Signer())),
        Workload("todo-crud", "todo-crud",
                 "todo.list.create with a bearer token (HS256, verified by the function) "
                 "→ todo.list.created",
                 "PostgreSQL: 1 transaction (inbox claim, list insert, outbox insert, inbox "
                 "record); the outbox relay then POSTs the fact to the stack's broker",
                 lambda: Fresh(_list_create(token))),
        Workload("accrue-payment", "accrue-payment",
                 "todo.task.assigned (a new task) → 202, a fee booked",
                 "PostgreSQL: 1 transaction (inbox claim, journal, accounts, two postings, "
                 "the balance trigger and the deferred double-entry check, inbox record)",
                 lambda: Fresh(_task_fact)),
    ]


# -- serving them --------------------------------------------------------------------------

def _sinks(layout: Layout, stack_env: Mapping[str, str]) -> dict[str, str]:
    """K_SINK per function, as the stack's SinkBindings give it (stack.supervisor)."""
    urls = {k: v for k, v in stack_env.items() if k.startswith("FUNCTION_")}
    try:
        wiring = manifests.load(layout.root / "knative" / "base", function_resolver(urls))
        return services.sink_urls(wiring.sink_bindings, services.functions(layout),
                                  stack_env["BROKER_URL"])
    except manifests.ManifestError as exc:
        raise BenchFailure(f"knative/base cannot be honoured: {exc}") from None


def subject(layout: Layout, stack_env: Mapping[str, str], function: str) -> Subject:
    """The function as `./taskw up` serves it, on a port of the benchmark's choosing."""
    schema = services.SCHEMAS.get(function)
    env = dict(stack_env)
    if schema is not None:
        key = f"DATABASE_URL_{schema.upper()}"
        if key not in stack_env:
            raise BenchFailure(f"the stack's env has no {key}: restart the stack")
        # What the stack's own instance logs in with; passed through unchanged.
        env["DATABASE_URL"] = stack_env[key]
    sink = _sinks(layout, stack_env).get(function)
    kek = services.key_encryption_key(layout)[0] if function == "sign-tx" else None

    def component(port: int) -> services.Component:
        return services.function(layout, function, port, env, embedded_db=False,
                                 k_sink=sink, key_encryption_key=kek)

    return Subject(function, component)

