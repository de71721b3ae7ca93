"""accrue-payment in the running local stack: task facts posted to the Broker reach the
ledger through the Triggers of knative/base/accrue-payment.yaml; balance.get answers the
assignee; the daily close's payout.due reaches the Broker through the outbox relay
(K_SINK from the SinkBinding).

The ping goes straight to the function's URL, as the PingSource does. The first test posts
facts as todo-crud would and asks for the balance at the function's URL with an Auth Context
(a direct call without a token keeps it); the last drives the issue's whole path with tokens.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from broker.manifests import Destination, load
from eventing import auth
from stack.services import sink_urls
from tests.factory import cloudevent
from tests.tansu import records, wait_until
from tests.topic import Watch

TOPIC = "knative-broker-eventworks-default"
BASE = Path(__file__).resolve().parents[1] / "knative" / "base"
TODO = "/eventworks/todo-crud"


def todo_task(**changes: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "task_id": str(uuid.uuid4()), "list_id": str(uuid.uuid4()), "owner": "octocat",
        "title": "Water the plants", "status": "open", "assignee": None,
        "assign_fee": "14.25", "reward": "33.5", "denomination": "USDC", "decimals": 6,
        "version": 1, "actor": "octocat", "created_at": "2026-11-21T09:00:00Z",
        "updated_at": "2026-11-21T09:00:00Z"}
    return task | changes


def balance(stack_env: dict[str, str], user: str) -> dict[str, Any]:
    event = cloudevent("dev.eventworks.accounting.balance.get", {}, source="/tests/client",
                       authtype="user", authid=user)
    response = httpx.post(stack_env["FUNCTION_ACCRUE_PAYMENT_URL"], content=event.body,
                          headers=dict(event.headers))
    assert response.status_code == 200, response.text
    reply = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))
    assert reply.get_type() == "dev.eventworks.accounting.balance"
    data = reply.get_data()
    assert isinstance(data, dict)
    return data


@pytest.mark.stack
def close_a_day(stack_env: dict[str, str]) -> date:
    """The daily close's PingSource tick for a far day no other run closes; that day."""
    day = date(3000, 1, 1) + timedelta(days=random.randrange(2_000_000))
    tick = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    ping = cloudevent("dev.knative.sources.ping", {"close": "daily"},
                      source="/apis/v1/namespaces/eventworks/pingsources/"
                             "accrue-payment-daily-close",
                      time=(tick + timedelta(minutes=5)).isoformat())
    response = httpx.post(stack_env["FUNCTION_ACCRUE_PAYMENT_URL"], content=ping.body,
                          headers=dict(ping.headers), timeout=30)
    assert response.status_code == 202, response.text
    return day


def test_given_task_facts_on_the_broker_when_the_day_closes_then_the_assignee_is_paid_the_net(
        stack_env):
    hubot = f"hubot-{uuid.uuid4().hex[:10]}"
    task = todo_task(assignee=hubot, version=2)
    assigned = cloudevent("dev.eventworks.todo.task.assigned", task, source=TODO,
                          subject=task["task_id"])
    completed = cloudevent("dev.eventworks.todo.task.completed",
                           task | {"status": "done", "version": 3}, source=TODO,
                           subject=task["task_id"])
    for event in (completed, assigned, assigned):  # out of order, and a duplicate
        response = httpx.post(stack_env["BROKER_URL"], content=event.body,
                              headers=dict(event.headers))
        assert response.status_code == 202, response.text

    wait_until(lambda: balance(stack_env, hubot)["balance"] == "19.25",
               "the assignee's balance to be reward minus fee", timeout=30)
    assert sorted(e["kind"] for e in balance(stack_env, hubot)["entries"]) == ["fee", "reward"]

    watch = Watch(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC)  # from now on
    try:
        day = close_a_day(stack_env)

        due: list[Any] = []

        def paid() -> bool:
            due.extend(s.data for s in watch.poll()
                       if s.type == "dev.eventworks.accounting.payout.due"
                       and isinstance(s.data, dict) and s.data["user"] == hubot)
            return bool(due)

        wait_until(paid, "the payout.due event on the Broker", timeout=30)
    finally:
        watch.close()
    (payout,) = due
    assert payout["day"] == day.isoformat()
    assert (payout["amount"], payout["amount_base_units"]) == ("19.25", "19250000")
    assert balance(stack_env, hubot)["balance"] == "0"


