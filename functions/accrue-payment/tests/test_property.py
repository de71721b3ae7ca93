"""A property of the whole handler on the stack's PostgreSQL: random task histories,
delivered with duplicates (the same event again, and the same fact under a new id), out
of order and several at once, leave every balance equal to a simple model's, and the
ledger summing to zero with every journal balanced.

The model is the issue's rule written the plainest way: each distinct assignment (task,
version) costs its assignee the fee; each distinct (task, assignee) completion earns that
assignee the reward once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from function import new
from function.decide import plain
from tests.factory import Event, served

pytestmark = pytest.mark.stack

USERS = 3
RETRIES = 20


@dataclass(frozen=True)
class Fact:
    kind: str            # "assigned" | "completed"
    task: dict[str, Any]


@dataclass(frozen=True)
class Story:
    """Task histories as facts, and how they are delivered: (fact index, new id?) in
    delivery order, taken `at_once` at a time."""

    facts: list[Fact]
    deliveries: list[tuple[int, bool]]
    at_once: int


@st.composite
def stories(draw: st.DrawFn) -> Story:
    facts: list[Fact] = []
    for t in range(draw(st.integers(1, 3))):
        fee = Decimal(draw(st.integers(1000, 2000))).scaleb(-2)
        reward = Decimal(draw(st.integers(2000, 4000))).scaleb(-2)
        task: dict[str, Any] = {"task_id": f"t{t}", "status": "open", "assignee": None,
                                "assign_fee": plain(fee), "reward": plain(reward),
                                "version": 1}
        ops = draw(st.lists(st.one_of(st.integers(0, USERS - 1),
                                      st.sampled_from(["complete", "reopen"])), max_size=7))
        for op in ops:  # a todo-crud's valid transitions; an invalid step is skipped
            if isinstance(op, int) and task["status"] == "open":
                task = task | {"assignee": op, "version": task["version"] + 1}
                facts.append(Fact("assigned", task))
            elif op == "complete" and task["status"] == "open":
                task = task | {"status": "done", "version": task["version"] + 1}
                facts.append(Fact("completed", task))
            elif op == "reopen" and task["status"] == "done":
                task = task | {"status": "open", "version": task["version"] + 1}
    once = list(range(len(facts)))
    again = draw(st.lists(st.tuples(st.sampled_from(once), st.booleans()), max_size=6)
                 if facts else st.just([]))
    deliveries = draw(st.permutations([(i, False) for i in once] + again))
    return Story(facts, deliveries, draw(st.integers(1, 4)))


def model(facts: list[Fact]) -> dict[int, Decimal]:
    balances = {u: Decimal(0) for u in range(USERS)}
    fees, rewards = set(), set()
    for fact in facts:
        task = fact.task
        if fact.kind == "assigned" and (task["task_id"], task["version"]) not in fees:
            fees.add((task["task_id"], task["version"]))
            balances[task["assignee"]] -= Decimal(task["assign_fee"])
        if (fact.kind == "completed" and task["assignee"] is not None
                and (task["task_id"], task["assignee"]) not in rewards):
            rewards.add((task["task_id"], task["assignee"]))
            balances[task["assignee"]] += Decimal(task["reward"])
    return balances


@dataclass
class Running:
    loop: asyncio.AbstractEventLoop
    client: Any


@pytest.fixture(scope="module")
def running(stack_env: dict[str, str]) -> Iterator[Running]:
    """One started function for every example (starting one per example costs seconds)."""
    loop = asyncio.new_event_loop()
    server = served(new(), {"DATABASE_URL": stack_env["DATABASE_URL_ACCOUNTING"],
                            "DATABASE_POOL_SIZE": "4"})
    client = loop.run_until_complete(server.__aenter__())
    try:
        yield Running(loop, client)
    finally:
        loop.run_until_complete(server.__aexit__(None, None, None))
        loop.close()


async def deliver(client: Any, events: list[Event], at_once: int) -> None:
    """As the broker would: a 409 (deadlock, concurrent duplicate) or 503 is tried again."""
    for start in range(0, len(events), at_once):
        pending = events[start:start + at_once]
        for _ in range(RETRIES):
            responses = await asyncio.gather(*[
                client.post("/", content=e.body, headers=dict(e.headers)) for e in pending])
            assert {r.status_code for r in responses} <= {202, 409, 503}, \
                [r.text for r in responses]
            pending = [e for e, r in zip(pending, responses, strict=True) if r.status_code != 202]
            if not pending:
                break
        assert not pending


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(story=stories())
def test_given_random_interleavings_with_duplicates_then_balances_match_the_model_and_sum_to_zero(
        running, books, facts, story):
    run = uuid.uuid4().hex[:10]
    users = [f"prop-{run}-{u}" for u in range(USERS)]

    def as_todo(task: dict[str, Any]) -> dict[str, Any]:
        assignee = task["assignee"]
        todo: dict[str, Any] = facts.task(**task)
        return todo | {"task_id": f"{run}-{task['task_id']}",
                                     "assignee": None if assignee is None else users[assignee]}

    kinds = {"assigned": facts.ASSIGNED, "completed": facts.COMPLETED}
    first = [facts.fact(kinds[f.kind], as_todo(f.task)) for f in story.facts]
    events = [facts.fact(kinds[story.facts[i].kind], as_todo(story.facts[i].task))
              if new_id else first[i] for i, new_id in story.deliveries]
    running.loop.run_until_complete(deliver(running.client, events, story.at_once))

    expected = model(story.facts)
    balances, unbalanced, ledger_sum = books.audit(users)
    assert balances == [(expected[u], expected[u]) for u in range(USERS)]
    assert unbalanced == 0
    assert ledger_sum == 0
