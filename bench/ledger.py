"""The ledger benchmark: accrue-payment's task facts booked per second, beside a bare
PostgreSQL insert loop that writes the same rows, in one run.

1. Ledger: N `todo.task.assigned` / `.completed` facts (alternating, each task assigned
   then completed, users cycling over USERS) posted to accrue-payment in this process
   through func-python's real decode/encode path (tests/factory.served), booked in the
   stack's PostgreSQL as the function's own role: one `accounting.book_fact` in
   autocommit (migration 0013: inbox claim, journal, accounts, two postings, the balance
   trigger, the recorded answer; the deferred balance check at its commit). Sequential,
   then CONCURRENCY clients at once (the company account is every entry's counter-party:
   its balance is kept in shards since migration 0011).
2. Bare loop: the same number of transactions on one psycopg connection per client, each
   BEGIN, one single-row INSERT per row a booked fact writes (ROWS_PER_EVENT: the inbox
   claim, the journal, its two postings, the inbox's answer) into a plain (logged) table of
   its own, COMMIT: the same rows written by plain psycopg without our code, one statement
   each. The ledger's own round trips are counted on psycopg (statements, and BEGIN and
   COMMIT where a transaction block sends them) and reported beside it: writing those
   rows in fewer round trips is part of what the function may gain over the bare loop;
   its HTTP decode/encode, validation and triggers are what it pays.

Fees exceed rewards, so the bench's users end in debt and no daily close pays them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, sql

from bench.processes import BenchFailure
from stack.layout import Layout
from tests.factory import Event, cloudevent, served

EVENTS = 1000
CONCURRENCY = 4
USERS = 20
TODO = "/eventworks/todo-crud"
# What a booked fact writes: the inbox row, the journal, its two postings, the inbox's answer.
ROWS_PER_EVENT = 5
ASSIGNED = "dev.eventworks.todo.task.assigned"
COMPLETED = "dev.eventworks.todo.task.completed"


@dataclass(frozen=True)
class Run:
    events: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True)
class LedgerResult:
    ledger: Mapping[int, Run]        # concurrency → run
    bare: Mapping[int, Run]
    round_trips_per_event: float     # counted on the ledger run
    bare_round_trips: int            # what each bare transaction made

    def ratio(self, concurrency: int) -> float:
        return self.ledger[concurrency].per_second / self.bare[concurrency].per_second

    def document(self) -> dict[str, Any]:
        return {
            "ledger": {str(c): {"events": r.events, "seconds": r.seconds,
                                "events_per_second": r.per_second}
                       for c, r in self.ledger.items()},
            "bare_loop": {str(c): {"transactions": r.events, "seconds": r.seconds,
                                   "transactions_per_second": r.per_second}
                          for c, r in self.bare.items()},
            "round_trips_per_event": self.round_trips_per_event,
            "bare_round_trips_per_transaction": self.bare_round_trips,
            "ratios": {str(c): self.ratio(c) for c in self.ledger},
        }


@contextlib.contextmanager
def counted_statements() -> Iterator[list[int]]:
    """Counts statements sent through psycopg's async cursors (an executemany is one
    pipelined round trip) and the BEGIN and COMMIT (or ROLLBACK) of its transaction blocks
    while the block runs: a statement sent in autocommit has none."""
    count = [0]
    execute, executemany = AsyncCursor.execute, AsyncCursor.executemany
    exec_command = AsyncConnection._exec_command

    def counting_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return exec_command(self, *args, **kwargs)

    async def counting_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await execute(self, *args, **kwargs)

    async def counting_executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await executemany(self, *args, **kwargs)

    AsyncCursor.execute = counting_execute  # type: ignore[method-assign]
    AsyncCursor.executemany = counting_executemany  # type: ignore[method-assign]
    AsyncConnection._exec_command = counting_command  # type: ignore[method-assign]
    try:
        yield count
    finally:
        AsyncCursor.execute = execute  # type: ignore[method-assign]
        AsyncCursor.executemany = executemany  # type: ignore[method-assign]
        AsyncConnection._exec_command = exec_command  # type: ignore[method-assign]


def facts(count: int, run: str) -> list[Event]:
    events: list[Event] = []
    for i in range(count):
        task_id = f"bench-{run}-{i // 2}"
        task = {"task_id": task_id, "list_id": f"bench-{run}", "owner": "bench",
                "title": "bench", "status": "open" if i % 2 == 0 else "done",
                "assignee": f"bench-{run}-{(i // 2) % USERS}", "assign_fee": "15.5",
                "reward": "10.25", "denomination": "USDC", "decimals": 6,
                "version": 2 + i % 2, "actor": "bench", "created_at": "2026-11-21T00:00:00Z",
                "updated_at": "2026-11-21T00:00:00Z"}
        events.append(cloudevent(COMPLETED if i % 2 else ASSIGNED, task, source=TODO,
                                 subject=task_id))
    return events


async def _clients(concurrency: int, items: list[Any],
                   work: Callable[[int, Any], Awaitable[None]]) -> float:
    """`items` shared out to `concurrency` workers in order; the seconds it took."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker(n: int) -> None:
        while not queue.empty():
            await work(n, queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*[worker(n) for n in range(concurrency)])
    return time.perf_counter() - started


