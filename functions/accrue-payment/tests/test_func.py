"""Tier 2: accrue-payment driven in-process through func-python's real decode/encode path,
with its ledger in the local stack's PostgreSQL (schema `accounting`, role `accounting`).

Every test books for users of its own (the database outlives test runs); the daily close
closes a random far-off day, so it never takes the local stack's real days.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from psycopg import AsyncConnection, AsyncCursor

from eventing import auth
from function import new
from function.decide import payout_id
from tests.factory import Event, cloudevent, probed_ready, served

pytestmark = pytest.mark.stack


async def post_all(env: dict[str, str], *events: Event) -> list[Any]:
    async with served(new(), env) as client:
        return [await client.post("/", content=e.body, headers=dict(e.headers)) for e in events]


def statuses(responses: list[Any]) -> list[int]:
    return [r.status_code for r in responses]


def balance_get(asked: dict[str, Any] | None = None, *, authid: str | None = None,
                authrole: str | None = None) -> Event:
    auth = {k: v for k, v in {"authtype": "user" if authid else None, "authid": authid,
                              "authrole": authrole}.items() if v is not None}
    return cloudevent("dev.eventworks.accounting.balance.get", asked or {},
                      source="/tests/client", **auth)


def reply_of(response: Any) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    event = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))
    assert event.get_source() == "/eventworks/accrue-payment"
    data = event.get_data()
    assert isinstance(data, dict)
    return event.get_type(), data


def far_day() -> date:
    """A day no real close and, almost surely, no other test run will take."""
    return date(3000, 1, 1) + timedelta(days=random.randrange(2_000_000))


def ping(day: date, *, event_id: str | None = None) -> Event:
    """The PingSource's tick that closes `day` (00:05 UTC the day after)."""
    at = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(minutes=5)
    return cloudevent("dev.knative.sources.ping", {"close": "daily"}, id=event_id,
                      source="/apis/v1/namespaces/eventworks/pingsources/accrue-payment-daily-close",
                      time=at.isoformat().replace("+00:00", "Z"))


# -- task facts -------------------------------------------------------------------------------
async def test_given_an_assignment_when_delivered_twice_then_the_fee_is_debited_once(
        env, books, facts):
    alice = facts.user()
    assigned = facts.fact(facts.ASSIGNED, facts.task(assignee=alice, assign_fee="12.5"))
    assert statuses(await post_all(env, assigned, assigned)) == [202, 202]
    assert books.balance(alice) == Decimal("-12.5")
    assert books.journals(alice) == [("fee", assigned.attributes["subject"], Decimal("-12.5"))]


async def test_given_the_same_fact_republished_under_a_new_id_when_delivered_then_counted_once(
        env, books, facts):
    alice = facts.user()
    task = facts.task(assignee=alice, reward="30")
    done = task | {"status": "done", "version": 3}
    assert statuses(await post_all(
        env, facts.fact(facts.ASSIGNED, task), facts.fact(facts.ASSIGNED, task),
        facts.fact(facts.COMPLETED, done), facts.fact(facts.COMPLETED, done))) == [202] * 4
    assert books.balance(alice) == Decimal("17.5")


async def test_given_a_completion_before_its_assignment_when_delivered_then_both_count(
        env, books, facts):
    alice = facts.user()
    task = facts.task(assignee=alice, assign_fee="10.01", reward="39.99")
    done = task | {"status": "done", "version": 3}
    assert statuses(await post_all(env, facts.fact(facts.COMPLETED, done),
                                   facts.fact(facts.ASSIGNED, task))) == [202, 202]
    assert books.balance(alice) == Decimal("29.98")


async def test_given_a_reopen_and_a_second_completion_when_delivered_then_the_reward_counts_once(
        env, books, facts):
    alice = facts.user()
    task = facts.task(assignee=alice, assign_fee="10", reward="20")
    await post_all(env, facts.fact(facts.ASSIGNED, task),
                   facts.fact(facts.COMPLETED, task | {"status": "done", "version": 3}),
                   # reopened at version 4 (no entry), completed again at version 5
                   facts.fact(facts.COMPLETED, task | {"status": "done", "version": 5}))
    assert books.balance(alice) == Decimal("10")


