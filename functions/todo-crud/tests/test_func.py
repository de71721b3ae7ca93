"""Tier 2: todo-crud in-process through func-python's real decode/encode path, with its
lists, tasks, inbox and outbox in the local stack's PostgreSQL (schema `todo`, role `todo`).

The function is started without K_SINK, so its facts stay in the outbox where these tests
read them (the stack's own todo-crud may relay them meanwhile: rows are kept once
published). Every test acts as users of its own (a random suffix), so tests never share
a list or a task in the shared database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio

from eventing import auth
from function import new
from function.func import Function
from tests.factory import Event, cloudevent, served

pytestmark = pytest.mark.stack

SECRET = "a test secret for todo-crud, 32 bytes or more"
TODO = "dev.eventworks.todo."


@pytest.fixture
def env(stack_env):
    return {"DATABASE_URL": stack_env["DATABASE_URL_TODO"], "JWT_SECRET": SECRET}


@pytest.fixture
def users() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {name: f"{name}-{suffix}" for name in ("alice", "bob", "mallory", "maria")}


@pytest_asyncio.fixture
async def client(env) -> AsyncIterator[httpx.AsyncClient]:
    # Prices drawn at the low end: fee 10, reward 20, so tests know them.
    async with served(Function(randint=lambda a, b: a), env) as running:
        yield running


def token(user: str, role: auth.Role = "user", **claims: Any) -> str:
    return auth.sign(SECRET, user, role, **claims)


def command(what: str, data: dict[str, Any], *, as_user: str | None = None,
            role: auth.Role = "user", bearer: str | None = None, id: str | None = None,
            **extensions: str) -> Event:
    event = cloudevent(TODO + what, data, id=id, source="/tests/todo", **extensions)
    headers = dict(event.headers)
    if as_user is not None or bearer is not None:
        headers["authorization"] = f"Bearer {bearer or token(as_user or '', role)}"
    return Event(headers=headers, body=event.body, attributes=event.attributes)


async def send(client: httpx.AsyncClient, event: Event) -> httpx.Response:
    return await client.post("/", content=event.body, headers=dict(event.headers))


async def ok(client: httpx.AsyncClient, event: Event) -> dict[str, Any]:
    response = await send(client, event)
    assert response.status_code == 200, response.text
    assert response.headers["ce-type"] == "dev.eventworks.todo.result"
    assert response.headers["ce-source"] == "/eventworks/todo-crud"
    result: dict[str, Any] = response.json()
    return result


async def new_list(client, owner: str, title: str = "Chores") -> dict[str, Any]:
    listed: dict[str, Any] = (await ok(client, command("list.create", {"title": title},
                                                       as_user=owner)))["list"]
    return listed


async def new_task(client, owner: str, list_id: str, role: auth.Role = "user",
                   **data: Any) -> dict[str, Any]:
    task: dict[str, Any] = (await ok(client, command(
        "task.create", {"list_id": list_id, "title": "Dishes", **data}, as_user=owner,
        role=role)))["task"]
    return task


def facts(env, subject: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of the outbox's facts about `subject`, oldest first."""
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT attributes->>'type', data FROM todo.outbox"
            " WHERE attributes->>'subject' = %s ORDER BY seq", (subject,)).fetchall()
    return [(t, d) for t, d in rows]


# -- the happy path and the facts -------------------------------------------------------------
async def test_given_a_token_when_creating_assigning_and_completing_then_facts_follow_in_order(
        client, env, users) -> None:
    alice, bob = users["alice"], users["bob"]
    listed = await new_list(client, alice)
    task = await new_task(client, alice, listed["list_id"])
    assert (task["owner"], task["assign_fee"], task["reward"], task["denomination"]) == (
        alice, "10", "20", "USDC")

    assigned = await ok(client, command("task.assign", {
        "task_id": task["task_id"], "version": 1, "assignee": bob}, as_user=alice))
    done = await ok(client, command("task.complete", {
        "task_id": task["task_id"], "version": 2}, as_user=bob))

    assert assigned["task"]["assignee"] == bob
    assert (done["command"], done["task"]["status"], done["task"]["actor"]) == (
        "task.complete", "done", bob)
    assert [t for t, _ in facts(env, task["task_id"])] == [
        TODO + "task.created", TODO + "task.assigned", TODO + "task.completed"]
    assert facts(env, task["task_id"])[-1][1] == done["task"]
    assert [t for t, _ in facts(env, listed["list_id"])] == [TODO + "list.created"]


