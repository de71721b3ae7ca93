"""`./taskw chaos`: drive the running stack hard while killing its parts, then check that
nothing was lost, doubled or left stuck.

Workloads (`WORKLOADS`) each put a known set of work into the stack and know how to tell
when it has settled and what must then hold. While they run, a killer SIGKILLs a random
function or the broker's dispatcher every few seconds; the supervisor starts it again
(stack/supervisor.py `Restarts`), and the broker redelivers what was in flight. At the
end: the invariants of each workload, and the figures (events, kills, redeliveries
absorbed by the inboxes, dead letters).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from stack.layout import Layout
from stack.processes import StateFile, alive
from stack.supervisor import running_env

DEAD_LETTER_TOPIC = "knative-dead-letters-eventworks"
NO_STACK, BROKEN = 2, 1


class Workload(Protocol):
    name: str
    verdicts: dict[str, int]  # how the work ended, by outcome (filled by `problems`)

    def drive(self) -> int:
        """Put the work in; returns how many events it accepted into the broker."""

    def settled(self) -> bool: ...

    def problems(self) -> list[str]:
        """What does not hold, once settled (or at the deadline)."""


# -- the signing pipeline: batch reader → sign-tx (lease-key) → verify-tx ---------------------
@dataclass
class Signing:
    env: Mapping[str, str]
    count: int
    name: str = "signing"
    request_ids: list[str] = field(default_factory=list)
    verdicts: dict[str, int] = field(default_factory=dict)

    def drive(self) -> int:
        from batch.reader import drain
        from batch.requests import seed

        self.request_ids = seed(self.env["DATABASE_URL_BATCH"], self.count)
        drained = drain(self.env["DATABASE_URL_BATCH"], self.env["BROKER_URL"], budget=600)
        return drained.published

    def _count(self, query: str) -> int:
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            row = conn.execute(query, (self.request_ids,)).fetchone()
        return int(row[0]) if row else 0

    def rejected(self) -> dict[str, str]:
        """request_id → reason, for the signed transactions verify-tx rejected."""
        wanted = set(self.request_ids)
        return {e["data"]["request_id"]: e["data"].get("reason", "")
                for e in broker_events(self.env, "dev.eventworks.tx.rejected")
                if isinstance(e["data"], dict) and e["data"].get("request_id") in wanted}

    def settled(self) -> bool:
        verified = self._count("SELECT count(*) FROM verify.signed WHERE request_id = ANY(%s)")
        ended = verified + len(self.rejected()) + dead_lettered(self.env, set(self.request_ids))
        return ended >= len(self.request_ids)

    def problems(self) -> list[str]:
        found: list[str] = []
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            signed = conn.execute(
                "SELECT request_id, count(*) FROM signing.transactions "
                "WHERE request_id = ANY(%s) GROUP BY request_id", (self.request_ids,)).fetchall()
            twice = [r for r, n in signed if n != 1]
            if twice:
                found.append(f"signing: {len(twice)} requests signed more than once")
            letters = dead_lettered(self.env, set(self.request_ids))
            if len(signed) + letters < len(self.request_ids):
                found.append(f"signing: {len(self.request_ids) - len(signed) - letters} "
                             "requests neither signed nor dead-lettered")
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
            verified = {r for (r,) in conn.execute(
                "SELECT request_id FROM verify.signed WHERE request_id = ANY(%s)",
                (self.request_ids,)).fetchall()}
        rejected = self.rejected()
        unjudged = [r for r, _ in signed if r not in verified and r not in rejected]
        if unjudged:
            found.append(f"signing: {len(unjudged)} signed transactions neither verified nor "
                         f"rejected, e.g. {unjudged[0]}")
        if any(not reason for reason in rejected.values()):
            found.append("signing: a rejection without a reason")
        self.verdicts = {"verified": len(verified), **{
            f"rejected ({reason})": list(rejected.values()).count(reason)
            for reason in sorted(set(rejected.values()))}}
        return found


WORKLOADS: Mapping[str, Callable[[Mapping[str, str], int], Workload]] = {
    "signing": lambda env, n: Signing(env, n),
}


# -- what the broker dead-lettered ------------------------------------------------------------
def dead_letters(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every record of the dead-letter topic: its ce_ headers and JSON body."""
    return records(env, DEAD_LETTER_TOPIC)


