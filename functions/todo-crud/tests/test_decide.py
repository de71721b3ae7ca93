"""Tier 1: todo-crud's rules and its authorization matrix, on plain values."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

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
from function import decide
from function.decide import Actor, Draw, Pricing

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
USDC = Pricing("USDC", 6)
DRAW = Draw(fee_cents=1234, reward_cents=2500)
LIST_ID = "11111111-1111-4111-8111-111111111111"
TASK_ID = "22222222-2222-4222-8222-222222222222"

OWNER = Actor("alice", "user")
ASSIGNEE = Actor("bob", "user")
OTHER = Actor("mallory", "user")
MANAGER = Actor("maria", "manager")
ACCOUNTANT = Actor("ada", "accountant")
ADMIN = Actor("root", "admin")
OWNING_MANAGER = Actor("alice", "manager")


def a_list(**changes: Any) -> TodoList:
    return TodoList(list_id=LIST_ID, owner="alice", title="Chores", version=3, created_at=T0,
                    updated_at=T0).model_copy(update=changes)


def a_task(**changes: Any) -> TodoTask:
    return TodoTask(task_id=TASK_ID, list_id=LIST_ID, owner="alice", title="Dishes",
                    status="open", assignee="bob", assign_fee="12.34", reward="25",
                    denomination="USDC", decimals=6, version=2, actor="alice",
                    created_at=T0, updated_at=T0).model_copy(update=changes)


# -- the matrix: every command by every kind of actor -------------------------------------
ALLOWED, FORBIDDEN, HIDDEN = "ok", "403", "404"
ACTORS = {"owner": OWNER, "assignee": ASSIGNEE, "other": OTHER, "manager": MANAGER,
          "accountant": ACCOUNTANT, "admin": ADMIN}

Command = Callable[[Actor], object]
COMMANDS: dict[str, Command] = {
    "list.get": lambda actor: decide.list_read(actor, a_list(), LIST_ID),
    "list.rename": lambda actor: decide.list_rename(
        actor, a_list(), ListRename(list_id=LIST_ID, title="Errands", version=3), T1),
    "list.delete": lambda actor: decide.list_delete(actor, a_list(), LIST_ID, 3, [a_task()], T1),
    "task.create": lambda actor: decide.task_create(
        actor, a_list(), TaskCreate(list_id=LIST_ID, title="Sweep"), TASK_ID, T1, USDC, DRAW),
    "task.read": lambda actor: decide.task_read(actor, a_task(), TASK_ID),
    "task.update": lambda actor: decide.task_update(
        actor, a_task(), TaskUpdate(task_id=TASK_ID, version=2, title="Dry"), T1),
    "task.assign": lambda actor: decide.task_assign(
        actor, a_task(), TaskAssign(task_id=TASK_ID, version=2, assignee="carol"), T1),
    "task.complete": lambda actor: decide.task_complete(actor, a_task(), TASK_ID, 2, T1),
    "task.reopen": lambda actor: decide.task_reopen(
        actor, a_task(status="done"), TASK_ID, 2, T1),
    "task.delete": lambda actor: decide.task_delete(actor, a_task(), TASK_ID, 2, T1),
}

# Rows: command; columns: owner, assignee, other, manager, accountant, admin.
MATRIX = {
    "list.get":      ("ok", "404", "404", "ok", "404", "ok"),
    "list.rename":   ("ok", "404", "404", "403", "404", "ok"),
    "list.delete":   ("ok", "404", "404", "403", "404", "ok"),
    "task.create":   ("ok", "404", "404", "403", "404", "ok"),
    "task.read":     ("ok", "ok", "404", "ok", "404", "ok"),
    "task.update":   ("ok", "403", "404", "403", "404", "ok"),
    "task.assign":   ("ok", "403", "404", "ok", "404", "ok"),
    "task.complete": ("ok", "ok", "404", "ok", "404", "ok"),
    "task.reopen":   ("ok", "403", "404", "ok", "404", "ok"),
    "task.delete":   ("ok", "403", "404", "403", "404", "ok"),
}
CASES = [(command, who, expected) for command, row in MATRIX.items()
         for who, expected in zip(ACTORS, row, strict=True)]


@pytest.mark.parametrize(("command", "who", "expected"), CASES,
                         ids=[f"{c}-{w}" for c, w, _ in CASES])
def test_given_the_matrix_when_an_actor_sends_a_command_then_it_is_allowed_hidden_or_forbidden(
        command: str, who: str, expected: str) -> None:
    run = COMMANDS[command]
    if expected == ALLOWED:
        run(ACTORS[who])
    else:
        with pytest.raises({FORBIDDEN: Forbidden, HIDDEN: NotFound}[expected]):
            run(ACTORS[who])


def test_given_the_matrix_then_it_covers_every_command() -> None:
    assert set(MATRIX) == set(COMMANDS)


def test_given_another_users_resource_when_hidden_then_the_answer_equals_a_missing_one() -> None:
    with pytest.raises(NotFound) as hidden:
        decide.task_read(OTHER, a_task(), TASK_ID)
    with pytest.raises(NotFound) as missing:
        decide.task_read(OTHER, None, TASK_ID)
    assert hidden.value.detail == missing.value.detail


# -- who acts ---------------------------------------------------------------------------
@pytest.mark.parametrize(("authtype", "authid", "authrole"), [
    (None, None, None), ("unauthenticated", None, None), ("unauthenticated", "alice", None),
    ("app_user", None, "user"), ("app_user", "", "user"), ("app_user", "alice", "root"),
    ("user", "alice", "user")])
def test_given_no_verified_user_when_acting_then_unauthorized(authtype, authid, authrole) -> None:
    with pytest.raises(Unauthorized):
        decide.actor_of(authtype, authid, authrole)


def test_given_a_verified_user_without_a_role_then_it_acts_as_a_user() -> None:
    assert decide.actor_of("app_user", "alice", None) == Actor("alice", "user")
    assert decide.actor_of("app_user", "maria", "manager") == Actor("maria", "manager")


# -- lists ------------------------------------------------------------------------------
def test_given_a_new_list_then_the_actor_owns_it_at_version_1() -> None:
    listed = decide.list_create(OTHER, ListCreate(title="Mine"), LIST_ID, T0)
    assert (listed.owner, listed.version, listed.title) == ("mallory", 1, "Mine")


def test_given_a_rename_then_the_version_moves_on_and_the_time_is_now() -> None:
    renamed = decide.list_rename(OWNER, a_list(), ListRename(list_id=LIST_ID, title="Errands",
                                                             version=3), T1)
    assert (renamed.title, renamed.version, renamed.updated_at, renamed.created_at) == (
        "Errands", 4, T1, T0)


def test_given_a_stale_version_when_renaming_then_conflict() -> None:
    with pytest.raises(Conflict) as raised:
        decide.list_rename(OWNER, a_list(), ListRename(list_id=LIST_ID, title="X", version=2), T1)
    assert raised.value.field == "data.version"


def test_given_a_list_deleted_then_each_of_its_tasks_is_deleted_with_it() -> None:
    listed, tasks = decide.list_delete(OWNER, a_list(), LIST_ID, 3,
                                       [a_task(), a_task(task_id="3" * 8 + TASK_ID[8:])], T1)
    assert listed.version == 4
    assert [(t.version, t.actor, t.updated_at) for t in tasks] == [(3, "alice", T1)] * 2


@pytest.mark.parametrize("title", ["a\x00b", "line\nbreak", "tab\there", "bell\x07",
                                   "del\x7f", "c1\x85", " ", ""])
def test_given_a_bad_title_then_the_model_refuses_it_naming_the_field(title: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ListCreate(title=title)
    assert raised.value.errors()[0]["loc"] == ("title",)


def test_given_a_long_title_then_refused_and_unicode_is_fine() -> None:
    with pytest.raises(ValidationError):
        ListCreate(title="x" * 201)
    assert ListCreate(title="Café ☕ " + "x" * 190).title.startswith("Café")


def test_given_notes_then_newlines_and_tabs_are_fine_other_controls_are_not() -> None:
    TaskCreate(list_id=LIST_ID, title="t", notes="one\n\ttwo")
    with pytest.raises(ValidationError):
        TaskCreate(list_id=LIST_ID, title="t", notes="esc\x1b[31m")


# -- prices -----------------------------------------------------------------------------
def test_given_a_user_creates_a_task_then_the_price_is_the_draw() -> None:
    task = decide.task_create(OWNER, a_list(), TaskCreate(list_id=LIST_ID, title="t"),
                              TASK_ID, T1, USDC, Draw(fee_cents=1000, reward_cents=3990))
    assert (task.assign_fee, task.reward, task.denomination, task.decimals) == (
        "10", "39.9", "USDC", 6)
    assert (task.status, task.assignee, task.version, task.owner) == ("open", None, 1, "alice")


def test_given_draws_then_fees_are_10_to_20_and_rewards_20_to_40_with_two_decimals() -> None:
    rng = random.Random(7)
    drawn = [decide.draw(rng.randint) for _ in range(2000)]
    fees = [Decimal(decide.plain(Decimal(d.fee_cents).scaleb(-2))) for d in drawn]
    rewards = [Decimal(decide.plain(Decimal(d.reward_cents).scaleb(-2))) for d in drawn]
    assert all(10 <= f <= 20 for f in fees)
    assert all(20 <= r <= 40 for r in rewards)
    assert all(f == f.quantize(Decimal("0.01")) for f in fees + rewards)
    # the bounds are inclusive: randint(a, b) at either end
    assert decide.draw(lambda a, b: a) == Draw(fee_cents=1000, reward_cents=2000)
    assert decide.draw(lambda a, b: b) == Draw(fee_cents=2000, reward_cents=4000)


@pytest.mark.parametrize("actor", [OWNING_MANAGER, Actor("alice", "admin")])
def test_given_a_manager_or_admin_when_setting_prices_then_they_stand(actor: Actor) -> None:
    task = decide.task_create(actor, a_list(), TaskCreate(
        list_id=LIST_ID, title="t", assign_fee="0.000001", reward="100"), TASK_ID, T1, USDC, DRAW)
    assert (task.assign_fee, task.reward) == ("0.000001", "100")


def test_given_a_manager_sets_only_the_fee_then_the_reward_is_drawn() -> None:
    task = decide.task_create(OWNING_MANAGER, a_list(), TaskCreate(
        list_id=LIST_ID, title="t", assign_fee="5"), TASK_ID, T1, USDC, DRAW)
    assert (task.assign_fee, task.reward) == ("5", "25")


@pytest.mark.parametrize("field", ["assign_fee", "reward"])
def test_given_a_user_when_setting_a_price_then_forbidden_naming_it(field: str) -> None:
    with pytest.raises(Forbidden) as raised:
        decide.task_create(OWNER, a_list(), TaskCreate(list_id=LIST_ID, title="t", **{field: "1"}),
                           TASK_ID, T1, USDC, DRAW)
    assert raised.value.field == f"data.{field}"


@pytest.mark.parametrize("fee", ["0.0000001", "1000001"])
def test_given_a_price_beyond_the_denomination_then_invalid(fee: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        decide.task_create(OWNING_MANAGER, a_list(), TaskCreate(
            list_id=LIST_ID, title="t", assign_fee=fee), TASK_ID, T1, USDC, DRAW)
    assert raised.value.field == "data.assign_fee"


# -- task states ------------------------------------------------------------------------
def test_given_an_assignment_to_the_assignee_already_then_nothing_changes() -> None:
    assert decide.task_assign(OWNER, a_task(), TaskAssign(task_id=TASK_ID, version=2,
                                                          assignee="bob"), T1) is None


def test_given_an_assignment_then_the_task_names_the_assignee_and_the_actor() -> None:
    task = decide.task_assign(MANAGER, a_task(assignee=None),
                              TaskAssign(task_id=TASK_ID, version=2, assignee="carol"), T1)
    assert task is not None
    assert (task.assignee, task.actor, task.version, task.assign_fee) == (
        "carol", "maria", 3, "12.34")


def test_given_a_done_task_when_assigning_or_completing_then_conflict() -> None:
    done = a_task(status="done")
    with pytest.raises(Conflict):
        decide.task_assign(OWNER, done, TaskAssign(task_id=TASK_ID, version=2, assignee="c"), T1)
    with pytest.raises(Conflict):
        decide.task_complete(ASSIGNEE, done, TASK_ID, 2, T1)


def test_given_an_open_task_when_reopening_then_conflict() -> None:
    with pytest.raises(Conflict):
        decide.task_reopen(OWNER, a_task(), TASK_ID, 2, T1)


def test_given_complete_then_reopen_then_the_task_is_open_again_two_versions_on() -> None:
    done = decide.task_complete(ASSIGNEE, a_task(), TASK_ID, 2, T1)
    assert (done.status, done.actor) == ("done", "bob")
    reopened = decide.task_reopen(OWNER, done, TASK_ID, 3, T1)
    assert (reopened.status, reopened.version, reopened.assignee) == ("open", 4, "bob")


def test_given_an_update_then_only_the_given_fields_change() -> None:
    task = decide.task_update(OWNER, a_task(notes="keep"),
                              TaskUpdate(task_id=TASK_ID, version=2, title="New"), T1)
    assert (task.title, task.notes, task.version) == ("New", "keep", 3)


# -- pages ------------------------------------------------------------------------------
def test_given_more_rows_than_the_limit_then_a_cursor_to_the_next_page() -> None:
    rows = [(10, "a"), (12, "b"), (15, "c")]
    items, cursor = decide.page(rows, 2)
    assert items == ("a", "b")
    assert cursor is not None
    assert decide.position_of(cursor) == 12
    assert decide.page(rows, 3) == (("a", "b", "c"), None)


@pytest.mark.parametrize("cursor", ["bm90YW51bWJlcg", "-", "YWJj"])
def test_given_a_cursor_not_given_out_then_invalid_naming_it(cursor: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        decide.position_of(cursor)
    assert raised.value.field == "data.cursor"