async def test_given_a_command_delivered_twice_then_one_change_and_the_same_answer(
        client, env, users) -> None:
    event = command("list.create", {"title": "Once"}, as_user=users["alice"])

    first = await send(client, event)
    second = await send(client, event)

    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.headers["ce-id"] == second.headers["ce-id"]
    list_id = first.json()["list"]["list_id"]
    assert len(facts(env, list_id)) == 1
    page = await ok(client, command("lists.query", {}, as_user=users["alice"]))
    assert [item["list_id"] for item in page["lists"]] == [list_id]


async def test_given_a_command_id_replayed_by_another_user_then_conflict_not_the_answer(
        client, users) -> None:
    event = command("list.create", {"title": "Mine"}, as_user=users["alice"])
    assert (await send(client, event)).status_code == 200
    replay = command("list.create", {"title": "Mine"}, as_user=users["mallory"], id=event.id)

    response = await send(client, replay)

    assert response.status_code == 409
    assert "Mine" not in response.text


async def test_given_a_stale_version_then_409_and_nothing_changes(client, env, users) -> None:
    listed = await new_list(client, users["alice"])
    await ok(client, command("list.rename", {"list_id": listed["list_id"], "title": "Two",
                                             "version": 1}, as_user=users["alice"]))

    response = await send(client, command("list.rename", {
        "list_id": listed["list_id"], "title": "Stale", "version": 1}, as_user=users["alice"]))

    assert response.status_code == 409
    assert response.json()["field"] == "data.version"
    got = await ok(client, command("list.get", {"list_id": listed["list_id"]},
                                   as_user=users["alice"]))
    assert (got["list"]["title"], got["list"]["version"]) == ("Two", 2)
    # the refused command published nothing: a rolled-back change has no fact
    assert [t for t, _ in facts(env, listed["list_id"])] == [
        TODO + "list.created", TODO + "list.renamed"]


async def test_given_another_users_list_or_task_then_404_as_if_it_did_not_exist(
        client, users) -> None:
    listed = await new_list(client, users["alice"])
    task = await new_task(client, users["alice"], listed["list_id"])
    mallory = users["mallory"]

    hidden = [
        await send(client, command("list.get", {"list_id": listed["list_id"]}, as_user=mallory)),
        await send(client, command("task.complete", {"task_id": task["task_id"], "version": 1},
                                   as_user=mallory)),
        await send(client, command("task.create", {"list_id": listed["list_id"], "title": "x"},
                                   as_user=mallory)),
    ]
    missing = await send(client, command("list.get", {"list_id": str(uuid.uuid4())},
                                         as_user=mallory))

    assert [r.status_code for r in hidden] == [404, 404, 404]
    assert missing.status_code == 404
    assert listed["list_id"] not in hidden[0].text or "no list" in hidden[0].json()["detail"]
    page = await ok(client, command("lists.query", {}, as_user=mallory))
    assert page["lists"] == []


async def test_given_a_manager_then_it_assigns_any_task_and_sets_prices_users_cannot(
        client, users) -> None:
    alice, maria, bob = users["alice"], users["maria"], users["bob"]
    listed = await new_list(client, alice)
    task = await new_task(client, alice, listed["list_id"])

    assigned = await ok(client, command("task.assign", {
        "task_id": task["task_id"], "version": 1, "assignee": bob}, as_user=maria,
        role="manager"))
    priced = await send(client, command("task.create", {
        "list_id": listed["list_id"], "title": "t", "reward": "99.5"}, as_user=alice))
    renamed = await send(client, command("list.rename", {
        "list_id": listed["list_id"], "title": "Mine now", "version": 1}, as_user=maria,
        role="manager"))

    assert assigned["task"]["assignee"] == bob
    assert priced.status_code == 403
    assert priced.json()["field"] == "data.reward"
    assert renamed.status_code == 403
    own = (await ok(client, command("list.create", {"title": "Team"}, as_user=maria,
                                    role="manager")))["list"]
    set_price = await new_task(client, maria, own["list_id"], "manager", assign_fee="1.5",
                               reward="99.5")
    # the manager's own token says so; its role travels as authrole
    assert (set_price["assign_fee"], set_price["reward"]) == ("1.5", "99.5")