async def test_given_a_reassignment_when_the_new_assignee_completes_then_each_paid_and_one_earns(
        env, books, facts):
    alice, bob = facts.user(), facts.user()
    task = facts.task(assignee=alice, assign_fee="15", reward="25")
    await post_all(env, facts.fact(facts.ASSIGNED, task),
                   facts.fact(facts.ASSIGNED, task | {"assignee": bob, "version": 3}),
                   facts.fact(facts.COMPLETED, task | {"assignee": bob, "status": "done",
                                                       "version": 4}))
    assert books.balance(alice) == Decimal("-15")
    assert books.balance(bob) == Decimal("10")


async def test_given_many_assignments_for_one_user_at_once_when_delivered_then_none_is_lost(
        env, books, facts):
    alice = facts.user()
    events = [facts.fact(facts.ASSIGNED, facts.task(assignee=alice, assign_fee=f"1{i}.5"))
              for i in range(10)]
    async with served(new(), {**env, "DATABASE_POOL_SIZE": "8"}) as client:
        responses = await asyncio.gather(*[
            client.post("/", content=e.body, headers=dict(e.headers)) for e in events * 2])
    assert {r.status_code for r in responses} <= {202, 409}  # a 409 is retried by the broker
    retried = [e for e, r in zip(events * 2, responses, strict=True) if r.status_code == 409]
    assert statuses(await post_all(env, *retried)) == [202] * len(retried)
    assert books.balance(alice) == -sum(Decimal(f"1{i}.5") for i in range(10))
    assert books.summed(alice) == books.balance(alice)


@pytest.mark.parametrize(("changes", "field"), [
    ({"assignee": None}, "data.assignee"),
    ({"assign_fee": "10.0000001"}, "data.assign_fee"),
    ({"assign_fee": "-3"}, "data.assign_fee"),
    ({"assign_fee": 12.5}, "data.assign_fee"),
])
async def test_given_an_assignment_that_cannot_be_booked_when_delivered_then_400_naming_the_field(
        env, books, facts, changes, field):
    alice = facts.user()
    (response,) = await post_all(env, facts.fact(facts.ASSIGNED,
                                                 facts.task(assignee=alice) | changes))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field
    assert books.balance(alice) is None


async def test_given_a_denomination_known_with_other_decimals_when_delivered_then_400(
        env, books, facts):
    alice = facts.user()
    await post_all(env, facts.fact(facts.ASSIGNED, facts.task(assignee=alice)))
    (response,) = await post_all(env, facts.fact(facts.ASSIGNED,
                                                 facts.task(assignee=alice, decimals=8)))
    assert response.status_code == 400
    assert response.json()["field"] == "data.decimals"
    assert books.balance(alice) == Decimal("-12.5")


async def test_given_a_fact_when_delivered_again_with_other_data_then_409_and_booked_once(
        env, books, facts):
    alice = facts.user()
    task = facts.task(assignee=alice, assign_fee="7")
    first = facts.fact(facts.ASSIGNED, task)
    other = facts.fact(facts.ASSIGNED, task | {"assign_fee": "9"}, event_id=first.id)
    responses = await post_all(env, first, other, first)
    assert statuses(responses) == [202, 409, 202]
    assert responses[1].json()["field"] == "id"
    assert books.balance(alice) == Decimal("-7")
    assert books.inbox(first.attributes["source"], first.id) == (202, None)


async def test_given_a_fact_that_moves_no_money_when_delivered_again_with_other_data_then_409(
        env, books, facts):
    done = facts.task(assignee=None, status="done", version=3)  # nobody to pay: no entry
    first = facts.fact(facts.COMPLETED, done)
    other = facts.fact(facts.COMPLETED, done | {"title": "renamed"}, event_id=first.id)
    assert statuses(await post_all(env, first, first, other)) == [202, 202, 409]
    assert books.inbox(first.attributes["source"], first.id) == (202, None)


