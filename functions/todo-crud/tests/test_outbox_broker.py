"""Tier 3: todo-crud's facts through its outbox to a real broker ingress that is stopped
and started again: nothing is lost while it is down, nothing is published twice.

The broker here is this module's own (`python -m broker` on a tansu of its own, at a fixed
URL, so that it comes back where K_SINK points), and so is the database: a fresh one on the
stack's PostgreSQL server with every migration applied. The stack's own todo-crud relays
the stack database's outbox; it must not take these facts to another broker.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from eventing import auth
from function.func import Function
from stack import migrate
from tests.factory import cloudevent, served
from tests.tansu import TOPIC, Stored, free_port, records, start_ingress, start_tansu

pytestmark = pytest.mark.stack

SECRET = "a test secret for todo-crud, 32 bytes or more"
MIGRATIONS = Path(__file__).resolve().parents[3] / "db" / "migrations"


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    tansu = start_tansu()
    try:
        yield tansu.bootstrap
    finally:
        tansu.kill()


@pytest.fixture(scope="module")
def database(stack_env) -> Iterator[str]:
    """A fresh database with every migration; the URL of its `todo` login."""
    server = psycopg.conninfo.make_conninfo(stack_env["DATABASE_URL"], dbname="postgres")
    name = f"todo_outbox_{uuid.uuid4().hex[:8]}"
    url = migrate.ensure_database(server, name)
    try:
        migrate.apply(url, MIGRATIONS)
        yield psycopg.conninfo.make_conninfo(url, user="todo")
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def command(what: str, data: dict[str, Any], user: str) -> tuple[dict[str, str], bytes]:
    event = cloudevent(f"dev.eventworks.todo.{what}", data, source="/tests/todo-outbox")
    return {**event.headers, "authorization": f"Bearer {auth.sign(SECRET, user)}"}, event.body


async def ok(client: httpx.AsyncClient, what: str, data: dict[str, Any],
             user: str) -> dict[str, Any]:
    headers, body = command(what, data, user)
    response = await client.post("/", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def pending(database: str) -> int:
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT count(*) FROM todo.outbox WHERE published_at IS NULL"
                           ).fetchone()
    assert row is not None
    return int(row[0])


async def drained(database: str, attempts: int = 600) -> None:
    """Wait (yielding to the relay's task) until the outbox has nothing pending."""
    for _ in range(attempts):
        if pending(database) == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pending(database)} facts still pending")


def about(kafka: str, subject: str) -> list[Stored]:
    return records(kafka, TOPIC, lambda r: r.headers.get("ce_subject") == subject.encode())


@pytest_asyncio.fixture
async def client(database, kafka, tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    port = free_port()
    ingress = start_ingress(kafka, tmp_path / "broker-1.log", port=port)
    env = {"DATABASE_URL": database, "JWT_SECRET": SECRET, "K_SINK": ingress.url}
    state = {"ingress": ingress, "port": port, "tmp": tmp_path, "kafka": kafka}
    try:
        async with served(Function(), env) as running:
            yield running, state
    finally:
        state["ingress"].stop()


async def test_given_the_broker_down_when_tasks_change_then_their_facts_wait_and_go_once_it_is_back(
        client, database, kafka) -> None:
    running, state = client
    user = f"alice-{uuid.uuid4().hex[:8]}"
    listed = (await ok(running, "list.create", {"title": "Outbox"}, user))["list"]
    await drained(database)
    assert [r.headers["ce_type"] for r in about(kafka, listed["list_id"])] == [
        b"dev.eventworks.todo.list.created"]

    state["ingress"].stop()  # the broker goes away
    task = (await ok(running, "task.create", {"list_id": listed["list_id"], "title": "t"},
                     user))["task"]
    await ok(running, "task.assign", {"task_id": task["task_id"], "version": 1,
                                      "assignee": "bob"}, user)
    await ok(running, "task.complete", {"task_id": task["task_id"], "version": 2}, "bob")
    await asyncio.sleep(0.5)  # the relay tries, and fails, meanwhile
    assert pending(database) == 3
    assert about(kafka, task["task_id"]) == []

    state["ingress"] = start_ingress(kafka, state["tmp"] / "broker-2.log", port=state["port"])
    await drained(database)

    # Read partition by partition: `time` (set as each was written) restores their order.
    facts = sorted(about(kafka, task["task_id"]),
                   key=lambda r: datetime.fromisoformat(r.headers["ce_time"].decode()))
    assert [r.headers["ce_type"] for r in facts] == [
        b"dev.eventworks.todo.task.created", b"dev.eventworks.todo.task.assigned",
        b"dev.eventworks.todo.task.completed"]
    assert len({r.headers["ce_id"] for r in facts}) == 3
    assert json.loads(facts[-1].value)["status"] == "done"
    assert all(r.headers["ce_source"] == b"/eventworks/todo-crud" for r in facts)
