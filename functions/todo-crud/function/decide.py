"""What a todo command does, and who may do it: pure code on plain values.

The edge hands over the actor (from the Auth Context), the resource as stored, the
command, the time and, for a new task, a price drawn at random by the caller, so that
everything here is deterministic. A refusal is one of eventing.errors:

- NotFound: the resource does not exist *or the actor may not see it* (the same answer,
  so ids of other users' lists and tasks do not leak);
- Forbidden: the actor sees it but may not do this to it;
- Conflict: the version the command was based on is not the current one, or the task is
  not in a state the command applies to;
- Unauthorized: no verified actor at all.

Who may do what is one table, MAY: an action → the relations (`owner` of the list the
resource is in, `assignee` of the task) and roles that allow it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Final, Literal, TypeVar

from eventing import auth
from eventing.errors import Conflict, Forbidden, InvalidEvent, NotFound, Unauthorized
from eventing.events import (
    ListCreate,
    ListRename,
    TaskAssign,
    TaskCreate,
    TaskUpdate,
    TodoList,
    TodoTask,
)

Action = Literal["list.read", "list.change", "task.create", "task.read", "task.update",
                 "task.assign", "task.complete", "task.reopen", "task.delete", "task.price"]

# Who may: relations to the resource, and roles. A role alone never makes a list or a
# task of someone else visible unless it is listed for `*.read` (manager, admin).
MAY: Final[Mapping[Action, frozenset[str]]] = {
    "list.read": frozenset({"owner", "manager", "admin"}),
    "list.change": frozenset({"owner", "admin"}),        # rename, delete
    "task.create": frozenset({"owner", "admin"}),        # in a list
    "task.read": frozenset({"owner", "assignee", "manager", "admin"}),
    "task.update": frozenset({"owner", "admin"}),        # title, notes
    "task.assign": frozenset({"owner", "manager", "admin"}),
    "task.complete": frozenset({"owner", "assignee", "manager", "admin"}),
    "task.reopen": frozenset({"owner", "manager", "admin"}),
    "task.delete": frozenset({"owner", "admin"}),
    "task.price": frozenset({"manager", "admin"}),       # set fee and reward at creation
}
# What makes the resource visible for each action: not visible → 404, else → 403.
SEES: Final[Mapping[Action, Action]] = {
    "list.read": "list.read", "list.change": "list.read", "task.create": "list.read",
    **{a: "task.read" for a in ("task.read", "task.update", "task.assign", "task.complete",
                                "task.reopen", "task.delete", "task.price")},
}

# Prices drawn when the creator may not (or did not) set them, in cents: fee 10-20,
# reward 20-40, both inclusive, two decimals.
FEE_CENTS: Final = (1000, 2000)
REWARD_CENTS: Final = (2000, 4000)
MAX_PRICE: Final = Decimal(1_000_000)


@dataclass(frozen=True)
class Actor:
    user: str
    role: auth.Role


@dataclass(frozen=True)
class Pricing:
    """The denomination every price is in (TODO_DENOMINATION) and its decimals."""

    denomination: str
    decimals: int


@dataclass(frozen=True)
class Draw:
    """The random part of a new task's price, drawn by the caller."""

    fee_cents: int
    reward_cents: int


def draw(randint: Callable[[int, int], int]) -> Draw:
    """A price drawn with `randint(a, b)` (inclusive, as random.randint)."""
    return Draw(fee_cents=randint(*FEE_CENTS), reward_cents=randint(*REWARD_CENTS))


def actor_of(authtype: str | None, authid: str | None, authrole: str | None) -> Actor:
    """The verified actor of a command, from its Auth Context."""
    if authtype != auth.APP_USER or not authid:
        raise Unauthorized("todo commands need a verified user: send them with "
                           "'Authorization: Bearer <token>'", field="authid")
    role = authrole or auth.DEFAULT_ROLE
    if role not in auth.ROLES:
        raise Unauthorized(f"unknown role {role!r}", field="authrole")
    return Actor(user=authid, role=role)  # type: ignore[arg-type]  # checked: in ROLES


