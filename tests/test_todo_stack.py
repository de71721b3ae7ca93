"""todo-crud wired into the local stack: its Trigger takes commands only, and a command
posted to the broker with a bearer token becomes todo-crud's result and facts on the
broker topic (through the Trigger, the broker ingress's Auth Context and the outbox relay).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from broker.match import trigger_filter
from eventing import auth
from eventing.events import TODO_COMMANDS, TODO_RESULT
from tests.factory import cloudevent
from tests.tansu import Stored, records

TRIGGER = "todo-crud-commands"
FACTS = [f"dev.eventworks.todo.list.{what}" for what in ("created", "renamed", "deleted")] + [
    f"dev.eventworks.todo.task.{what}" for what in (
        "created", "updated", "assigned", "completed", "reopened", "deleted")]


# -- the Trigger (knative/base/todo-crud.yaml) ------------------------------------------------
@pytest.mark.parametrize("event_type", TODO_COMMANDS)
def test_given_a_todo_command_then_the_trigger_takes_it(event_type: str) -> None:
    event = {"specversion": "1.0", "id": "1", "source": "/x", "type": event_type}
    assert trigger_filter(TRIGGER).match(event).matched


@pytest.mark.parametrize("event_type", [*FACTS, TODO_RESULT, "dev.eventworks.todo.anything"])
def test_given_a_fact_or_a_result_then_the_trigger_leaves_it(event_type: str) -> None:
    event = {"specversion": "1.0", "id": "1", "source": "/x", "type": event_type}
    assert not trigger_filter(TRIGGER).match(event).matched


# -- through the running stack ---------------------------------------------------------------
def topic_records(stack_env: dict[str, str], where: Any, count: int = 1,
                  timeout: float = 60.0) -> list[Stored]:
    """Records of the stack's broker topic for which `where` holds, waited for."""
    topic = "knative-broker-eventworks-default"
    deadline = time.monotonic() + timeout
    while True:
        found = records(stack_env["KAFKA_BOOTSTRAP_SERVERS"], topic, where)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def send(stack_env: dict[str, str], token: str, what: str, data: dict[str, Any]) -> str:
    event = cloudevent(f"dev.eventworks.todo.{what}", data, source="/tests/todo-stack")
    response = httpx.post(stack_env["BROKER_URL"], content=event.body,
                          headers={**event.headers, "authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text
    return event.id


def result(stack_env: dict[str, str], command_id: str) -> dict[str, Any]:
    def mine(record: Stored) -> bool:
        return (record.headers.get("ce_type") == TODO_RESULT.encode()
                and json.loads(record.value).get("command_id") == command_id)

    found = topic_records(stack_env, mine)
    assert found, f"no todo.result for command {command_id} on the broker topic"
    answer: dict[str, Any] = json.loads(found[0].value)
    return answer


@pytest.mark.stack
def test_given_a_token_when_commands_go_through_the_broker_then_results_and_facts_follow(
        stack_env: dict[str, str]) -> None:
    secret = stack_env["JWT_SECRET"]
    suffix = uuid.uuid4().hex[:8]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    as_alice, as_bob = auth.sign(secret, alice), auth.sign(secret, bob)

    listed = result(stack_env, send(stack_env, as_alice, "list.create",
                                    {"title": "Through the broker"}))["list"]
    task = result(stack_env, send(stack_env, as_alice, "task.create",
                                  {"list_id": listed["list_id"], "title": "Mow"}))["task"]
    result(stack_env, send(stack_env, as_alice, "task.assign",
                           {"task_id": task["task_id"], "version": 1, "assignee": bob}))
    done = result(stack_env, send(stack_env, as_bob, "task.complete",
                                  {"task_id": task["task_id"], "version": 2}))["task"]

    assert listed["owner"] == alice
    assert (done["status"], done["assignee"], done["actor"]) == ("done", bob, bob)
    facts = topic_records(
        stack_env, lambda r: r.headers.get("ce_subject") == task["task_id"].encode()
        and r.headers.get("ce_type", b"").startswith(b"dev.eventworks.todo.task."), count=3)
    # Facts carry no partition key, so the topic's partitions hold them in no common
    # order: their `time` (set in the transaction that wrote each) orders them.
    facts.sort(key=lambda f: datetime.fromisoformat(f.headers["ce_time"].decode()))
    assert [f.headers["ce_type"].decode() for f in facts] == [
        "dev.eventworks.todo.task.created", "dev.eventworks.todo.task.assigned",
        "dev.eventworks.todo.task.completed"]
    assert all(f.headers["ce_source"] == b"/eventworks/todo-crud" for f in facts)
    completed = json.loads(facts[-1].value)
    assert (completed["assignee"], completed["assign_fee"], completed["reward"]) == (
        bob, task["assign_fee"], task["reward"])
