"""The todo benchmark: todo-crud commands per second beside a bare PostgreSQL loop that
makes the same number of round trips, in one run.

1. Commands: the running stack's todo-crud (FUNCTION_TODO_CRUD_URL), called directly with
   a bearer token signed with the stack's JWT_SECRET (the function verifies it itself, as
   for any direct call), one command after the other over one keep-alive connection.
   One `list.create`, then per task `task.create` → `task.assign` → `task.complete`
   until N commands were sent. Each of these is one PostgreSQL transaction of
   STATEMENTS statements in schema `todo`: the inbox claim, the read of the list or the
   task, the write, the fact into the outbox, the inbox's record of the answer.
   Reported: commands/s and p50/p99 latency as the client sees it.
2. Bare loop: N transactions of STATEMENTS single-row INSERTs each (a jsonb row the size
   of a task) into a temporary table, over one connection as the `todo` role
   (DATABASE_URL_TODO): what the same round trips to PostgreSQL cost with no HTTP, no
   CloudEvents, no pydantic, no token, no function.

The ratio commands/s ÷ bare transactions/s reads as "what the function costs on top of
the database round trips it cannot avoid". The stack's outbox relay posts the facts to
the broker meanwhile, as it would in use: that cost is in the measurement.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Json

from bench.measure import percentile
from bench.processes import BenchFailure
from broker.connections import Connections, DeliveryError, DeliveryTimeout
from eventing import auth

COMMANDS = 600
WARMUP = 30
STATEMENTS = 5          # per command: claim, read, write, outbox, record (func.py, inbox.py)
REQUEST_TIMEOUT = 10.0
SOURCE = "/eventworks/bench"
TODO = "dev.eventworks.todo."


@dataclass(frozen=True)
class TodoBench:
    commands: int
    seconds: float
    latencies_ms: list[float]
    bare_transactions: int
    bare_seconds: float

    @property
    def per_second(self) -> float:
        return self.commands / self.seconds

    @property
    def bare_per_second(self) -> float:
        return self.bare_transactions / self.bare_seconds

    @property
    def ratio(self) -> float:
        return self.per_second / self.bare_per_second

    def document(self) -> dict[str, Any]:
        return {
            "commands": {"count": self.commands, "seconds": self.seconds,
                         "per_second": self.per_second,
                         "p50_ms": percentile(self.latencies_ms, 50),
                         "p99_ms": percentile(self.latencies_ms, 99)},
            "bare_loop": {"transactions": self.bare_transactions,
                          "statements_per_transaction": STATEMENTS,
                          "seconds": self.bare_seconds, "per_second": self.bare_per_second},
            "ratio": self.ratio,
        }

    def table(self) -> str:
        rows = [("", "todo-crud", "bare PostgreSQL", "ratio"),
                ("commands (transactions)/s", f"{self.per_second:.0f}",
                 f"{self.bare_per_second:.0f}", f"{self.ratio:.3f}x"),
                ("seconds", f"{self.seconds:.2f}", f"{self.bare_seconds:.2f}", ""),
                ("latency p50 / p99 (ms)", f"{percentile(self.latencies_ms, 50):.2f} / "
                 f"{percentile(self.latencies_ms, 99):.2f}",
                 f"{self.bare_seconds * 1000 / self.bare_transactions:.2f} (mean)", "")]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join([r[0].ljust(widths[0]),
                            *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))])
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"{self.commands} todo commands (task.create, .assign, .complete) posted "
                     "directly to todo-crud with a bearer token; bare loop = the same number "
                     f"of transactions of {STATEMENTS} INSERTs each, over one connection")
        return "\n".join(lines)


Script = Generator[tuple[str, dict[str, Any]], dict[str, Any], None]


def _commands(assignee: str) -> Script:
    """list.create, then task.create/assign/complete for ever. A command's data may name
    what an earlier one made: the generator is sent each answer."""
    answer = yield "list.create", {"title": "bench"}
    list_id = answer["list"]["list_id"]
    while True:
        answer = yield "task.create", {"list_id": list_id, "title": "bench task"}
        task_id = answer["task"]["task_id"]
        yield "task.assign", {"task_id": task_id, "version": 1, "assignee": assignee}
        yield "task.complete", {"task_id": task_id, "version": 2}


def commands(stack_env: Mapping[str, str], count: int) -> tuple[float, list[float]]:
    url = stack_env["FUNCTION_TODO_CRUD_URL"]
    user = f"bench-{uuid.uuid4().hex[:8]}"
    token = auth.sign(stack_env["JWT_SECRET"], user, ttl_seconds=3600)
    connections = Connections()
    script = _commands(f"{user}-assignee")
    latencies: list[float] = []
    total = WARMUP + count
    started = 0.0
    try:
        what, data = next(script)
        for n in range(total):
            if n == WARMUP:
                started = time.perf_counter()
            headers = {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()),
                       "ce-source": SOURCE, "ce-type": TODO + what,
                       "content-type": "application/json", "authorization": f"Bearer {token}"}
            sent = time.perf_counter()
            answer = connections.post(url, json.dumps(data).encode(), headers, REQUEST_TIMEOUT)
            if n >= WARMUP:
                latencies.append((time.perf_counter() - sent) * 1000)
            if answer.status != 200:
                raise BenchFailure(f"todo-crud answered {what} with {answer.status}: "
                                   f"{answer.body[:300]!r}")
            what, data = script.send(json.loads(answer.body))
    except (DeliveryError, DeliveryTimeout) as exc:
        raise BenchFailure(f"todo-crud: {type(exc).__name__}: {exc}") from exc
    finally:
        connections.close()
    return time.perf_counter() - started, latencies


def bare_loop(database_url: str, count: int) -> float:
    row = {"task_id": str(uuid.uuid4()), "title": "bench task", "assign_fee": "12.34",
           "reward": "25", "status": "open", "owner": "bench", "version": 1}
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMPORARY TABLE bench_rows (seq bigint GENERATED ALWAYS AS "
                     "IDENTITY PRIMARY KEY, data jsonb NOT NULL)")
        conn.commit()
        for _ in range(WARMUP):
            conn.execute("INSERT INTO bench_rows (data) VALUES (%s)", (Json(row),))
            conn.commit()
        started = time.perf_counter()
        for _ in range(count):
            for _ in range(STATEMENTS):
                conn.execute("INSERT INTO bench_rows (data) VALUES (%s)", (Json(row),))
            conn.commit()
        return time.perf_counter() - started


def run(stack_env: Mapping[str, str], *, count: int = COMMANDS, say: Any = print) -> TodoBench:
    if "FUNCTION_TODO_CRUD_URL" not in stack_env or "JWT_SECRET" not in stack_env:
        raise BenchFailure("the stack's env has no todo-crud URL or JWT_SECRET: restart it")
    say(f"todo: {count} commands to todo-crud, then a bare PostgreSQL loop…", flush=True)
    seconds, latencies = commands(stack_env, count)
    bare = bare_loop(stack_env["DATABASE_URL_TODO"], count)
    return TodoBench(commands=count, seconds=seconds, latencies_ms=latencies,
                     bare_transactions=count, bare_seconds=bare)
