"""Balances kept in shards (migration 0011): a booking adds to any shard of an account that
no other transaction holds, or opens one, so concurrent bookings do not queue on the company's
account; an account's balance is the sum of its shards. Against the local stack's PostgreSQL,
in-process and through the stack's own accrue-payment."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from function import new
from function.decide import COMPANY
from function.func import BOOK
from tests.factory import Event, served

pytestmark = pytest.mark.stack

RETRIES = 20


async def deliver(post: Any, events: list[Event], at_once: int) -> None:
    """`at_once` deliveries in flight, as the broker's unordered delivery; a 409 or 503 is
    delivered again, as the broker retries."""
    queue = list(events)

    async def worker() -> None:
        while queue:
            event = queue.pop()
            for _ in range(RETRIES):
                response = await post(event)
                if response.status_code == 202:
                    break
                assert response.status_code in (409, 503), response.text
            else:
                raise AssertionError(f"{event.id} was never booked")

    await asyncio.gather(*[worker() for _ in range(at_once)])


async def test_given_a_booking_that_holds_the_accounts_when_a_fact_for_them_arrives_then_it_books_into_other_shards(  # noqa: E501
        env, stack_env, books, facts):
    alice, denomination = facts.user(), facts.denomination()

    def fee(conn: psycopg.Connection[Any], amount: str) -> None:
        conn.execute(BOOK, ([uuid.uuid4()], ["fee"], [alice], [str(uuid.uuid4())], [1], [None],
                            [denomination], [6], [Decimal(amount)], "/tests", str(uuid.uuid4()),
                            COMPANY))

    with psycopg.connect(stack_env["DATABASE_URL_ACCOUNTING"]) as opened:
        fee(opened, "-1")  # the accounts and their first shards exist (opening one waits)
    with psycopg.connect(stack_env["DATABASE_URL_ACCOUNTING"]) as held:
        # An open transaction that booked a fee for alice: it holds her shard and the
        # company's until it commits.
        fee(held, "-2")
        fact = facts.fact(facts.ASSIGNED, facts.task(assignee=alice, assign_fee="3",
                                                     denomination=denomination))
        async with served(new(), env) as client:
            # Without shards this would wait for `held` forever (the guard only ends the
            # test instead of hanging it).
            responses = await asyncio.wait_for(asyncio.gather(*[
                client.post("/", content=fact.body, headers=dict(fact.headers))
                for _ in range(2)]), timeout=60)
        assert [r.status_code for r in responses] == [202, 202]
        held.commit()
    assert books.shards("user", alice, denomination) == 2
    assert books.shards("company", COMPANY, denomination) == 2
    assert books.balance(alice, denomination) == Decimal("-6")
    assert books.company_balance(denomination) == Decimal("6")
    assert books.accounts_agree_with_postings()


def test_given_concurrent_facts_delivered_twice_through_the_stack_then_the_shards_sum_to_the_books(
        stack_env, books, facts):
    denomination = facts.denomination()
    users = [facts.user() for _ in range(3)]
    events: list[Event] = []
    expected = dict.fromkeys(users, Decimal(0))
    for n in range(24):
        user = users[n % len(users)]
        task = facts.task(assignee=user, assign_fee="1.5", reward="4.25",
                          denomination=denomination)
        assigned = facts.fact(facts.ASSIGNED, task)
        completed = facts.fact(facts.COMPLETED, task | {"status": "done", "version": 3})
        republished = facts.fact(facts.ASSIGNED, task)  # the same fact under a new id
        events += [assigned, assigned, completed, completed, republished]
        expected[user] += Decimal("2.75")
    random.shuffle(events)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=stack_env["FUNCTION_ACCRUE_PAYMENT_URL"],
                                     timeout=60) as client:
            await deliver(lambda e: client.post("/", content=e.body, headers=dict(e.headers)),
                          events, at_once=8)

    asyncio.run(run())
    assert {u: books.balance(u, denomination) for u in users} == expected
    assert books.company_balance(denomination) == -sum(expected.values())
    balances, unbalanced, ledger_sum = books.audit(users, denomination)
    assert balances == [(expected[u], expected[u]) for u in users]
    assert (unbalanced, ledger_sum) == (0, 0)
    assert books.accounts_agree_with_postings()
