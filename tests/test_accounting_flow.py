"""accrue-payment in the running local stack: task facts posted to the Broker reach the
ledger through the Triggers of knative/base/accrue-payment.yaml; balance.get answers the
assignee; the daily close's payout.due reaches the Broker through the outbox relay
(K_SINK from the SinkBinding).

balance.get and the ping go straight to the function's URL, as the PingSource does for the
ping: the broker ingress drops a client's `authid` and, until it verifies bearer tokens
(the todo issue), has no way to set one, so a balance.get through the Broker is a 401.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from broker.manifests import Destination, load
from stack.services import sink_urls
from tests.factory import cloudevent
from tests.tansu import wait_until
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
        day = date(3000, 1, 1) + timedelta(days=random.randrange(2_000_000))
        tick = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
        ping = cloudevent("dev.knative.sources.ping", {"close": "daily"},
                          source="/apis/v1/namespaces/eventworks/pingsources/"
                                 "accrue-payment-daily-close",
                          time=(tick + timedelta(minutes=5)).isoformat())
        response = httpx.post(stack_env["FUNCTION_ACCRUE_PAYMENT_URL"], content=ping.body,
                              headers=dict(ping.headers), timeout=30)
        assert response.status_code == 202, response.text

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