async def test_given_one_fact_delivered_twice_at_once_then_both_202_and_the_fee_debited_once(
        env, books, facts):
    alice = facts.user()
    assigned = facts.fact(facts.ASSIGNED, facts.task(assignee=alice, assign_fee="4.25"))
    async with served(new(), {**env, "DATABASE_POOL_SIZE": "4"}) as client:
        responses = await asyncio.gather(*[
            client.post("/", content=assigned.body, headers=dict(assigned.headers))
            for _ in range(4)])
    assert statuses(responses) == [202] * 4  # the later ones wait for the first's inbox row
    assert books.balance(alice) == Decimal("-4.25")
    assert books.summed(alice) == books.balance(alice)


async def test_given_a_fact_the_ledger_refuses_when_delivered_then_nothing_is_written(
        env, books, facts):
    alice, denomination = facts.user(), facts.denomination()
    await post_all(env, facts.fact(facts.ASSIGNED, facts.task(
        assignee=facts.user(), denomination=denomination)))  # the company's account: 6 decimals
    task = facts.task(assignee=alice, denomination=denomination, decimals=8)
    refused = facts.fact(facts.ASSIGNED, task)
    (response,) = await post_all(env, refused)
    assert response.status_code == 400
    # Neither the inbox row nor alice's account: the same id with other data is a new try.
    assert books.inbox(refused.attributes["source"], refused.id) is None
    assert books.balance(alice, denomination) is None
    fixed = facts.fact(facts.ASSIGNED, task | {"decimals": 6}, event_id=refused.id)
    assert statuses(await post_all(env, fixed)) == [202]
    assert books.balance(alice, denomination) == Decimal("-12.5")