async def test_given_a_control_character_in_a_title_then_400_naming_the_field(
        client, users) -> None:
    response = await send(client, command("list.create", {"title": "evil\x1b[2J"},
                                          as_user=users["alice"]))

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "data.title"


async def test_given_a_list_deleted_then_its_tasks_go_with_it_each_with_a_fact(
        client, env, users) -> None:
    alice = users["alice"]
    listed = await new_list(client, alice)
    tasks = [await new_task(client, alice, listed["list_id"]) for _ in range(2)]

    deleted = await ok(client, command("list.delete", {"list_id": listed["list_id"],
                                                       "version": 1}, as_user=alice))

    assert deleted["deleted"] is True
    assert sorted(t["task_id"] for t in deleted["tasks"]) == sorted(t["task_id"] for t in tasks)
    for task in tasks:
        assert facts(env, task["task_id"])[-1][0] == TODO + "task.deleted"
    assert facts(env, listed["list_id"])[-1][0] == TODO + "list.deleted"
    gone = await send(client, command("task.complete", {"task_id": tasks[0]["task_id"],
                                                        "version": 1}, as_user=alice))
    assert gone.status_code == 404


async def test_given_more_lists_than_a_page_then_the_cursor_walks_them_all(client, users) -> None:
    alice = users["alice"]
    made = [(await new_list(client, alice, f"L{i}"))["list_id"] for i in range(5)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        data = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = await ok(client, command("lists.query", data, as_user=alice))
        seen += [item["list_id"] for item in page["lists"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == made
    assert pages == 3


async def test_given_tasks_assigned_to_me_in_others_lists_then_tasks_query_finds_them(
        client, users) -> None:
    alice, bob = users["alice"], users["bob"]
    listed = await new_list(client, alice)
    task = await new_task(client, alice, listed["list_id"])
    await ok(client, command("task.assign", {"task_id": task["task_id"], "version": 1,
                                             "assignee": bob}, as_user=alice))

    page = await ok(client, command("tasks.query", {}, as_user=bob))

    assert [t["task_id"] for t in page["tasks"]] == [task["task_id"]]


# -- who acts: tokens at the function edge, and the broker's Auth Context ----------------------
async def test_given_no_token_and_no_auth_context_then_401(client) -> None:
    response = await send(client, command("list.create", {"title": "x"}))
    assert response.status_code == 401


@pytest.mark.parametrize("bad", ["expired", "forged", "none-alg", "garbage", "bad-role"])
async def test_given_a_bad_token_then_401_and_nothing_written(client, env, users, bad) -> None:
    alice = users["alice"]
    bearer = {
        "expired": auth.sign(SECRET, alice, ttl_seconds=-3600),
        "forged": auth.sign("another secret that is also 32 bytes long", alice),
        "none-alg": _unsigned({"sub": alice, "exp": 4102444800}),
        "garbage": "not.a.jwt",
        "bad-role": auth.sign(SECRET, alice, role="owner"),  # type: ignore[arg-type]
    }[bad]
    event = command("list.create", {"title": "x"}, bearer=bearer)

    response = await send(client, event)

    assert response.status_code == 401, response.text
    assert response.json()["field"] == "header authorization"
    page = await ok(client, command("lists.query", {}, as_user=alice))
    assert page["lists"] == []


async def test_given_a_token_and_a_client_set_authid_then_the_token_wins(client, users) -> None:
    event = command("list.create", {"title": "x"}, as_user=users["alice"],
                    authtype="app_user", authid=users["mallory"], authrole="admin")

    listed = (await ok(client, event))["list"]

    assert listed["owner"] == users["alice"]


async def test_given_the_brokers_auth_context_without_a_token_then_it_is_trusted(
        client, users) -> None:
    # Functions are reachable only from the broker, whose ingress set these after it
    # verified the token (the trust boundary: docs/decisions.md, "Who acts").
    event = command("list.create", {"title": "x"}, authtype="app_user",
                    authid=users["alice"], authrole="user")

    listed = (await ok(client, event))["list"]

    assert listed["owner"] == users["alice"]


async def test_given_an_unauthenticated_auth_context_then_401(client, users) -> None:
    event = command("list.create", {"title": "x"}, authtype="unauthenticated")
    assert (await send(client, event)).status_code == 401


def _unsigned(claims: dict[str, Any]) -> str:
    import base64

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_given_the_function_then_new_returns_it() -> None:
    assert isinstance(new(), Function)
