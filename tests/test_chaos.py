"""The chaos run (stack/chaos.py) on the session's stack, small: the signing pipeline, the
bounty flow and the todo/accounting flow at once, while functions and the dispatcher are
SIGKILLed at random and restarted by the supervisor; then nothing may be lost, signed
twice, given a reused or skipped nonce, left stuck or unbalanced, or commented twice.
`./taskw chaos -- --count 1000` is the big run."""

from __future__ import annotations

import random
from decimal import Decimal

import httpx
import pytest

from eventing.events import bounty_payout_id
from stack import chaos, services
from stack.layout import Layout
from tests.tansu import wait_until

FUNCTIONS = [v for v in chaos.VICTIMS if v != "dispatcher"]


@pytest.mark.stack
def test_given_parts_killed_at_random_when_three_flows_run_then_every_invariant_holds(
        stack_env):
    outcome = chaos.run(Layout.from_env(), stack_env, workloads=list(chaos.FLOWS),
                        count=60, kill_every=2.0, victims=list(chaos.VICTIMS), seed=7,
                        settle_seconds=240, max_kills=6)
    # Whatever was killed is back before the next test uses the stack.
    for name in FUNCTIONS:
        url = stack_env[services.env_key(name)]
        wait_until(lambda url=url: _ready(url), f"{name} ready again", timeout=60)

    assert outcome.problems == ()
    assert set(outcome.invariants) == {"no accepted event lost", "signing flow",
                                       "bounty flow", "todo flow"}
    assert outcome.kills >= 1
    assert outcome.verdicts["bounty: bounties"] == 6
    assert outcome.verdicts["todo: tasks"] == 15
    assert outcome.events >= 60 + 6 + 15


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/readiness", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- pure parts ------------------------------------------------------------------------------
def seen(event_type: str, data: object, *, id: str = "1", letter: bool = False,
         **attributes: str) -> chaos.Seen:
    return chaos.Seen(type=event_type, id=id, source="/s", data=data, letter=letter,
                      attributes={"type": event_type, "id": id, **attributes})


def test_given_a_dead_letter_then_its_reason_is_the_brokers_error_code_and_destination():
    letter = seen("x", {}, letter=True, knativeerrorcode="400",
                  knativeerrordest="http://127.0.0.1:1/")
    assert letter.reason == "400 from http://127.0.0.1:1/"
    assert seen("x", {}, letter=True).reason == ""


def test_given_todo_results_delivered_twice_when_advanced_then_the_model_counts_them_once(
        monkeypatch):
    todo = chaos.Todo({"JWT_SECRET": "s" * 32}, 8, random.Random(1))
    sent: list[tuple[str, str]] = []

    def send(chore: chaos.Chore, who: str, command: str, data: object) -> None:
        sent.append((who, command))
        todo.commands[f"c{len(sent)}"] = chore

    monkeypatch.setattr(todo, "_send", send)
    (owner,) = {c.owner for c in todo.chores}
    todo.lists["l"] = todo.chores
    listed = seen("dev.eventworks.todo.result",
                  {"command": "list.create", "command_id": "l", "list": {"list_id": "L"}})
    todo.advance([listed, listed])
    assert sent == [(owner, "task.create")] * 2
    chore = todo.chores[0]
    task = {"task_id": "T", "version": 2, "assign_fee": "1.5", "reward": "4"}

    def result(command: str, command_id: str) -> chaos.Seen:
        return seen("dev.eventworks.todo.result",
                    {"command": command, "command_id": command_id, "task": task})

    todo.advance([result("task.create", "c1")] * 2)
    todo.advance([result("task.assign", "c3")] * 2)
    todo.advance([result("task.complete", "c4")] * 2)
    assert chore.state == "done"
    assert todo.model[chore.worker] == Decimal("2.5")
    assert not todo.chores[1].ended


def test_given_a_payouts_verdict_read_before_its_request_when_advanced_then_it_counts(
        monkeypatch):
    # Two partitions: tx.verified can be read before the payout.requested it follows.
    bounty = chaos.Bounty({}, 20, random.Random(1))
    monkeypatch.setattr(bounty, "comments", dict)  # the bot has not said "paid" yet
    offer = bounty.offers[0]
    offer.bounty_id, offer.state = "b-1", "claimed"
    bounty.by_bounty["b-1"] = offer
    payout = bounty_payout_id("b-1")
    verified = seen("dev.eventworks.tx.verified", {"request_id": payout, "tx_hash": "0xab"})
    requested = seen("dev.eventworks.payout.requested", {"ref": "b-1", "payout_id": payout})

    bounty.advance([verified])
    assert offer.state == "claimed"
    bounty.advance([requested])

    assert (offer.state, offer.tx_hash) == ("verified", "0xab")
    assert not bounty.early


def test_given_an_unknown_flow_then_the_run_is_refused_before_it_starts(capsys):
    with pytest.raises(SystemExit) as refused:
        chaos.main(["--flows", "signing,payroll"])
    assert refused.value.code == 2
    assert "unknown payroll" in capsys.readouterr().err