def principals(actor: Actor, owner: str, assignee: str | None = None) -> frozenset[str]:
    relations = {"owner"} if actor.user == owner else set()
    if assignee is not None and actor.user == assignee:
        relations.add("assignee")
    return frozenset({*relations, actor.role})


def check(actor: Actor, action: Action, what: str, owner: str,
          assignee: str | None = None) -> None:
    """NotFound unless the actor sees `what`; Forbidden unless it may do `action` to it."""
    who = principals(actor, owner, assignee)
    if not who & MAY[SEES[action]]:
        raise not_found(what)
    if not who & MAY[action]:
        raise Forbidden(f"{actor.user} may not {action.split('.')[1]} {what}")


def not_found(what: str) -> NotFound:
    return NotFound(f"no {what}")


def expect_version(current: int, given: int, what: str) -> None:
    if current != given:
        raise Conflict(f"{what} is at version {current}, not {given}: read it again",
                       field="data.version")


# -- lists --------------------------------------------------------------------------------
def list_create(actor: Actor, command: ListCreate, list_id: str, now: datetime) -> TodoList:
    return TodoList(list_id=list_id, owner=actor.user, title=command.title, version=1,
                    created_at=now, updated_at=now)


def list_read(actor: Actor, current: TodoList | None, list_id: str) -> TodoList:
    what = f"list {list_id}"
    if current is None:
        raise not_found(what)
    check(actor, "list.read", what, current.owner)
    return current


def list_rename(actor: Actor, current: TodoList | None, command: ListRename,
                now: datetime) -> TodoList:
    listed = _changeable(actor, current, command.list_id, command.version)
    return listed.model_copy(update={"title": command.title, "version": listed.version + 1,
                                     "updated_at": now})


def list_delete(actor: Actor, current: TodoList | None, list_id: str, version: int,
                tasks: Iterable[TodoTask], now: datetime) -> tuple[TodoList, tuple[TodoTask, ...]]:
    """The list and its tasks as deleted (each one version on, by this actor)."""
    listed = _changeable(actor, current, list_id, version)
    return (listed.model_copy(update={"version": listed.version + 1, "updated_at": now}),
            tuple(_changed(task, actor, now) for task in tasks))


def _changeable(actor: Actor, current: TodoList | None, list_id: str,
                version: int) -> TodoList:
    what = f"list {list_id}"
    if current is None:
        raise not_found(what)
    check(actor, "list.change", what, current.owner)
    expect_version(current.version, version, what)
    return current


# -- tasks --------------------------------------------------------------------------------
def task_create(actor: Actor, listed: TodoList | None, command: TaskCreate, task_id: str,
                now: datetime, pricing: Pricing, drawn: Draw) -> TodoTask:
    what = f"list {command.list_id}"
    if listed is None:
        raise not_found(what)
    check(actor, "task.create", what, listed.owner)
    for name in ("assign_fee", "reward"):
        if getattr(command, name) is not None and not principals(
                actor, listed.owner) & MAY["task.price"]:
            raise Forbidden(f"only a manager or an admin sets a task's {name}; leave it out "
                            "and it is drawn at random", field=f"data.{name}")
    fee = _price(command.assign_fee, "assign_fee", pricing) \
        or _cents(drawn.fee_cents)
    reward = _price(command.reward, "reward", pricing) or _cents(drawn.reward_cents)
    return TodoTask(task_id=task_id, list_id=listed.list_id, owner=listed.owner,
                    title=command.title, notes=command.notes, status="open", assignee=None,
                    assign_fee=fee, reward=reward, denomination=pricing.denomination,
                    decimals=pricing.decimals, version=1, actor=actor.user,
                    created_at=now, updated_at=now)


def task_read(actor: Actor, current: TodoTask | None, task_id: str) -> TodoTask:
    what = f"task {task_id}"
    if current is None:
        raise not_found(what)
    check(actor, "task.read", what, current.owner, current.assignee)
    return current