def _accrue_payment() -> Any:
    """A new accrue-payment instance: its folder first on sys.path, as kn func runs it
    (every function's package is named `function`; the bench imports no other)."""
    folder = str(Layout.from_env().functions / "accrue-payment")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("function").new()


async def _ledger(env: Mapping[str, str], count: int, concurrency: int) -> tuple[Run, int]:
    function = _accrue_payment()
    events = facts(count, uuid.uuid4().hex[:10])
    async with served(function, {**env, "DATABASE_POOL_SIZE": str(max(concurrency, 2)),
                                 "LOG_LEVEL": "WARNING"}) as client:
        warm = facts(10, uuid.uuid4().hex[:10])
        for event in warm:  # the pool opened, the statements prepared
            await client.post("/", content=event.body, headers=dict(event.headers))

        async def post(_: int, event: Event) -> None:
            response = await client.post("/", content=event.body, headers=dict(event.headers))
            if response.status_code == 409:  # a deadlock lost: the broker would retry it
                response = await client.post("/", content=event.body,
                                             headers=dict(event.headers))
            if response.status_code != 202:
                raise BenchFailure(f"accrue-payment answered {response.status_code}: "
                                   f"{response.text[:200]}")

        with counted_statements() as statements:
            seconds = await _clients(concurrency, events, post)
    return Run(count, seconds), statements[0]


async def _bare(url: str, count: int, concurrency: int, inserts: int) -> Run:
    # A logged table like the ledger's (a temporary one writes no WAL, commits for free),
    # in the schema the role owns; dropped afterwards.
    table = sql.Identifier("accounting", f"bench_bare_{uuid.uuid4().hex[:10]}")
    connections = [await AsyncConnection.connect(url) for _ in range(concurrency)]
    try:
        await connections[0].execute(
            sql.SQL("CREATE TABLE {} (n bigint, v numeric)").format(table))
        await connections[0].commit()
        insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table)

        async def transaction(n: int, i: int) -> None:
            conn = connections[n]
            async with conn.transaction():
                for k in range(inserts):
                    await conn.execute(insert, (i, k))

        seconds = await _clients(concurrency, list(range(count)), transaction)
    finally:
        with contextlib.suppress(Exception):
            await connections[0].execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            await connections[0].commit()
        for conn in connections:
            await conn.close()
    return Run(count, seconds)


def run(stack_env: Mapping[str, str], *, events: int = EVENTS,
        concurrency: int = CONCURRENCY) -> LedgerResult:
    url = stack_env.get("DATABASE_URL_ACCOUNTING")
    if url is None:
        raise BenchFailure("the stack's env has no DATABASE_URL_ACCOUNTING: restart it")
    env = {"DATABASE_URL": url}
    ledger: dict[int, Run] = {}
    bare: dict[int, Run] = {}
    trips: list[float] = []
    levels = sorted({1, concurrency})
    for level in levels:
        print(f"ledger: {events} task facts, {level} client(s)…", flush=True)
        ledger[level], statements = asyncio.run(_ledger(env, events, level))
        trips.append(statements / events)  # BEGIN and COMMIT counted where sent
    per_event = sum(trips) / len(trips)
    bare_trips = ROWS_PER_EVENT + 2  # + BEGIN and COMMIT
    for level in levels:
        print(f"bare loop: {events} transactions of {bare_trips} round trips, "
              f"{level} client(s)…", flush=True)
        bare[level] = asyncio.run(_bare(url, events, level, bare_trips - 2))
    return LedgerResult(ledger, bare, per_event, bare_trips)