def test_given_the_base_then_accrue_payment_gets_its_facts_commands_close_and_sink():
    wiring = load(BASE, lambda kind, name, namespace: f"http://127.0.0.1:9/{name}")
    triggers = {t.name: t for t in wiring.triggers
                if t.subscriber == Destination(uri="http://127.0.0.1:9/accrue-payment",
                                               describe="Service accrue-payment")}
    assert set(triggers) == {"accrue-payment-task-facts", "accrue-payment-balance-get"}

    def fact(event_type: str) -> dict[str, object]:
        return {"specversion": "1.0", "id": "1", "source": TODO, "type": event_type}

    facts = triggers["accrue-payment-task-facts"]
    task = "dev.eventworks.todo.task."
    assert [facts.filter.match(fact(task + what)).matched for what in
            ("assigned", "completed", "created", "reopened", "deleted")] == [
        True, True, False, False, False]
    assert not facts.ordered
    assert triggers["accrue-payment-balance-get"].filter.match(
        fact("dev.eventworks.accounting.balance.get")).matched

    [close] = [p for p in wiring.ping_sources if p.name == "accrue-payment-daily-close"]
    assert (close.schedule, close.timezone, close.data) == ("5 0 * * *", "UTC",
                                                            b'{"close": "daily"}')
    assert close.sink.uri == "http://127.0.0.1:9/accrue-payment"
    assert sink_urls(wiring.sink_bindings, ["accrue-payment"], "http://broker.test") == {
        "accrue-payment": "http://broker.test"}


@pytest.mark.stack
def test_given_a_task_made_with_tokens_when_done_and_closed_then_balance_and_payout_follow(
        stack_env):
    """The issue's end to end: todo commands with bearer tokens through the Broker →
    todo-crud's facts → accrue-payment; balance.get with the assignee's token through the
    Broker answers on the topic; the close's payout.due follows."""
    secret, suffix = stack_env["JWT_SECRET"], uuid.uuid4().hex[:8]
    owner, worker = f"owner-{suffix}", f"worker-{suffix}"
    as_owner, as_worker = auth.sign(secret, owner), auth.sign(secret, worker)

    def send(token: str, event_type: str, data: dict[str, Any]) -> str:
        event = cloudevent(event_type, data, source="/tests/accounting-flow")
        response = httpx.post(stack_env["BROKER_URL"], content=event.body,
                              headers={**event.headers, "authorization": f"Bearer {token}"})
        assert response.status_code == 202, response.text
        return event.id

    def on_topic(event_type: str, where: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [json.loads(r.value) for r in records(
                stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC,
                lambda r: r.headers.get("ce_type") == event_type.encode())
                if where(json.loads(r.value))]
            return bool(found)

        wait_until(seen, f"{event_type} on the broker topic", timeout=60)
        return found

    def result(command_id: str) -> dict[str, Any]:
        return on_topic("dev.eventworks.todo.result",
                        lambda d: d.get("command_id") == command_id)[0]

    listed = result(send(as_owner, "dev.eventworks.todo.list.create", {"title": "Chores"}))
    task = result(send(as_owner, "dev.eventworks.todo.task.create",
                       {"list_id": listed["list"]["list_id"], "title": "Mow"}))["task"]
    result(send(as_owner, "dev.eventworks.todo.task.assign",
                {"task_id": task["task_id"], "version": 1, "assignee": worker}))
    result(send(as_worker, "dev.eventworks.todo.task.complete",
                {"task_id": task["task_id"], "version": 2}))
    net = format((Decimal(task["reward"]) - Decimal(task["assign_fee"])).normalize(), "f")

    def balance_via_broker() -> str:
        send(as_worker, "dev.eventworks.accounting.balance.get", {})
        return str(on_topic("dev.eventworks.accounting.balance",
                            lambda d: d["user"] == worker)[-1]["balance"])

    wait_until(lambda: balance_via_broker() == net, "reward minus fee on the balance",
               timeout=60)

    day = close_a_day(stack_env)
    (payout,) = on_topic("dev.eventworks.accounting.payout.due",
                         lambda d: d["user"] == worker)
    assert (payout["amount"], payout["day"]) == (net, day.isoformat())