def task_update(actor: Actor, current: TodoTask | None, command: TaskUpdate,
                now: datetime) -> TodoTask:
    task = _acting_on(actor, "task.update", current, command.task_id, command.version)
    changes: dict[str, object] = {}
    if command.title is not None:
        changes["title"] = command.title
    if command.notes is not None:
        changes["notes"] = command.notes
    return _changed(task, actor, now, **changes)


def task_assign(actor: Actor, current: TodoTask | None, command: TaskAssign,
                now: datetime) -> TodoTask | None:
    """The task assigned to `command.assignee`; None when it already is (no new
    assignment, so no second fee)."""
    task = _acting_on(actor, "task.assign", current, command.task_id, command.version)
    if task.status != "open":
        raise Conflict(f"task {task.task_id} is done: reopen it before assigning it",
                       field="data.task_id")
    if task.assignee == command.assignee:
        return None
    return _changed(task, actor, now, assignee=command.assignee)


def task_complete(actor: Actor, current: TodoTask | None, task_id: str, version: int,
                  now: datetime) -> TodoTask:
    task = _acting_on(actor, "task.complete", current, task_id, version)
    if task.status != "open":
        raise Conflict(f"task {task_id} is done already", field="data.task_id")
    return _changed(task, actor, now, status="done")


def task_reopen(actor: Actor, current: TodoTask | None, task_id: str, version: int,
                now: datetime) -> TodoTask:
    task = _acting_on(actor, "task.reopen", current, task_id, version)
    if task.status != "done":
        raise Conflict(f"task {task_id} is open already", field="data.task_id")
    return _changed(task, actor, now, status="open")


def task_delete(actor: Actor, current: TodoTask | None, task_id: str, version: int,
                now: datetime) -> TodoTask:
    task = _acting_on(actor, "task.delete", current, task_id, version)
    return _changed(task, actor, now)


def _acting_on(actor: Actor, action: Action, current: TodoTask | None, task_id: str,
               version: int) -> TodoTask:
    what = f"task {task_id}"
    if current is None:
        raise not_found(what)
    check(actor, action, what, current.owner, current.assignee)
    expect_version(current.version, version, what)
    return current


def _changed(task: TodoTask, actor: Actor, now: datetime, **changes: object) -> TodoTask:
    return task.model_copy(update={**changes, "version": task.version + 1,
                                   "actor": actor.user, "updated_at": now})


# -- prices -------------------------------------------------------------------------------
def _cents(cents: int) -> str:
    return plain(Decimal(cents).scaleb(-2))


def plain(amount: Decimal) -> str:
    """A decimal string as events carry them: no exponent, no trailing zeros."""
    return format(amount.normalize(), "f")


def _price(given: str | None, name: str, pricing: Pricing) -> str | None:
    if given is None:
        return None
    try:
        amount = Decimal(given)
    except InvalidOperation:  # the model's pattern makes this unreachable; be explicit
        raise InvalidEvent(f"{name} is not a decimal", field=f"data.{name}") from None
    if amount > MAX_PRICE:
        raise InvalidEvent(f"{name} is at most {MAX_PRICE}", field=f"data.{name}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > pricing.decimals:
        raise InvalidEvent(f"{name} has more than the {pricing.decimals} decimals of "
                           f"{pricing.denomination}", field=f"data.{name}")
    return plain(amount)


# -- pages --------------------------------------------------------------------------------
def cursor_of(seq: int) -> str:
    """An opaque cursor: the position after which the next page starts."""
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def position_of(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.isdigit():
            return int(text)
    except (binascii.Error, ValueError):
        pass
    raise InvalidEvent("cursor is not one this function gave out", field="data.cursor")


T = TypeVar("T")


def page(rows: Sequence[tuple[int, T]], limit: int) -> tuple[tuple[T, ...], str | None]:
    """A page of `limit` from `rows` (position, item), fetched with limit + 1: the cursor
    of the next page, or None when this is the last."""
    items = tuple(item for _, item in rows[:limit])
    more = len(rows) > limit
    return items, cursor_of(rows[limit - 1][0]) if more else None
