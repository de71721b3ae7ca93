"""The ledger benchmark: accrue-payment's task facts booked per second, beside a bare
PostgreSQL insert loop that writes the same rows, in one run.

1. Ledger: N `todo.task.assigned` / `.completed` facts (alternating, each task assigned
   then completed, users cycling over USERS) posted to accrue-payment in this process
   through func-python's real decode/encode path (its ASGI app, called), booked in the
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

The two take turns in chunks of CHUNK (ledger, then bare), at 1 client and at CONCURRENCY,
so that load arriving meanwhile (the stack, other work on the machine) slows both alike.

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

from func_python.cloudevent import ASGIApplication
from psycopg import AsyncConnection, AsyncCursor, sql

from bench.processes import BenchFailure
from stack.layout import Layout
from tests.factory import Event, asgi_call, cloudevent

EVENTS = 1000
CONCURRENCY = 4
CHUNK = 100  # events per turn of the ledger, then as many bare transactions
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


async def asgi_post(app: Any, event: Event) -> tuple[int, bytes]:
    """POST one event to an ASGI app by calling it: func-python's real decode, the edge and
    the encode, without an HTTP client's request building and response parsing, which are
    the caller's cost (the dispatcher's, in the stack) and which the bare loop has no twin
    of. httpx's ASGITransport was about 40 % of a booked fact's time in this process."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
               for k, v in event.headers.items()]
    headers.append((b"content-length", str(len(event.body)).encode()))
    status, _, answer = await asgi_call(app, "POST", headers, event.body)
    return status, answer


class _Bare:
    """The bare loop's connections (one per client) and its own plain table."""

    def __init__(self, connections: list[AsyncConnection[Any]], table: sql.Identifier,
                 inserts: int) -> None:
        self.connections = connections
        self.insert = sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table)
        self.table = table
        self.inserts = inserts

    @classmethod
    async def open(cls, url: str, concurrency: int, inserts: int) -> _Bare:
        # A logged table like the ledger's (a temporary one writes no WAL, commits for
        # free), in the schema the role owns; dropped afterwards.
        table = sql.Identifier("accounting", f"bench_bare_{uuid.uuid4().hex[:10]}")
        connections = [await AsyncConnection.connect(url) for _ in range(concurrency)]
        await connections[0].execute(sql.SQL("CREATE TABLE {} (n bigint, v numeric)")
                                     .format(table))
        await connections[0].commit()
        return cls(connections, table, inserts)

    async def transaction(self, n: int, i: int) -> None:
        conn = self.connections[n]
        async with conn.transaction():
            for k in range(self.inserts):
                await conn.execute(self.insert, (i, k))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.connections[0].execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(self.table))
            await self.connections[0].commit()
        for conn in self.connections:
            await conn.close()


async def _level(env: Mapping[str, str], url: str, count: int, concurrency: int,
                 inserts: int, chunk: int) -> tuple[Run, Run, int]:
    """The ledger and the bare loop at one number of clients, taking turns in chunks of
    `chunk` events (as the functions part does), so that load arriving during the run
    slows both alike; the statements the ledger's chunks made."""
    function = _accrue_payment()
    app = ASGIApplication(function)
    function.start({**env, "DATABASE_POOL_SIZE": str(max(concurrency, 2)),
                    "LOG_LEVEL": "WARNING"})
    bare = await _Bare.open(url, concurrency, inserts)
    try:
        async def post(_: int, event: Event) -> None:
            status, answer = await asgi_post(app, event)
            if status == 409:  # a deadlock lost: the broker would retry it
                status, answer = await asgi_post(app, event)
            if status != 202:
                raise BenchFailure(f"accrue-payment answered {status}: {answer[:200]!r}")

        for event in facts(10, uuid.uuid4().hex[:10]):  # the pool opened, plans cached
            await post(0, event)
        for i in range(10):
            await bare.transaction(0, -1 - i)
        events = facts(count, uuid.uuid4().hex[:10])
        ledger_seconds = bare_seconds = 0.0
        statements = 0
        for first in range(0, count, chunk):
            turn = events[first:first + chunk]
            with counted_statements() as counted:
                ledger_seconds += await _clients(concurrency, turn, post)
            statements += counted[0]
            bare_seconds += await _clients(concurrency, list(range(first, first + len(turn))),
                                           bare.transaction)
    finally:
        await bare.close()
        await function.aclose()
    return Run(count, ledger_seconds), Run(count, bare_seconds), statements


def run(stack_env: Mapping[str, str], *, events: int = EVENTS,
        concurrency: int = CONCURRENCY, chunk: int = CHUNK) -> LedgerResult:
    url = stack_env.get("DATABASE_URL_ACCOUNTING")
    if url is None:
        raise BenchFailure("the stack's env has no DATABASE_URL_ACCOUNTING: restart it")
    env = {"DATABASE_URL": url}
    ledger: dict[int, Run] = {}
    bare: dict[int, Run] = {}
    trips: list[float] = []
    bare_trips = ROWS_PER_EVENT + 2  # + BEGIN and COMMIT
    for level in sorted({1, concurrency}):
        print(f"ledger: {events} task facts beside {events} bare transactions of "
              f"{bare_trips} round trips, {level} client(s), in turns of {chunk}…", flush=True)
        ledger[level], bare[level], statements = asyncio.run(
            _level(env, url, events, level, bare_trips - 2, chunk))
        trips.append(statements / events)  # BEGIN and COMMIT counted where sent
    return LedgerResult(ledger, bare, sum(trips) / len(trips), bare_trips)