def broker_events(env: Mapping[str, str], event_type: str) -> list[dict[str, Any]]:
    """Every event of `event_type` on the broker's topic."""
    from broker.dispatcher import broker_topic
    from stack.services import BROKER_NAME, BROKER_NAMESPACE

    return [r for r in records(env, broker_topic(BROKER_NAMESPACE, BROKER_NAME))
            if r["headers"].get("type") == event_type]


def records(env: Mapping[str, str], topic: str) -> list[dict[str, Any]]:
    """Every record of `topic`, from its start: attributes and JSON body."""
    from broker.dispatcher import records_to_end

    found: list[dict[str, Any]] = []
    for record in records_to_end([env["KAFKA_BOOTSTRAP_SERVERS"]], topic,
                                 client_id="eventworks-chaos", timeout=20):
        try:
            body = json.loads(record.value or b"null")
        except ValueError:
            body = None
        found.append({"headers": record.event.attributes, "data": body})
    return found


def dead_lettered(env: Mapping[str, str], request_ids: set[str]) -> int:
    return sum(1 for letter in dead_letters(env)
               if isinstance(letter["data"], dict)
               and letter["data"].get("request_id") in request_ids)


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
    redeliveries_absorbed: int
    dead_lettered: int
    seconds: float
    problems: tuple[str, ...]
    verdicts: Mapping[str, int] = field(default_factory=dict)

    def table(self) -> str:
        rows: list[tuple[str, object]] = [
            ("events accepted", self.events), ("kills (SIGKILL)", self.kills),
            ("redeliveries absorbed by inboxes", self.redeliveries_absorbed),
            ("dead-lettered", self.dead_lettered),
            *[(name, count) for name, count in self.verdicts.items()],
            ("seconds", round(self.seconds, 1)), ("invariants broken", len(self.problems))]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run(layout: Layout, env: Mapping[str, str], *, workloads: Sequence[str], count: int,
        kill_every: float, victims: Sequence[str], seed: int, settle_seconds: float,
        max_kills: int | None = None, say: Callable[[str], None] = print) -> Outcome:
    rng = random.Random(seed)  # noqa: S311 - a reproducible choice of victims, not a secret
    started_at, clock = datetime.now(UTC), time.monotonic()
    letters_before = len(dead_letters(env))
    killer = Killer(layout, victims, kill_every, rng, max_kills)
    thread = threading.Thread(target=killer.run, name="killer", daemon=True)
    thread.start()
    loads = [WORKLOADS[name](env, count) for name in workloads]
    events = 0
    try:
        for load in loads:
            say(f"{load.name}: driving {count}…")
            events += load.drive()
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline and not all(load.settled() for load in loads):
            time.sleep(1.0)
    finally:
        killer.stopping.set()
        thread.join()
    # Let the last restarted parts finish what they were given.
    deadline = time.monotonic() + settle_seconds
    while time.monotonic() < deadline and not all(load.settled() for load in loads):
        time.sleep(1.0)
    problems = tuple(p for load in loads for p in load.problems())
    verdicts = {f"{load.name}: {what}": n for load in loads for what, n in load.verdicts.items()}
    return Outcome(events=events, kills=len(killer.kills), verdicts=verdicts,
                   redeliveries_absorbed=redeliveries_absorbed(layout, started_at),
                   dead_lettered=len(dead_letters(env)) - letters_before,
                   seconds=time.monotonic() - clock, problems=problems)


def main(argv: Sequence[str] | None = None) -> int:
    layout = Layout.from_env()
    parser = argparse.ArgumentParser(prog="./taskw chaos --", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="work items per workload")
    parser.add_argument("--kill-every", type=float, default=3.0,
                        help="seconds between kills, on average")
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS),
                        default=sorted(WORKLOADS))
    parser.add_argument("--victims", nargs="+",
                        default=["sign-tx", "verify-tx", "lease-key", "dispatcher"])
    parser.add_argument("--max-kills", type=int, default=None, help="stop killing after N")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--settle-seconds", type=float, default=300.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the outcome here")
    args = parser.parse_args(argv)
    env = running_env(layout)
    if env is None:
        print("No local stack is running: start one with `./taskw start`.", file=sys.stderr)
        return NO_STACK
    print(f"chaos: seed {args.seed}, killing one of {', '.join(args.victims)} every "
          f"~{args.kill_every:g} s")
    outcome = run(layout, env, workloads=args.workloads, count=args.count,
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