async def test_given_a_fact_when_booked_then_it_is_one_statement_in_autocommit(
        env, books, facts):
    """Inbox claim, booking and answer in one round trip: no BEGIN, no COMMIT, no second
    statement (issue 8)."""
    sent: list[str] = []
    execute, exec_command = AsyncCursor.execute, AsyncConnection._exec_command

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return await execute(self, query, *args, **kwargs)

    def command(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(command.decode() if isinstance(command, bytes) else str(command))
        return exec_command(self, command, *args, **kwargs)

    alice = facts.user()
    assigned = facts.fact(facts.ASSIGNED, facts.task(assignee=alice, assign_fee="3"))
    async with served(new(), env) as client:
        await probed_ready(client)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(AsyncCursor, "execute", counted)
            patch.setattr(AsyncConnection, "_exec_command", command)
            response = await client.post("/", content=assigned.body,
                                         headers=dict(assigned.headers))
    assert response.status_code == 202
    assert len(sent) == 1, sent
    assert "book_fact" in sent[0]
    assert books.balance(alice) == Decimal("-3")


async def test_given_no_database_when_a_fact_arrives_then_503_to_try_later(facts, unused_port):
    down = {"DATABASE_URL": f"postgresql://accounting@127.0.0.1:{unused_port}/eventworks"}
    (response,) = await post_all(down, facts.fact(facts.ASSIGNED, facts.task(
        assignee=facts.user())))
    assert response.status_code == 503
    assert response.headers["retry-after"]


# -- balance.get ------------------------------------------------------------------------------
@pytest.mark.parametrize(("actor", "role", "asks_for", "status"), [
    ("self", None, None, 200),
    ("self", None, "self", 200),
    ("other", None, "self", 403),
    ("other", "member", "self", 403),
    ("other", "accountant", "self", 200),
    ("other", "admin", "self", 200),
    (None, "admin", "self", 401),
    (None, None, None, 401),
])
async def test_given_who_asks_when_balance_get_then_the_authorization_matrix_holds(
        env, facts, actor, role, asks_for, status):
    alice, other = facts.user(), facts.user()
    named = {"self": alice, "other": other, None: None}
    task = facts.task(assignee=alice, assign_fee="12.5", reward="30.25")
    await post_all(env, facts.fact(facts.ASSIGNED, task),
                   facts.fact(facts.COMPLETED, task | {"status": "done", "version": 3}))
    asked = {"user": named[asks_for]} if asks_for else {}
    (response,) = await post_all(env, balance_get(asked, authid=named[actor], authrole=role))
    assert response.status_code == status, response.text
    if status != 200:
        assert response.headers["content-type"] == "application/problem+json"
        assert "30.25" not in response.text
        return
    kind, data = reply_of(response)
    assert kind == "dev.eventworks.accounting.balance"
    assert response.headers["ce-subject"] == alice
    assert (data["user"], data["balance"], data["denomination"]) == (alice, "17.75", "USDC")
    assert sorted((e["kind"], e["amount"], e["ref"]) for e in data["entries"]) == [
        ("fee", "-12.5", task["task_id"]), ("reward", "30.25", task["task_id"])]


async def test_given_a_user_with_no_entries_when_balance_get_then_zero_and_no_entries(
        env, facts):
    bob = facts.user()
    (response,) = await post_all(env, balance_get(authid=bob))
    assert reply_of(response)[1] == {"user": bob, "balance": "0", "denomination": "USDC",
                                     "entries": []}


async def test_given_accounts_in_two_denominations_when_balance_get_names_one_then_that_one(
        env, facts):
    alice = facts.user()
    await post_all(env, facts.fact(facts.ASSIGNED, facts.task(assignee=alice)),
                   facts.fact(facts.ASSIGNED, facts.task(assignee=alice, assign_fee="0.5",
                                                         denomination="dai", decimals=18)))
    (dai, usdc, bad) = await post_all(env, balance_get({"denomination": "DAI"}, authid=alice),
                                      balance_get({}, authid=alice),
                                      balance_get({"denomination": "D A I"}, authid=alice))
    assert (reply_of(dai)[1]["balance"], reply_of(dai)[1]["denomination"]) == ("-0.5", "DAI")
    assert (reply_of(usdc)[1]["balance"], reply_of(usdc)[1]["denomination"]) == ("-12.5", "USDC")
    assert bad.status_code == 400
    assert bad.json()["field"] == "data.denomination"


# -- the daily close --------------------------------------------------------------------------
async def test_given_balances_when_the_day_closes_twice_then_positive_ones_pay_out_once(
        env, books, facts):
    earner, debtor = facts.user(), facts.user()
    earned = facts.task(assignee=earner, assign_fee="10", reward="35.5")
    await post_all(env, facts.fact(facts.ASSIGNED, earned),
                   facts.fact(facts.COMPLETED, earned | {"status": "done", "version": 3}),
                   facts.fact(facts.ASSIGNED, facts.task(assignee=debtor, assign_fee="19.99")))
    day = far_day()
    tick = ping(day)
    responses = await post_all(env, tick, tick, ping(day))  # redelivered, then a second tick
    assert statuses(responses) == [202, 202, 202]

    assert books.balance(earner) == 0
    assert books.journals(earner)[-1] == ("payout", payout_id(earner, "USDC", day),
                                          Decimal("-25.5"))
    assert [kind for kind, _, _ in books.journals(earner)].count("payout") == 1
    assert books.balance(debtor) == Decimal("-19.99")  # carried over, no payout
    assert [kind for kind, _, _ in books.journals(debtor)] == ["fee"]
    due = [d for d in books.payouts_due(day.isoformat()) if d["user"] in (earner, debtor)]
    assert due == [{"payout_id": payout_id(earner, "USDC", day), "user": earner,
                    "denomination": "USDC", "amount": "25.5", "amount_base_units": "25500000",
                    "decimals": 6, "day": day.isoformat()}]


async def test_given_a_negative_balance_when_later_earnings_close_then_only_the_net_pays_out(
        env, books, facts):
    alice = facts.user()
    first = facts.task(assignee=alice, assign_fee="20", reward="20")
    await post_all(env, facts.fact(facts.ASSIGNED, first),
                   facts.fact(facts.ASSIGNED, facts.task(assignee=alice, assign_fee="15")))
    day = far_day()
    await post_all(env, ping(day))
    assert books.balance(alice) == Decimal("-35")
    await post_all(env, facts.fact(facts.COMPLETED, first | {"status": "done", "version": 3}),
                   facts.fact(facts.COMPLETED,
                              facts.task(assignee=alice, reward="40", status="done")))
    await post_all(env, ping(day + timedelta(days=1)))
    assert books.balance(alice) == 0
    assert books.journals(alice)[-1][2] == Decimal("-25")


async def test_given_a_ping_without_the_close_when_delivered_then_400_naming_the_field(env):
    event = cloudevent("dev.knative.sources.ping", {"close": "weekly"})
    (response,) = await post_all(env, event)
    assert response.status_code == 400
    assert response.json()["field"] == "data.close"


# -- what the database enforces ---------------------------------------------------------------
def test_given_the_functions_role_when_it_changes_entries_or_balances_then_refused(
        stack_env, books, facts):
    with psycopg.connect(stack_env["DATABASE_URL_ACCOUNTING"], autocommit=True) as conn:
        for statement in ("UPDATE accounting.postings SET amount = amount * 2",
                          "DELETE FROM accounting.journals",
                          "TRUNCATE accounting.postings CASCADE",
                          "UPDATE accounting.balances SET balance = 1000000",
                          "INSERT INTO accounting.balances SELECT account_id, 15, 1000000"
                          " FROM accounting.accounts LIMIT 1"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_given_an_owner_when_it_changes_entries_then_the_trail_is_still_append_only(stack_env):
    with psycopg.connect(stack_env["DATABASE_URL"], autocommit=True) as conn:
        for statement in ("UPDATE accounting.postings SET amount = amount * 2",
                          "DELETE FROM accounting.postings WHERE line = 1 AND journal_id ="
                          " (SELECT journal_id FROM accounting.postings LIMIT 1)",
                          "TRUNCATE accounting.postings CASCADE"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)


def test_given_a_journal_that_does_not_balance_when_committed_then_refused(stack_env, facts):
    journal = uuid.uuid4()
    with psycopg.connect(stack_env["DATABASE_URL_ACCOUNTING"]) as conn:
        conn.execute("SET search_path TO accounting")
        account = conn.execute(
            "INSERT INTO accounts (kind, holder, denomination, decimals)"
            " VALUES ('user', %s, 'USDC', 6) RETURNING account_id", (facts.user(),)).fetchone()
        assert account is not None
        conn.execute("INSERT INTO journals (journal_id, kind, holder, ref, task_version,"
                     " event_source, event_id) VALUES (%s, 'fee', 'x', 'x', 1, 'tests', %s)",
                     (journal, str(journal)))
        conn.execute("INSERT INTO postings VALUES (%s, 1, %s, -5)", (journal, account[0]))
        with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
            conn.commit()


def test_given_every_test_so_far_then_the_ledger_sums_to_zero_and_balances_follow_postings(
        books):
    assert books.audit([])[1:] == (0, 0)
    assert books.accounts_agree_with_postings()


async def test_given_a_bearer_token_on_a_direct_call_when_balance_get_then_the_token_decides(
        env, facts):
    secret = "a-test-secret-of-enough-length-for-hs256"
    alice, carol = facts.user(), facts.user()
    await post_all(env, facts.fact(facts.ASSIGNED, facts.task(assignee=alice)))
    as_carol = auth.sign(secret, carol, "accountant")
    as_alice_claimed = balance_get({"user": alice}, authid=carol, authrole="admin")
    forged = Event({**as_alice_claimed.headers, "authorization": "Bearer x.y.z"},
                   as_alice_claimed.body, as_alice_claimed.attributes)
    signed = balance_get({"user": alice})
    signed = Event({**signed.headers, "authorization": f"Bearer {as_carol}"}, signed.body,
                   signed.attributes)
    as_user = balance_get({"user": alice})
    as_user = Event({**as_user.headers,
                     "authorization": f"Bearer {auth.sign(secret, carol)}"},
                    as_user.body, as_user.attributes)
    ok, refused, bad = await post_all({**env, "JWT_SECRET": secret}, signed, as_user, forged)
    assert reply_of(ok)[1]["balance"] == "-12.5"
    assert refused.status_code == 403
    assert bad.status_code == 401
