"""Tier 1: the ledger's rules on plain values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from function.decide import (
    Account,
    Allowed,
    Entry,
    Invalid,
    Nothing,
    Price,
    Refused,
    authorize,
    base_units,
    closed_day,
    on_assigned,
    on_completed,
    payout_id,
    payouts,
    plain,
)


def price(**changes: object) -> Price:
    fields: dict[str, object] = {"task_id": "t-1", "version": 2, "assignee": "alice",
                                 "assign_fee": "12.5", "reward": "30.25",
                                 "denomination": "USDC", "decimals": 6}
    fields.update(changes)
    return Price(**fields)  # type: ignore[arg-type]


def test_given_an_assignment_when_decided_then_the_assignee_is_debited_the_fee():
    assert on_assigned(price()) == Entry("fee", "alice", Decimal("-12.5"), "USDC", 6, "t-1",
                                         task_version=2)


def test_given_a_reassignment_when_decided_then_the_new_assignee_pays_under_the_new_version():
    entry = on_assigned(price(assignee="bob", version=3))
    assert isinstance(entry, Entry)
    assert (entry.user, entry.task_version, entry.amount) == ("bob", 3, Decimal("-12.5"))


def test_given_an_assignment_without_assignee_when_decided_then_invalid_naming_the_field():
    assert on_assigned(price(assignee=None)) == Invalid("data.assignee",
                                                        "an assignment names its assignee")


def test_given_a_completion_when_decided_then_the_assignee_is_credited_the_reward_once_per_task():
    entry = on_completed(price(version=9))
    assert entry == Entry("reward", "alice", Decimal("30.25"), "USDC", 6, "t-1")
    assert isinstance(entry, Entry)
    assert entry.task_version is None  # keyed by (task, assignee): a re-completion is a no-op


def test_given_a_completion_nobody_was_assigned_when_decided_then_nothing():
    assert isinstance(on_completed(price(assignee=None)), Nothing)


def test_given_a_free_task_when_decided_then_nothing_is_booked():
    assert isinstance(on_assigned(price(assign_fee="0")), Nothing)
    assert isinstance(on_completed(price(reward="0")), Nothing)


def test_given_more_decimals_than_the_denomination_when_decided_then_invalid():
    assert on_assigned(price(assign_fee="1.0000001")).field == "data.assign_fee"  # type: ignore[union-attr]
    assert on_completed(price(reward="0.5", decimals=0)).field == "data.reward"  # type: ignore[union-attr]


@pytest.mark.parametrize(("amount", "text"), [
    (Decimal("10.50"), "10.5"), (Decimal("100"), "100"), (Decimal("-0.000001"), "-0.000001"),
    (Decimal("-0"), "0"), (Decimal("0E-8"), "0"), (Decimal("1E+3"), "1000"),
    (Decimal("123456789012345678901234567890.123456789012345678"),
     "123456789012345678901234567890.123456789012345678")])
def test_given_decimals_when_shown_then_plain_without_exponent_or_trailing_zeros(amount, text):
    assert plain(amount) == text


def test_given_an_amount_when_in_base_units_then_exact():
    assert base_units(Decimal("17.5"), 6) == 17_500_000
    assert base_units(Decimal("0.1"), 18) == 10**17


# -- balance.get ----------------------------------------------------------------------------
@pytest.mark.parametrize(("actor", "role", "asked", "expected"), [
    ("alice", None, None, Allowed("alice")),
    ("alice", None, "alice", Allowed("alice")),
    ("alice", None, "bob", Refused(403, "only accountants and admins read another user's "
                                        "balance")),
    ("alice", "member", "bob", Refused(403, "only accountants and admins read another user's "
                                            "balance")),
    ("carol", "accountant", "bob", Allowed("bob")),
    ("dave", "admin", "bob", Allowed("bob")),
    (None, "admin", "bob", Refused(401, "no authenticated user (authid) on the request")),
    (None, None, None, Refused(401, "no authenticated user (authid) on the request")),
])
def test_given_actor_role_and_asked_user_when_authorized_then_the_matrix_holds(
        actor, role, asked, expected):
    assert authorize(actor, role, asked) == expected


# -- the daily close ------------------------------------------------------------------------
def test_given_a_ping_after_midnight_utc_when_closing_then_the_previous_utc_day_closes():
    assert closed_day(datetime(2026, 11, 21, 0, 5, tzinfo=UTC)) == date(2026, 11, 20)
    # 01:30 in UTC+2 is 23:30 UTC the day before: that day's previous day closes.
    plus_two = timezone(timedelta(hours=2))
    assert closed_day(datetime(2026, 11, 21, 1, 30, tzinfo=plus_two)) == date(2026, 11, 19)


def test_given_balances_when_closing_then_positive_ones_are_paid_out_and_negative_carry_over():
    day = date(2026, 11, 20)
    entries = payouts(day, [Account("bob", "USDC", 6, Decimal("7.5")),
                            Account("alice", "USDC", 6, Decimal("-3")),
                            Account("carol", "USDC", 6, Decimal("0")),
                            Account("alice", "DAI", 18, Decimal("2"))])
    assert entries == [
        Entry("payout", "alice", Decimal("-2"), "DAI", 18, payout_id("alice", "DAI", day), day=day),
        Entry("payout", "bob", Decimal("-7.5"), "USDC", 6, payout_id("bob", "USDC", day), day=day)]


def test_given_user_and_day_when_payout_id_then_deterministic_and_distinct():
    day = date(2026, 11, 20)
    assert payout_id("bob", "USDC", day) == payout_id("bob", "USDC", day)
    assert len({payout_id("bob", "USDC", day), payout_id("bob", "USDC", day + timedelta(1)),
                payout_id("alice", "USDC", day), payout_id("bob", "DAI", day)}) == 4
