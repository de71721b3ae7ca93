"""`./taskw chaos`: drive the running stack hard while killing its parts, then check that
nothing was lost, doubled or left stuck.

Three flows (`--flows signing,bounty,todo`, all by default) run at once, each through the
stack's public edges only (the broker ingress, the GitHub webhook, the signing page):

- signing: `--count` transaction requests seeded for the batch reader → sign-tx (a
  leased key) → verify-tx;
- bounty: `--count`/10 bounties, two to an issue, on a repository of the run's own: the
  maintainer's signed webhook comment → the pledge signed by a wallet and posted through the
  signing page → funded; each issue's solver `/link`s a wallet (SIWE through the page); once
  the issue's bounties are funded its pull request is merged → claimed → payout requested →
  signed → verified → the bot's comment says paid;
- todo: `--count`/4 tasks of `--count`/40 owners, with bearer tokens through the broker:
  list.create → task.create → task.assign to one of the workers → task.complete by the
  worker; a model of the workers' balances (minus the fee per assignment, plus the reward
  per completion)
  is kept from the results the run saw.

While they run, a killer SIGKILLs a random function or the broker's dispatcher every few
seconds (`--kill-every`, up to `--max-kills`); the supervisor starts it again
(stack/supervisor.py `Restarts`) and the broker redelivers what was in flight. Every step
of a flow waits for what the stack published (read incrementally off the broker topic and
the dead-letter topic), so a lost event shows as a flow that never ends.

At the end the invariants, each with its figure (exit 1 when one is broken): every event
the run put in is on the broker topic, and every dead letter names its reason; no work
item stuck (each ended verified/paid/completed, or rejected or dead-lettered with a
reason); signing exactly once with no nonce gap or reuse; every journal of the ledger sums
to zero and the workers' balances equal the model; exactly one bot comment per bounty. The
figures: events, kills, retries the dispatcher recorded, duplicates on the topic,
redeliveries absorbed by the inboxes, dead letters.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from eventing.events import bounty_payout_id
from stack.layout import Layout
from stack.processes import StateFile, alive
from stack.supervisor import running_env

DEAD_LETTER_TOPIC = "knative-dead-letters-eventworks"
NO_STACK, BROKEN = 2, 1
FLOWS = ("signing", "bounty", "todo")
VICTIMS = ("sign-tx", "verify-tx", "lease-key", "parse-comment", "link-identity", "todo-crud",
           "accrue-payment", "dispatcher")
ROOT = Path(__file__).resolve().parent.parent


# -- what the stack published, read incrementally ----------------------------------------------
@dataclass(frozen=True)
class Seen:
    """One record of the broker topic or the dead-letter topic."""

    type: str
    id: str
    source: str
    attributes: Mapping[str, str]
    data: Any
    letter: bool = False

    def field(self, name: str) -> Any:
        return self.data.get(name) if isinstance(self.data, dict) else None

    @property
    def reason(self) -> str:
        """Why the broker gave up on a dead letter (Knative's error attributes)."""
        code = self.attributes.get("knativeerrorcode", "")
        dest = self.attributes.get("knativeerrordest", "")
        return f"{code} from {dest}".strip() if code or dest else ""


class Tail:
    """A topic read from where it ended when the run began, a little more at every `poll`:
    settling costs what is new, not the whole topic again."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        from broker import topics

        self.topic = topic
        self.consumer = Consumer({**topics.config([bootstrap], "eventworks-chaos"),
                                  "group.id": "eventworks-chaos-tail",  # assigned: never joins
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5})
        self.next: dict[int, int] = {p: end for p, end in self._ends().items()}
        self._assign()

    def _ends(self) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        listed = self.consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if listed is None or listed.error is not None:
            return {}
        return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                       timeout=5)[1]
                for p in listed.partitions}

    def _assign(self) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.assign([TopicPartition(self.topic, p, at) for p, at in self.next.items()])

    def poll(self, timeout: float = 20.0) -> list[Any]:
        """The records written since the last poll, up to the end the topic has now."""
        ends = self._ends()
        if set(ends) - set(self.next):  # a topic made since (the dead letters' first)
            self.next = {p: self.next.get(p, 0) for p in ends}
            self._assign()
        todo = {p for p, end in ends.items() if end > self.next[p]}
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        from broker.dispatcher import Record

        while todo and time.monotonic() < deadline:
            for message in self.consumer.consume(500, 0.1):
                if message.error() is not None:
                    continue
                record = Record.of(message)
                found.append(record)
                self.next[record.partition] = record.offset + 1
                if record.offset + 1 >= ends.get(record.partition, 0):
                    todo.discard(record.partition)
        return found

    def close(self) -> None:
        self.consumer.close()


def seen_of(record: Any, *, letter: bool = False) -> Seen:
    attributes = record.event.attributes
    try:
        data = json.loads(record.value or b"null")
    except ValueError:
        data = None
    return Seen(type=attributes.get("type", ""), id=attributes.get("id", ""),
                source=attributes.get("source", ""), attributes=attributes, data=data,
                letter=letter)


@dataclass
class Watch:
    """Everything the broker topic, the dead-letter topic and the dispatcher's retry ledger
    got during the run."""

    env: Mapping[str, str]
    events: list[Seen] = field(default_factory=list)
    letters: list[Seen] = field(default_factory=list)
    retries: int = 0

    def __post_init__(self) -> None:
        from broker.dispatcher import broker_topic
        from stack.services import BROKER_NAME, BROKER_NAMESPACE

        bootstrap = self.env["KAFKA_BOOTSTRAP_SERVERS"]
        topic = broker_topic(BROKER_NAMESPACE, BROKER_NAME)
        self._tails = (Tail(bootstrap, topic), Tail(bootstrap, DEAD_LETTER_TOPIC),
                       Tail(bootstrap, f"{topic}-retries"))

    def poll(self) -> list[Seen]:
        """What is new on the broker and dead-letter topics since the last poll."""
        broker, letters, retries = self._tails
        new = [seen_of(r) for r in broker.poll()]
        new += [seen_of(r, letter=True) for r in letters.poll()]
        self.retries += sum(1 for r in retries.poll() if r.value is not None)
        self.events += [s for s in new if not s.letter]
        self.letters += [s for s in new if s.letter]
        return new

    def duplicates(self) -> int:
        """Events on the topic more than once (the same source and id): replies published
        again by a redelivery, which the consumers' inboxes absorb."""
        counts = Counter((s.source, s.id) for s in self.events)
        return sum(n - 1 for n in counts.values())

    def close(self) -> None:
        for tail in self._tails:
            tail.close()


class Workload(Protocol):
    name: str
    verdicts: dict[str, int]  # how its work items ended, by outcome

    @property
    def accepted(self) -> int:
        """Events it put into the stack (each answered 202)."""

    @property
    def sent(self) -> list[str]:
        """Ids of those events, which the broker topic must show."""

    def drive(self) -> None:
        """Put the first work in (on a thread of its own)."""

    def advance(self, new: Sequence[Seen]) -> bool:
        """Take the next steps on what the stack published; whether all work ended."""

    def problems(self, watch: Watch) -> list[str]:
        """What does not hold, once settled (or at the deadline)."""


class Sender:
    """Posts to the stack's public edges and remembers what was accepted."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.client = httpx.Client(timeout=30)
        self.sent: list[str] = []
        self.refused: list[str] = []  # what an edge would not take: a finding, not a crash
        self.lock = threading.Lock()

    def _post(self, url: str, body: bytes, headers: Mapping[str, str], ident: str) -> bool:
        for attempt in range(20):  # an ingress that is busy or restarting answers later
            try:
                response = self.client.post(url, content=body, headers=dict(headers))
            except httpx.HTTPError:
                time.sleep(0.5 * (attempt + 1))
                continue
            if response.status_code in (429, 502, 503, 504):
                time.sleep(0.5 * (attempt + 1))
                continue
            if response.status_code == 202:
                with self.lock:
                    self.sent.append(ident)
                return True
            with self.lock:
                self.refused.append(f"{url} answered {response.status_code}: "
                                    f"{response.text[:300]}")
            return False
        with self.lock:
            self.refused.append(f"{url} did not answer after 20 tries")
        return False

    def broker(self, event_type: str, data: Any, *, token: str | None = None,
               source: str = "/eventworks/chaos") -> str:
        from tests.factory import cloudevent

        event = cloudevent(event_type, data, source=source)
        headers = dict(event.headers)
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        self._post(self.env["BROKER_URL"], event.body, headers, event.id)
        return event.id

    def page(self, event_type: str, data: Any) -> str:
        """As the signing page's script posts it: structured, to the page's own server."""
        from tests.factory import cloudevent

        event = cloudevent(event_type, data, source="/eventworks/signing-page")
        headers, body = event.structured()
        self._post(f"{self.env['SIGNING_PAGE_URL'].rstrip('/')}/events", body, headers,
                   event.id)
        return event.id

    def webhook(self, event_name: str, payload: Mapping[str, Any]) -> str:
        """As GitHub delivers it, signed with the webhook secret."""
        body = json.dumps(payload).encode()
        signature = hmac.new(self.env["GITHUB_WEBHOOK_SECRET"].encode(), body,
                             hashlib.sha256).hexdigest()
        delivery = str(uuid.uuid4())
        self._post(self.env["GITHUB_WEBHOOK_URL"], body, {
            "content-type": "application/json", "x-github-event": event_name,
            "x-github-delivery": delivery, "x-hub-signature-256": f"sha256={signature}"},
            delivery)
        return delivery

    def close(self) -> None:
        self.client.close()


class Driven:
    """A flow driven through the public edges: what it sent is what its Sender accepted."""

    sender: Sender

    @property
    def sent(self) -> list[str]:
        return self.sender.sent

    @property
    def accepted(self) -> int:
        return len(self.sender.sent)


# -- the signing pipeline: batch reader → sign-tx (lease-key) → verify-tx ---------------------
@dataclass
class Signing:
    env: Mapping[str, str]
    count: int
    name: str = "signing"
    accepted: int = 0
    sent: list[str] = field(default_factory=list)  # the reader's own ids: checked by request
    requested: set[str] = field(default_factory=set)  # request ids seen on the topic
    request_ids: list[str] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)
    verified: set[str] = field(default_factory=set)
    rejected: dict[str, str] = field(default_factory=dict)  # request_id → reason
    lettered: dict[str, str] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)

    def drive(self) -> None:
        from batch.reader import drain
        from batch.requests import seed

        self.request_ids = seed(self.env["DATABASE_URL_BATCH"], self.count)
        self.ready.set()
        drained = drain(self.env["DATABASE_URL_BATCH"], self.env["BROKER_URL"], budget=600)
        self.accepted = drained.published

    def advance(self, new: Sequence[Seen]) -> bool:
        wanted = set(self.request_ids)
        for seen in new:
            request = seen.field("request_id")
            if request not in wanted:
                continue
            if seen.letter:
                self.lettered[request] = seen.reason or "no reason given"
            elif seen.type == "dev.eventworks.tx.sign.requested":
                self.requested.add(request)
            elif seen.type == "dev.eventworks.tx.verified":
                self.verified.add(request)
            elif seen.type == "dev.eventworks.tx.rejected":
                self.rejected[request] = seen.field("reason") or ""
        ended = self.verified | set(self.rejected) | set(self.lettered)
        return self.ready.is_set() and len(ended) >= len(wanted)

    def problems(self, watch: Watch) -> list[str]:
        found: list[str] = []
        if len(self.requested) < min(self.accepted, len(self.request_ids)):
            found.append(f"signing: the reader published {self.accepted} requests, the topic "
                         f"shows {len(self.requested)}")
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            signed = conn.execute(
                "SELECT request_id, count(*) FROM signing.transactions "
                "WHERE request_id = ANY(%s) GROUP BY request_id", (self.request_ids,)).fetchall()
            twice = [r for r, n in signed if n != 1]
            if twice:
                found.append(f"signing: {len(twice)} requests signed more than once")
            unsigned = set(self.request_ids) - {r for r, _ in signed} - set(self.lettered)
            if unsigned:
                found.append(f"signing: {len(unsigned)} requests neither signed nor "
                             f"dead-lettered, e.g. {min(unsigned)}")
            # Nonces per key and chain: 0 … next-1, each once (the unique key forbids reuse).
            gaps = conn.execute(
                "SELECT n.sender, n.chain_id, n.next_nonce, count(t.nonce), "
                "coalesce(max(t.nonce), -1) FROM signing.nonces n LEFT JOIN "
                "signing.transactions t USING (sender, chain_id) "
                "GROUP BY n.sender, n.chain_id, n.next_nonce").fetchall()
            for sender, chain, next_nonce, count, highest in gaps:
                if not (count == next_nonce == highest + 1):
                    found.append(f"signing: {sender} on chain {chain}: {count} nonces used "
                                 f"of 0…{next_nonce - 1} (a gap or a reuse)")
        unjudged = [r for r, _ in signed if r not in self.verified and r not in self.rejected
                    and r not in self.lettered]
        if unjudged:
            found.append(f"signing: {len(unjudged)} signed transactions neither verified nor "
                         f"rejected nor dead-lettered, e.g. {unjudged[0]}")
        if any(not reason for reason in self.rejected.values()):
            found.append("signing: a rejection without a reason")
        self.verdicts = {"requests": len(self.request_ids), "signed": len(signed),
                         "verified": len(self.verified), **_tally("rejected", self.rejected),
                         **_tally("dead-lettered", self.lettered)}
        return found


def _tally(what: str, reasons: Mapping[str, str]) -> dict[str, int]:
    return {f"{what} ({reason})": n for reason, n in sorted(Counter(reasons.values()).items())}


# -- the bounty flow: comment → pledge → funded; /link → SIWE; merge → claimed → paid -------
PARSE_COMMENT_DATA = ROOT / "functions" / "parse-comment" / "tests" / "data"
PAID, FUNDED = "paid", "funded"
# The bot's one comment per bounty starts with this marker (parse-comment's render.py).
BOUNTY_MARKER = re.compile(r"<!-- eventworks:bounty:(?P<bounty_id>[^ ]+) -->")


@dataclass
class Offer:
    """One bounty comment and how far its bounty got."""

    comment_id: int
    issue: int
    amount: int
    delivery: str = ""
    bounty_id: str = ""
    state: str = "commented"  # → requested → funded → claimed → payout → verified → paid
    reason: str = ""          # why it ended other than paid
    payout_id: str = ""
    tx_hash: str = ""

    @property
    def ended(self) -> bool:
        return self.state == PAID or bool(self.reason)


@dataclass
class Solver:
    login: str
    id: int
    key: Any  # an eth_account LocalAccount: the solver's wallet
    linked: bool = False
    reason: str = ""  # why the link never happened
    signed: set[str] = field(default_factory=set)  # SIWE messages already signed


class Bounty(Driven):
    """Many bounties on many issues of a repository of the run's own, each driven from the
    maintainer's comment to the bot's comment saying paid."""

    name = "bounty"

    def __init__(self, env: Mapping[str, str], count: int, rng: random.Random) -> None:
        from eth_account import Account

        self.env, self.rng = env, rng
        self.sender = Sender(env)
        run = uuid.uuid4().hex[:8]
        self.repository = f"chaos-{run}/bounties"
        # A repository of the run's own, id included: the seed repeats the comment ids run
        # after run, and parse-comment knows a source by (repository id, comment id), so
        # a rerun on the same stack would find its offers "already known" and ignore them.
        self.repository_id = 10**9 + int(run, 16) % (9 * 10**9)
        bounties = max(2, count // 10)
        issues = max(1, bounties // 2)
        self.funder = Account.create()
        self.solvers = {issue: Solver(f"solver-{run}-{issue}", rng.randrange(10**6, 10**7),
                                      Account.create()) for issue in range(1, issues + 1)}
        self.offers = [Offer(rng.randrange(10**9, 10**10), 1 + i % issues, 10 + i)
                       for i in range(bounties)]
        self.by_comment = {o.comment_id: o for o in self.offers}
        self.by_bounty: dict[str, Offer] = {}
        self.by_payout: dict[str, Offer] = {}
        self.payouts: dict[str, set[str]] = {}  # bounty id → payout ids asked for it
        self.items: dict[str, str] = {}  # event id sent → what it was for (dead letters)
        self.merged: set[int] = set()
        self.pledged: set[str] = set()
        self.verdicts: dict[str, int] = {}
        # A payout's verdict read before its payout.requested: the two are on different
        # partitions, and the topic is read partition by partition as fetches come back, so
        # a later event of one may be seen before an earlier one of another (seen: 6 of 300
        # payouts, verified and commented "paid", stuck at "payout" in the run's view).
        self.early: dict[str, Seen] = {}  # payout id → its tx.verified / tx.rejected
        self.lock = threading.Lock()
        self.last_look: dict[str, float] = {}

    def _payload(self, name: str) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads((PARSE_COMMENT_DATA / name).read_text())
        payload["repository"].update(full_name=self.repository, id=self.repository_id,
                                     name="bounties")
        return payload

    def _comment(self, issue: int, comment_id: int, body: str, login: str, user_id: int,
                 association: str) -> dict[str, Any]:
        payload = self._payload("issue_comment.created.bounty.json")
        payload["issue"].update(number=issue, id=self.rng.randrange(10**9, 10**10))
        payload["comment"].update(id=comment_id, body=body, author_association=association)
        payload["comment"]["user"].update(login=login, id=user_id)
        payload["sender"].update(login=login, id=user_id)
        return payload

    def drive(self) -> None:
        for issue, solver in self.solvers.items():
            payload = self._comment(issue, self.rng.randrange(10**9, 10**10),
                                    f"/link {solver.key.address}", solver.login, solver.id,
                                    "CONTRIBUTOR")
            with self.lock:
                self.items[self.sender.webhook("issue_comment", payload)] = f"link:{issue}"
        for offer in self.offers:
            payload = self._comment(offer.issue, offer.comment_id,
                                    f"Whoever fixes this gets $USDC:{offer.amount}$ from us.",
                                    "Codertocat", 21031067, "OWNER")
            delivery = self.sender.webhook("issue_comment", payload)
            with self.lock:
                offer.delivery = delivery
                self.items[delivery] = f"offer:{offer.comment_id}"

    # -- reacting to what the stack published ---------------------------------------------
    def advance(self, new: Sequence[Seen]) -> bool:
        with self.lock:
            for seen in new:
                if seen.letter:
                    self._lettered(seen)
                else:
                    step = self.STEPS.get(seen.type)
                    if step is not None:
                        step(self, seen)
            self._merge_ready_issues()
            if any(o.state == "verified" for o in self.offers):
                self._look_for_paid_comments()
            return all(o.ended for o in self.offers) and len(self.offers) == len(
                [o for o in self.offers if o.delivery])

    def _requested(self, seen: Seen) -> None:
        offer = self.by_comment.get(seen.field("comment_id"))
        if offer is None or seen.field("repository") != self.repository:
            return
        offer.bounty_id = seen.field("bounty_id")
        self.by_bounty[offer.bounty_id] = offer
        if offer.state == "commented":
            offer.state = "requested"
        if offer.bounty_id not in self.pledged:
            self.pledged.add(offer.bounty_id)
            self._pledge(seen.data)

    def _pledge(self, requested: Mapping[str, Any]) -> None:
        from eth_account import Account
        from eth_account.messages import encode_typed_data

        from tests.factory import pledge_typed_data

        link = {k: v[0] for k, v in parse_qs(urlsplit(requested["sign_url"]).query).items()}
        typed = pledge_typed_data(bounty_id=link["bounty"], repository=link["repository"],
                                  issue_number=int(link["issue"]),
                                  denomination=link["denomination"],
                                  amount_base_units=link["amount_base_units"],
                                  chain_id=int(link["chain_id"]))
        signature = Account.sign_message(encode_typed_data(full_message=typed), self.funder.key)
        ident = self.sender.page("dev.eventworks.bounty.signed", {
            "bounty_id": requested["bounty_id"], "funder_address": self.funder.address,
            "typed_data": typed, "signature": "0x" + bytes(signature.signature).hex(),
            "repository": link["repository"], "issue_number": int(link["issue"]),
            "denomination": link["denomination"],
            "amount_base_units": link["amount_base_units"], "chain_id": int(link["chain_id"])})
        self.items[ident] = f"bounty:{requested['bounty_id']}"

    def _rejected(self, seen: Seen) -> None:
        offer = self.by_bounty.get(seen.field("bounty_id"))
        if offer is not None and not offer.ended:
            offer.reason = f"pledge rejected: {seen.field('reason')}"

    def _challenged(self, seen: Seen) -> None:
        from eth_account import Account
        from eth_account.messages import encode_defunct

        solver = next((s for s in self.solvers.values()
                       if s.login == seen.field("github_login")), None)
        if solver is None or solver.linked:
            return
        (message,) = parse_qs(urlsplit(seen.field("sign_url")).query)["link"]
        if message in solver.signed:
            return
        solver.signed.add(message)
        signed = Account.sign_message(encode_defunct(text=message), solver.key.key)
        ident = self.sender.page("dev.eventworks.identity.link", {
            "message": message, "signature": "0x" + bytes(signed.signature).hex()})
        self.items[ident] = f"link:{next(i for i, s in self.solvers.items() if s is solver)}"

    def _linked(self, seen: Seen) -> None:
        for solver in self.solvers.values():
            if solver.login == seen.field("github_login"):
                solver.linked = True

    def _payout(self, seen: Seen) -> None:
        offer = self.by_bounty.get(seen.field("ref"))
        if offer is not None:
            offer.payout_id = seen.field("payout_id")
            self.by_payout[offer.payout_id] = offer
            self.payouts.setdefault(offer.bounty_id, set()).add(offer.payout_id)
            if offer.state in ("funded", "claimed"):
                offer.state = "payout"
            verdict = self.early.pop(offer.payout_id, None)
            if verdict is not None:
                self.STEPS[verdict.type](self, verdict)

    def _verified(self, seen: Seen) -> None:
        offer = self._verdict_of(seen)
        if offer is not None and offer.state != PAID:
            offer.state, offer.tx_hash = "verified", seen.field("tx_hash") or ""

    def _tx_rejected(self, seen: Seen) -> None:
        offer = self._verdict_of(seen)
        if offer is not None and not offer.ended:
            offer.reason = f"payout rejected: {seen.field('reason')}"

    def _verdict_of(self, seen: Seen) -> Offer | None:
        """The offer a payout's verdict is for; None, and the verdict kept for its
        payout.requested, when that has not been read yet (or it is no payout of ours)."""
        request = seen.field("request_id") or ""
        offer = self.by_payout.get(request)
        if offer is None and request.startswith(bounty_payout_id("")):
            self.early[request] = seen
        return offer

    def _lettered(self, seen: Seen) -> None:
        item = self.items.get(seen.id, "")
        reason = f"dead-lettered ({seen.reason or 'no reason given'})"
        offer = (self.by_bounty.get(seen.field("bounty_id") or seen.field("ref") or "")
                 or self.by_payout.get(seen.field("request_id") or seen.field("payout_id")
                                       or ""))
        kind, _, what = item.partition(":")
        if kind == "offer":
            offer = self.by_comment[int(what)]
        elif kind == "bounty":
            offer = self.by_bounty.get(what)
        elif kind == "link":
            self.solvers[int(what)].reason = reason
        if offer is not None and not offer.ended:
            offer.reason = reason

    STEPS: ClassVar[Mapping[str, Callable[[Bounty, Seen], None]]] = {}

    def _merge_ready_issues(self) -> None:
        """An issue's pull request is merged once the bot's comment of each of its bounties
        says funded (or the bounty ended), and its solver is linked: the order a maintainer
        sees on GitHub (a solver whose link was dead-lettered ends them unpaid)."""
        waiting: dict[int, list[Offer]] = {}
        for issue, solver in self.solvers.items():
            offers = [o for o in self.offers if o.issue == issue]
            if issue in self.merged:
                continue
            if solver.reason:
                for offer in offers:
                    if not offer.ended:
                        offer.reason = f"the solver never linked: {solver.reason}"
                continue
            if solver.linked and all(o.ended or o.state == FUNDED for o in offers):
                waiting[issue] = [o for o in offers if not o.ended]
        if not waiting or not self._due("funded"):
            return
        comments = self.comments()
        for issue, offers in waiting.items():
            if not all(any("funded" in str(c["body"]).lower() and not c["deleted"]
                           for c in comments.get(o.bounty_id, [])) for o in offers):
                continue
            self.merged.add(issue)
            solver = self.solvers[issue]
            payload = self._payload("pull_request.closed.merged.json")
            number = 10_000 + issue
            payload.update(number=number)
            payload["pull_request"].update(
                number=number, id=self.rng.randrange(10**9, 10**10),
                title=f"Fix issue {issue}", body=f"Fixes #{issue}")
            payload["pull_request"]["user"].update(login=solver.login, id=solver.id)
            self.items[self.sender.webhook("pull_request", payload)] = f"merge:{issue}"

    def _due(self, look: str) -> bool:
        """Whether the bot's comments may be read again for `look` (every two seconds)."""
        if time.monotonic() - self.last_look.get(look, 0.0) < 2.0:
            return False
        self.last_look[look] = time.monotonic()
        return True

    def _look_for_paid_comments(self) -> None:
        if not self._due("paid"):
            return
        comments = self.comments()
        for offer in self.offers:
            if offer.state == "verified" and any(
                    offer.tx_hash and offer.tx_hash in str(c["body"]) and not c["deleted"]
                    for c in comments.get(offer.bounty_id, [])):
                offer.state = PAID

    def comments(self) -> dict[str, list[dict[str, Any]]]:
        """The bot's comments on the run's repository, by the bounty their marker names."""
        response = self.sender.client.get(f"{self.env['GITHUB_API_URL']}/_stand-in/comments",
                                          params={"repository": self.repository})
        response.raise_for_status()
        found: dict[str, list[dict[str, Any]]] = {}
        for comment in response.json():
            marked = BOUNTY_MARKER.match(str(comment["body"]))
            if marked is not None:  # not its notices (`claim:…`, `link:…`)
                found.setdefault(marked["bounty_id"], []).append(comment)
        return found

    def problems(self, watch: Watch) -> list[str]:
        found: list[str] = []
        stuck = [o for o in self.offers if not o.ended]
        if stuck:
            states = Counter(o.state + (" after the merge" if o.issue in self.merged else "")
                             for o in stuck)
            found.append(f"bounty: {len(stuck)} bounties stuck (" + ", ".join(
                f"{n} {state}" for state, n in sorted(states.items())) + "), e.g. "
                f"{stuck[0].bounty_id or stuck[0].comment_id} on issue #{stuck[0].issue} "
                f"of {self.repository}")
        twice = [b for b, ids in self.payouts.items() if len(ids) > 1]
        if twice:
            found.append(f"bounty: {len(twice)} bounties with more than one payout, e.g. "
                         f"{twice[0]}")
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            signed: dict[str, int] = dict(conn.execute(
                "SELECT request_id, count(*) FROM signing.transactions "
                "WHERE request_id = ANY(%s) GROUP BY request_id",
                (list(self.by_payout),)).fetchall())
        if any(n != 1 for n in signed.values()):
            found.append("bounty: a payout signed more than once")
        unsigned = [o for o in self.offers if o.state == PAID and o.payout_id not in signed]
        if unsigned:
            found.append(f"bounty: {len(unsigned)} bounties paid without a signed transaction")
        comments = self.comments()
        for offer in self.offers:
            if not offer.bounty_id:
                continue
            mine = [c for c in comments.get(offer.bounty_id, []) if not c["deleted"]]
            if len(mine) != 1:
                found.append(f"bounty: {len(mine)} bot comments for bounty {offer.bounty_id} "
                             "(one expected)")
        self.verdicts = {"bounties": len(self.offers), "issues": len(self.solvers),
                         "paid": sum(o.state == PAID for o in self.offers),
                         "payouts signed": len(signed),
                         "one bot comment each": sum(
                             len([c for c in comments.get(o.bounty_id, [])
                                  if not c["deleted"]]) == 1 for o in self.offers),
                         **_tally("ended", {str(o.comment_id): o.reason
                                            for o in self.offers if o.reason})}
        return found


def _moved(state: str, before: Sequence[str]) -> Callable[[Bounty, Seen], None]:
    def step(workload: Bounty, seen: Seen) -> None:
        offer = workload.by_bounty.get(seen.field("bounty_id"))
        if offer is not None and offer.state in before:
            offer.state = state
    return step


Bounty.STEPS = {
    "dev.eventworks.bounty.requested": Bounty._requested,
    "dev.eventworks.bounty.funded": _moved(FUNDED, ("commented", "requested")),
    "dev.eventworks.bounty.rejected": Bounty._rejected,
    "dev.eventworks.identity.challenged": Bounty._challenged,
    "dev.eventworks.identity.linked": Bounty._linked,
    "dev.eventworks.bounty.claimed": _moved("claimed", ("funded",)),
    "dev.eventworks.payout.requested": Bounty._payout,
    "dev.eventworks.tx.verified": Bounty._verified,
    "dev.eventworks.tx.rejected": Bounty._tx_rejected,
}


# -- the todo/accounting flow: tasks made, assigned and completed with tokens ----------------
FACT_KINDS = {"dev.eventworks.todo.task.assigned": "fee",
              "dev.eventworks.todo.task.completed": "reward"}

@dataclass
class Chore:
    """One task's commands, and what the run saw of them."""

    owner: str
    worker: str
    list_id: str = ""
    task_id: str = ""
    state: str = "list"  # → create → assign → complete → done
    reason: str = ""

    @property
    def ended(self) -> bool:
        return self.state == "done" or bool(self.reason)


class Todo(Driven):
    """Owners make tasks and assign them to workers, who complete them; the model of the
    workers' balances follows the results the run saw (minus the fee per assignment, plus
    the reward per completion)."""

    name = "todo"
    COMMANDS = "dev.eventworks.todo."

    def __init__(self, env: Mapping[str, str], count: int, rng: random.Random) -> None:
        from eventing import auth

        self.env, self.rng = env, rng
        self.sender = Sender(env)
        run = uuid.uuid4().hex[:8]
        tasks = max(2, count // 4)
        owners = [f"owner-{run}-{i}" for i in range(max(1, tasks // 10))]
        self.workers = [f"worker-{run}-{i}" for i in range(max(2, tasks // 5))]
        self.tokens = {user: auth.sign(env["JWT_SECRET"], user, ttl_seconds=6 * 3600)
                       for user in [*owners, *self.workers]}
        self.chores = [Chore(owners[i % len(owners)], rng.choice(self.workers))
                       for i in range(tasks)]
        self.lists: dict[str, list[Chore]] = {}  # list.create command id → its chores
        self.commands: dict[str, Chore] = {}  # command id → its chore
        self.model: dict[str, Decimal] = dict.fromkeys(self.workers, Decimal(0))
        self.balances: dict[str, Decimal] = {}
        # Task facts the broker dead-lettered on their way to the ledger: (task, kind) →
        # (worker, signed amount). Explained, so the model leaves out those whose entry is
        # missing (a second copy of the fact may still have been booked).
        self.unbooked: dict[tuple[str, str], tuple[str, Decimal]] = {}
        self.verdicts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.last_look = 0.0

    def _send(self, chore: Chore, who: str, command: str, data: Mapping[str, Any]) -> None:
        ident = self.sender.broker(self.COMMANDS + command, dict(data), token=self.tokens[who])
        with self.lock:
            self.commands[ident] = chore

    def drive(self) -> None:
        owners = sorted({c.owner for c in self.chores})
        for owner in owners:
            ident = self.sender.broker(self.COMMANDS + "list.create", {"title": "Chaos chores"},
                                       token=self.tokens[owner])
            with self.lock:
                self.lists[ident] = [c for c in self.chores if c.owner == owner]

    def advance(self, new: Sequence[Seen]) -> bool:
        steps: list[tuple[Chore, str, str, dict[str, Any]]] = []
        with self.lock:
            for seen in new:
                if seen.letter and seen.type in FACT_KINDS:
                    self._unbooked(seen)
                elif seen.letter:
                    reason = f"dead-lettered ({seen.reason or 'no reason given'})"
                    one = self.commands.get(seen.id)
                    for chore in self.lists.get(seen.id) or ([one] if one else []):
                        if not chore.ended:
                            chore.reason = reason
                elif seen.type == "dev.eventworks.todo.result":
                    steps += self._result(seen)
        for chore, who, command, data in steps:  # outside the lock: posting takes a while
            self._send(chore, who, command, data)
        with self.lock:
            if not all(c.ended for c in self.chores) or len(self.lists) < len(
                    {c.owner for c in self.chores}):
                return False
        if time.monotonic() - self.last_look < 2.0:
            return False
        self.last_look = time.monotonic()
        return not self.wrong()

    def _unbooked(self, seen: Seen) -> None:
        task, kind = seen.data if isinstance(seen.data, dict) else {}, FACT_KINDS[seen.type]
        if task.get("assignee") in self.model and any(
                c.task_id == task.get("task_id") for c in self.chores):
            amount = Decimal(task["assign_fee"]) * -1 if kind == "fee" else Decimal(
                task["reward"])
            self.unbooked[(task["task_id"], kind)] = (task["assignee"], amount)

    def expected(self) -> dict[str, Decimal]:
        """The model, less the dead-lettered facts the ledger did not book."""
        expected = dict(self.model)
        if not self.unbooked:
            return expected
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            booked = set(conn.execute(
                "SELECT ref, kind FROM accounting.journals WHERE ref = ANY(%s)",
                ([task for task, _ in self.unbooked],)).fetchall())
        for (task, kind), (worker, amount) in self.unbooked.items():
            if (task, kind) not in booked:
                expected[worker] -= amount
        return expected

    def wrong(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Workers whose ledger balance is not what the model expects: (ledger, model)."""
        self.balances = self.ledger_balances()
        return {w: (self.balances.get(w, Decimal(0)), m) for w, m in self.expected().items()
                if self.balances.get(w, Decimal(0)) != m}

    def _result(self, seen: Seen) -> list[tuple[Chore, str, str, dict[str, Any]]]:
        command_id, command = seen.field("command_id"), seen.field("command")
        if command == "list.create" and command_id in self.lists:
            chores = self.lists[command_id]
            if chores and chores[0].state != "list":
                return []  # a duplicate result
            list_id = seen.data["list"]["list_id"]
            for chore in chores:
                chore.list_id, chore.state = list_id, "create"
            return [(c, c.owner, "task.create", {"list_id": list_id, "title": "Chaos chore"})
                    for c in chores]
        task, mine = seen.field("task"), self.commands.get(command_id)
        if mine is None or not isinstance(task, dict):
            return []
        chore = mine
        if command in ("task.create", "task.assign", "task.complete"):
            # One copy of a command may be dead-lettered while another was done: the
            # result says it happened, so the chore goes on.
            chore.reason = ""
        if command == "task.create" and chore.state == "create":
            chore.task_id, chore.state = task["task_id"], "assign"
            return [(chore, chore.owner, "task.assign", {
                "task_id": task["task_id"], "version": task["version"],
                "assignee": chore.worker})]
        if command == "task.assign" and chore.state == "assign":
            chore.state = "complete"
            self.model[chore.worker] -= Decimal(task["assign_fee"])
            return [(chore, chore.worker, "task.complete", {
                "task_id": task["task_id"], "version": task["version"]})]
        if command == "task.complete" and chore.state == "complete":
            chore.state = "done"
            self.model[chore.worker] += Decimal(task["reward"])
        return []

    def ledger_balances(self) -> dict[str, Decimal]:
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            rows = conn.execute("SELECT holder, balance FROM accounting.account_balances "
                                "WHERE kind = 'user' AND holder = ANY(%s)",
                                (self.workers,)).fetchall()
        return {holder: Decimal(balance) for holder, balance in rows}

    def problems(self, watch: Watch) -> list[str]:
        found: list[str] = []
        stuck = [c for c in self.chores if not c.ended]
        if stuck:
            states = Counter(c.state for c in stuck)
            found.append(f"todo: {len(stuck)} tasks stuck (" + ", ".join(
                f"{n} before {state}" for state, n in sorted(states.items())) + ")")
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            unbalanced = conn.execute(
                "SELECT j.journal_id, sum(p.amount) FROM accounting.journals j "
                "JOIN accounting.postings p USING (journal_id) "
                "GROUP BY j.journal_id HAVING sum(p.amount) <> 0").fetchall()
            journals = conn.execute("SELECT count(*) FROM accounting.journals "
                                    "WHERE holder = ANY(%s)", (self.workers,)).fetchone()
        if unbalanced:
            found.append(f"todo: {len(unbalanced)} journals do not sum to zero, e.g. "
                         f"{unbalanced[0][0]}")
        wrong = self.wrong()
        if wrong:
            worker, (ledger, model) = next(iter(wrong.items()))
            found.append(f"todo: {len(wrong)} balances differ from the model, e.g. {worker}: "
                         f"ledger {ledger}, model {model}")
        self.verdicts = {
            "tasks": len(self.chores), "workers": len(self.workers),
            "completed": sum(c.state == "done" for c in self.chores),
            "journals": int(journals[0]) if journals else 0,
            "journals unbalanced (all)": len(unbalanced),
            "balances equal to the model": len(self.model) - len(wrong),
            "facts dead-lettered before the ledger": len(self.unbooked),
            **_tally("ended", {str(i): c.reason for i, c in enumerate(self.chores)
                               if c.reason})}
        return found


WORKLOADS: Mapping[str, Callable[[Mapping[str, str], int, random.Random], Workload]] = {
    "signing": lambda env, n, rng: Signing(env, n),
    "bounty": Bounty,
    "todo": Todo,
}
# -- the killer ---------------------------------------------------------------------------------
@dataclass
class Killer:
    layout: Layout
    victims: Sequence[str]
    every: float
    rng: random.Random
    most: int | None = None
    kills: list[tuple[float, str]] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stopping.wait(self.rng.uniform(0.5, 1.5) * self.every):
            if self.most is not None and len(self.kills) >= self.most:
                return
            name = self.rng.choice(list(self.victims))
            _, children = StateFile(self.layout.state_file).read()
            for child in children:
                if child.name == name and alive(child):
                    try:
                        os.killpg(child.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.kills.append((time.monotonic(), name))


def redeliveries_absorbed(layout: Layout, since: datetime) -> int:
    """Inbox answers to redelivered events, from the functions' JSON logs."""
    stamp = since.strftime("%Y-%m-%d %H:%M:%S")
    count = 0
    for log in layout.logs.glob("*.log"):
        with log.open(errors="replace") as lines:
            for line in lines:
                if "redelivery answered from the inbox" in line and line[10:29] >= stamp:
                    count += 1
    return count


# -- the run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    events: int
    kills: int
    retries: int
    duplicates_on_topic: int
    redeliveries_absorbed: int
    dead_lettered: int
    seconds: float
    problems: tuple[str, ...]
    invariants: Mapping[str, str] = field(default_factory=dict)
    verdicts: Mapping[str, int] = field(default_factory=dict)

    def table(self) -> str:
        rows: list[tuple[str, object]] = [
            ("events accepted (by the run)", self.events),
            ("kills (SIGKILL)", self.kills),
            ("retries recorded by the dispatcher", self.retries),
            ("duplicate events on the topic", self.duplicates_on_topic),
            ("redeliveries absorbed by inboxes", self.redeliveries_absorbed),
            ("dead-lettered", self.dead_lettered),
            *[(name, count) for name, count in self.verdicts.items()],
            *[(f"invariant: {name}", verdict) for name, verdict in self.invariants.items()],
            ("seconds", round(self.seconds, 1)), ("invariants broken", len(self.problems))]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def not_lost(loads: Sequence[Workload], watch: Watch) -> list[str]:
    """Every event the run put in is on the broker topic; every dead letter says why."""
    on_topic = {s.id for s in watch.events}
    missing = [i for load in loads for i in load.sent if i not in on_topic]
    found = [f"{len(missing)} accepted events never reached the broker topic, e.g. "
             f"{missing[0]}"] if missing else []
    refused = [r for load in loads if isinstance(load, (Bounty, Todo))
               for r in load.sender.refused]
    if refused:
        found.append(f"{len(refused)} events refused at the edge, e.g. {refused[0]}")
    unexplained = [s for s in watch.letters if not s.reason]
    if unexplained:
        found.append(f"{len(unexplained)} dead letters without knativeerrorcode/dest, e.g. "
                     f"{unexplained[0].type} {unexplained[0].id}")
    return found


def run(layout: Layout, env: Mapping[str, str], *, workloads: Sequence[str], count: int,
        kill_every: float, victims: Sequence[str], seed: int, settle_seconds: float,
        max_kills: int | None = None, say: Callable[[str], None] = print) -> Outcome:
    rng = random.Random(seed)  # noqa: S311 - a reproducible choice of victims, not a secret
    started_at, clock = datetime.now(UTC), time.monotonic()
    watch = Watch(env)
    loads = [WORKLOADS[name](env, count, random.Random(rng.random()))  # noqa: S311
             for name in workloads]
    killer = Killer(layout, victims, kill_every, rng, max_kills)
    threads = [threading.Thread(target=killer.run, name="killer", daemon=True)]
    errors: list[str] = []

    def drive(load: Workload) -> None:
        try:
            load.drive()
        except Exception as exc:  # a driver that gave up is a finding, not a crash
            errors.append(f"{load.name}: driving failed: {exc!r}")

    threads += [threading.Thread(target=drive, args=(load,), name=load.name, daemon=True)
                for load in loads]
    for load in loads:
        say(f"{load.name}: driving ({count})…")
    for thread in threads:
        thread.start()

    def settle(deadline: float) -> bool:
        done, told = False, time.monotonic()
        while time.monotonic() < deadline:
            new = watch.poll()
            if time.monotonic() - told >= 15:
                told = time.monotonic()
                say(f"  {told - clock:5.0f} s: {len(watch.events)} events on the topic, "
                    f"{len(killer.kills)} kills, {len(watch.letters)} dead letters")
            done = all([load.advance(new) for load in loads]) and not any(
                t.is_alive() for t in threads[1:])
            if done:
                break
            time.sleep(0.5)
        return done

    try:
        settled = settle(time.monotonic() + settle_seconds)
    finally:
        killer.stopping.set()
        threads[0].join()
    if not settled:  # let the last restarted parts finish what they were given
        settle(time.monotonic() + settle_seconds)
    for thread in threads[1:]:
        thread.join(timeout=5)
    watch.poll()
    invariants: dict[str, str] = {}
    problems: list[str] = [*errors]
    for name, found in [("no accepted event lost", not_lost(loads, watch)),
                        *[(f"{load.name} flow", load.problems(watch)) for load in loads]]:
        invariants[name] = "holds" if not found else f"BROKEN ({len(found)})"
        problems += found
    for load in loads:
        if isinstance(load, (Bounty, Todo)):
            load.sender.close()
    watch.close()
    verdicts = {**{f"killed: {name}": n for name, n in sorted(Counter(
        name for _, name in killer.kills).items())}, **{
        f"{load.name}: {what}": n for load in loads for what, n in load.verdicts.items()}}
    return Outcome(events=sum(load.accepted for load in loads), kills=len(killer.kills),
                   retries=watch.retries, duplicates_on_topic=watch.duplicates(),
                   redeliveries_absorbed=redeliveries_absorbed(layout, started_at),
                   dead_lettered=len(watch.letters), seconds=time.monotonic() - clock,
                   problems=tuple(problems), invariants=invariants, verdicts=verdicts)


def main(argv: Sequence[str] | None = None) -> int:
    layout = Layout.from_env()
    parser = argparse.ArgumentParser(prog="./taskw chaos --", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000,
                        help="transaction requests; bounties are count/10, tasks count/4")
    parser.add_argument("--flows", default=",".join(FLOWS),
                        help=f"which flows, comma-separated (default {','.join(FLOWS)})")
    parser.add_argument("--kill-every", type=float, default=3.0,
                        help="seconds between kills, on average")
    parser.add_argument("--victims", nargs="+", default=list(VICTIMS))
    parser.add_argument("--max-kills", type=int, default=None, help="stop killing after N")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--settle-seconds", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the outcome here")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request drowns the table
    flows = [f.strip() for f in args.flows.split(",") if f.strip()]
    unknown = sorted(set(flows) - set(WORKLOADS))
    if unknown or not flows:
        parser.error(f"--flows: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(FLOWS)}")
    env = running_env(layout)
    if env is None:
        print("No local stack is running: start one with `./taskw start`.", file=sys.stderr)
        return NO_STACK
    print(f"chaos: seed {args.seed}, flows {', '.join(flows)}, killing one of "
          f"{', '.join(args.victims)} every ~{args.kill_every:g} s")
    outcome = run(layout, env, workloads=flows, count=args.count,
                  kill_every=args.kill_every, victims=args.victims, seed=args.seed,
                  settle_seconds=args.settle_seconds, max_kills=args.max_kills)
    print(outcome.table())
    for problem in outcome.problems:
        print(f"BROKEN: {problem}")
    if args.json is not None:
        args.json.write_text(json.dumps(dataclasses.asdict(outcome), indent=2) + "\n")
    return BROKEN if outcome.problems else 0


if __name__ == "__main__":
    sys.exit(main())
