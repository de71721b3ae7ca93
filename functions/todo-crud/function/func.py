"""todo-crud: per-user todo lists and tasks, and who may act on them.

decode (the edge: the command's model; the actor from the Auth Context, which the
broker ingress or this edge set from a verified bearer token) → decide (pure,
function.decide: the rules and the authorization matrix) → act (one transaction in
schema `todo`: the change, its facts in the outbox, the command's inbox row) → answer
`dev.eventworks.todo.result` with the resource after the change, or a page.

The command's CloudEvent (source, id) is its idempotency key (the edge's inbox); ids of
new lists and tasks are derived from it, so a retried command names the same resource.
Facts (`todo.list.*`, `todo.task.*`) go through the outbox and are relayed to K_SINK.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from pydantic import Field, field_validator

from eventing.auth import AuthSettings
from eventing.denominations import DEFAULT_REGISTRY
from eventing.edge import Delivery, Edge, Envelope, Reply, Route
from eventing.events import (
    TODO_LIST_CREATE,
    TODO_LIST_CREATED,
    TODO_LIST_DELETE,
    TODO_LIST_DELETED,
    TODO_LIST_GET,
    TODO_LIST_RENAME,
    TODO_LIST_RENAMED,
    TODO_LISTS_QUERY,
    TODO_RESULT,
    TODO_TASK_ASSIGN,
    TODO_TASK_ASSIGNED,
    TODO_TASK_COMPLETE,
    TODO_TASK_COMPLETED,
    TODO_TASK_CREATE,
    TODO_TASK_CREATED,
    TODO_TASK_DELETE,
    TODO_TASK_DELETED,
    TODO_TASK_REOPEN,
    TODO_TASK_REOPENED,
    TODO_TASK_UPDATE,
    TODO_TASK_UPDATED,
    TODO_TASKS_QUERY,
    ListCreate,
    ListDelete,
    ListGet,
    ListRename,
    ListsQuery,
    TaskAssign,
    TaskComplete,
    TaskCreate,
    TaskDelete,
    TaskReopen,
    TasksQuery,
    TaskUpdate,
    TodoList,
    TodoResult,
    TodoTask,
)
from eventing.settings import Settings
from function import decide
from function.decide import Actor, Pricing

# Ids of new lists and tasks: UUIDv5 of the command's (source, id) in this namespace.
IDS = uuid.UUID("6f1c1d0e-6c3b-5b8e-9a53-7d0c1e2f4a10")
COMMAND_PREFIX = "dev.eventworks.todo."

LISTS = sql.SQL("SELECT seq, list_id::text AS list_id, owner, title, version, created_at,"
                " updated_at FROM lists WHERE {where}")
TASKS = sql.SQL("SELECT seq, task_id::text AS task_id, list_id::text AS list_id, owner, title,"
                " notes, status, assignee, assign_fee, reward, denomination, decimals,"
                " version, actor, created_at, updated_at FROM tasks WHERE {where}")
LOCKED = " FOR UPDATE"
KEY_SHARE = " FOR KEY SHARE"


class TodoSettings(Settings, AuthSettings):
    # What every task's fee and reward are in (eventing/denominations.py).
    denomination: str = Field(default="USDC", alias="TODO_DENOMINATION")

    @field_validator("denomination")
    @classmethod
    def _known(cls, value: str) -> str:
        if value.upper() not in DEFAULT_REGISTRY:
            raise ValueError(f"must be one of {', '.join(sorted(DEFAULT_REGISTRY))}")
        return value.upper()

    @property
    def pricing(self) -> Pricing:
        return Pricing(self.denomination, DEFAULT_REGISTRY[self.denomination].decimals)


def new() -> Function:
    return Function()


class Function(Edge[TodoSettings]):
    name = "todo-crud"
    schema = "todo"
    outbox = True
    settings_type = TodoSettings

    def __init__(self, randint: Callable[[int, int], int] | None = None) -> None:
        super().__init__()
        # Where a new task's price comes from; tests pass their own to know it.
        self._randint = randint or secrets.SystemRandom().randint

    def routes(self) -> Mapping[str, Route[Any]]:
        return {
            TODO_LIST_CREATE: Route(ListCreate, self.on_list_create),
            TODO_LIST_RENAME: Route(ListRename, self.on_list_rename),
            TODO_LIST_DELETE: Route(ListDelete, self.on_list_delete),
            TODO_LIST_GET: Route(ListGet, self.on_list_get),
            TODO_LISTS_QUERY: Route(ListsQuery, self.on_lists_query),
            TODO_TASKS_QUERY: Route(TasksQuery, self.on_tasks_query),
            TODO_TASK_CREATE: Route(TaskCreate, self.on_task_create),
            TODO_TASK_UPDATE: Route(TaskUpdate, self.on_task_update),
            TODO_TASK_ASSIGN: Route(TaskAssign, self.on_task_assign),
            TODO_TASK_COMPLETE: Route(TaskComplete, self.on_task_complete),
            TODO_TASK_REOPEN: Route(TaskReopen, self.on_task_reopen),
            TODO_TASK_DELETE: Route(TaskDelete, self.on_task_delete),
        }

    # -- lists ----------------------------------------------------------------------------
    async def on_list_create(self, delivery: Delivery[ListCreate]) -> Reply:
        tx, actor, now = _context(delivery)
        listed = decide.list_create(actor, delivery.data, new_id(delivery.envelope), now)
        await _save_list(tx, listed)
        await self.publish(delivery, TODO_LIST_CREATED, listed, subject=listed.list_id)
        return result(delivery, list=listed)

    async def on_list_rename(self, delivery: Delivery[ListRename]) -> Reply:
        tx, actor, now = _context(delivery)
        current = await _list(tx, delivery.data.list_id, lock=LOCKED)
        listed = decide.list_rename(actor, current, delivery.data, now)
        await _save_list(tx, listed)
        await self.publish(delivery, TODO_LIST_RENAMED, listed, subject=listed.list_id)
        return result(delivery, list=listed)

    async def on_list_delete(self, delivery: Delivery[ListDelete]) -> Reply:
        tx, actor, now = _context(delivery)
        data = delivery.data
        current = await _list(tx, data.list_id, lock=LOCKED)
        tasks = [] if current is None else [task for _, task in await _tasks(
            tx, "list_id = %s ORDER BY seq" + LOCKED, (data.list_id,))]
        listed, deleted = decide.list_delete(actor, current, data.list_id, data.version,
                                             tasks, now)
        # Its tasks go with it (ON DELETE CASCADE); each gets its own fact first.
        await tx.execute("DELETE FROM lists WHERE list_id = %s", (listed.list_id,))
        for task in deleted:
            await self.publish(delivery, TODO_TASK_DELETED, task, subject=task.task_id)
        await self.publish(delivery, TODO_LIST_DELETED, listed, subject=listed.list_id)
        return result(delivery, list=listed, tasks=deleted, deleted=True)

    async def on_list_get(self, delivery: Delivery[ListGet]) -> Reply:
        tx, actor, _ = _context(delivery)
        data = delivery.data
        listed = decide.list_read(actor, await _list(tx, data.list_id), data.list_id)
        rows = await _tasks(tx, "list_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                            (data.list_id, decide.position_of(data.cursor), data.limit + 1))
        tasks, cursor = decide.page(rows, data.limit)
        return result(delivery, list=listed, tasks=tasks, next_cursor=cursor)

    async def on_lists_query(self, delivery: Delivery[ListsQuery]) -> Reply:
        tx, actor, _ = _context(delivery)
        data = delivery.data
        rows = await _lists(tx, "owner = %s AND seq > %s ORDER BY seq LIMIT %s",
                            (actor.user, decide.position_of(data.cursor), data.limit + 1))
        lists, cursor = decide.page(rows, data.limit)
        return result(delivery, lists=lists, next_cursor=cursor)

    async def on_tasks_query(self, delivery: Delivery[TasksQuery]) -> Reply:
        tx, actor, _ = _context(delivery)
        data = delivery.data
        rows = await _tasks(tx, "assignee = %s AND seq > %s ORDER BY seq LIMIT %s",
                            (actor.user, decide.position_of(data.cursor), data.limit + 1))
        tasks, cursor = decide.page(rows, data.limit)
        return result(delivery, tasks=tasks, next_cursor=cursor)

    # -- tasks ----------------------------------------------------------------------------
    async def on_task_create(self, delivery: Delivery[TaskCreate]) -> Reply:
        tx, actor, now = _context(delivery)
        # KEY SHARE: a concurrent list.delete waits for this task, or this sees it gone.
        listed = await _list(tx, delivery.data.list_id, lock=KEY_SHARE)
        task = decide.task_create(actor, listed, delivery.data, new_id(delivery.envelope), now,
                                  self.settings.pricing, decide.draw(self._randint))
        await _save_task(tx, task)
        await self.publish(delivery, TODO_TASK_CREATED, task, subject=task.task_id)
        return result(delivery, task=task)

    async def on_task_update(self, delivery: Delivery[TaskUpdate]) -> Reply:
        return await self._change_task(delivery, delivery.data.task_id, TODO_TASK_UPDATED,
                                       lambda actor, current, now: decide.task_update(
                                           actor, current, delivery.data, now))

    async def on_task_assign(self, delivery: Delivery[TaskAssign]) -> Reply:
        return await self._change_task(delivery, delivery.data.task_id, TODO_TASK_ASSIGNED,
                                       lambda actor, current, now: decide.task_assign(
                                           actor, current, delivery.data, now))

    async def on_task_complete(self, delivery: Delivery[TaskComplete]) -> Reply:
        data = delivery.data
        return await self._change_task(delivery, data.task_id, TODO_TASK_COMPLETED,
                                       lambda actor, current, now: decide.task_complete(
                                           actor, current, data.task_id, data.version, now))

    async def on_task_reopen(self, delivery: Delivery[TaskReopen]) -> Reply:
        data = delivery.data
        return await self._change_task(delivery, data.task_id, TODO_TASK_REOPENED,
                                       lambda actor, current, now: decide.task_reopen(
                                           actor, current, data.task_id, data.version, now))

    async def on_task_delete(self, delivery: Delivery[TaskDelete]) -> Reply:
        tx, actor, now = _context(delivery)
        data = delivery.data
        current = await _task(tx, data.task_id, lock=LOCKED)
        task = decide.task_delete(actor, current, data.task_id, data.version, now)
        await tx.execute("DELETE FROM tasks WHERE task_id = %s", (task.task_id,))
        await self.publish(delivery, TODO_TASK_DELETED, task, subject=task.task_id)
        return result(delivery, task=task, deleted=True)

    async def _change_task(self, delivery: Delivery[Any], task_id: str, fact: str,
                           change: Callable[[Actor, TodoTask | None, datetime],
                                            TodoTask | None]) -> Reply:
        """Read the task locked, decide the change, save it and publish `fact`; a change
        of nothing (None) answers with the task as it is and publishes nothing."""
        tx, actor, now = _context(delivery)
        current = await _task(tx, task_id, lock=LOCKED)
        task = change(actor, current, now)
        if task is None:
            assert current is not None  # decide returns None only for a task it found
            return result(delivery, task=current)
        await _save_task(tx, task)
        await self.publish(delivery, fact, task, subject=task.task_id)
        return result(delivery, task=task)


# -- the act: reads and writes in schema `todo` ----------------------------------------------
def _context(delivery: Delivery[Any]) -> tuple[AsyncConnection, Actor, datetime]:
    tx = delivery.tx
    assert tx is not None  # the function has a schema: the edge opened its transaction
    envelope = delivery.envelope
    actor = decide.actor_of(envelope.authtype, envelope.authid, envelope.authrole)
    return tx, actor, datetime.now(UTC)


def new_id(envelope: Envelope) -> str:
    """The id of what a command creates: the same for every delivery of the command."""
    return str(uuid.uuid5(IDS, f"{envelope.source}\n{envelope.id}"))


def result(delivery: Delivery[Any], **fields: Any) -> Reply:
    envelope = delivery.envelope
    answer = TodoResult(command=envelope.type.removeprefix(COMMAND_PREFIX),
                        command_id=envelope.id, **fields)
    subject = (answer.task.task_id if answer.task is not None
               else answer.list.list_id if answer.list is not None else None)
    return Reply(TODO_RESULT, answer, subject=subject)


async def _list(tx: AsyncConnection, list_id: str, *, lock: str = "") -> TodoList | None:
    """`lock`: the locking clause (LOCKED, KEY_SHARE), if any."""
    rows = await _lists(tx, "list_id = %s" + lock, (list_id,))
    return rows[0][1] if rows else None


async def _lists(tx: AsyncConnection, where: str,
                 params: Sequence[object]) -> list[tuple[int, TodoList]]:
    """(seq, list) of the lists `where` (a constant of this module) selects."""
    cur = await tx.cursor(row_factory=dict_row).execute(
        LISTS.format(where=sql.SQL(where)), params)
    return [(row.pop("seq"), TodoList.model_validate(row)) for row in await cur.fetchall()]


async def _task(tx: AsyncConnection, task_id: str, *, lock: str = "") -> TodoTask | None:
    rows = await _tasks(tx, "task_id = %s" + lock, (task_id,))
    return rows[0][1] if rows else None


async def _tasks(tx: AsyncConnection, where: str,
                 params: Sequence[object]) -> list[tuple[int, TodoTask]]:
    """(seq, task) of the tasks `where` (a constant of this module) selects."""
    cur = await tx.cursor(row_factory=dict_row).execute(
        TASKS.format(where=sql.SQL(where)), params)
    return [(row.pop("seq"), _task_of(row)) for row in await cur.fetchall()]


def _task_of(row: dict[str, Any]) -> TodoTask:
    for name in ("assign_fee", "reward"):
        row[name] = decide.plain(Decimal(row[name]))
    return TodoTask.model_validate(row)


async def _save_list(tx: AsyncConnection, listed: TodoList) -> None:
    await tx.execute(
        "INSERT INTO lists (list_id, owner, title, version, created_at, updated_at)"
        " VALUES (%(list_id)s, %(owner)s, %(title)s, %(version)s, %(created_at)s,"
        "         %(updated_at)s)"
        " ON CONFLICT (list_id) DO UPDATE SET title = EXCLUDED.title,"
        "   version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
        listed.model_dump())


async def _save_task(tx: AsyncConnection, task: TodoTask) -> None:
    await tx.execute(
        "INSERT INTO tasks (task_id, list_id, owner, title, notes, status, assignee,"
        "                   assign_fee, reward, denomination, decimals, version, actor,"
        "                   created_at, updated_at)"
        " VALUES (%(task_id)s, %(list_id)s, %(owner)s, %(title)s, %(notes)s, %(status)s,"
        "         %(assignee)s, %(assign_fee)s, %(reward)s, %(denomination)s, %(decimals)s,"
        "         %(version)s, %(actor)s, %(created_at)s, %(updated_at)s)"
        " ON CONFLICT (task_id) DO UPDATE SET title = EXCLUDED.title,"
        "   notes = EXCLUDED.notes, status = EXCLUDED.status, assignee = EXCLUDED.assignee,"
        "   version = EXCLUDED.version, actor = EXCLUDED.actor,"
        "   updated_at = EXCLUDED.updated_at",
        {**task.model_dump(), "assign_fee": Decimal(task.assign_fee),
         "reward": Decimal(task.reward)})

