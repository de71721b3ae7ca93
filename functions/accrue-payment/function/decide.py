"""The ledger's rules on plain values: what a task fact, a balance request and a daily close
mean for the accounts. No I/O; func.py acts on what these return.

- An assignment debits the task's fee from the assignee the fact names: every assignment,
  a reassignment too (the task version tells two assignments apart).
- A completion credits the task's reward to the assignee the fact names, once per task and
  assignee: a completion after a reopen by the same assignee earns nothing more; after a
  reassignment, the new assignee (who paid their own fee) earns it. A completion with no
  assignee pays no one.
- Every fact carries the whole task with its price, so no earlier fact is needed: facts
  may arrive in any order, and each is judged on its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from eventing.denominations import EXACT

# A GitHub login or token subject never starts with '@': the company cannot be a user.
COMPANY = "@company"
PRIVILEGED_ROLES = frozenset({"accountant", "admin"})
PAYOUT_NAMESPACE = uuid.UUID("6f1c2a9e-57a4-4b7e-9a35-0c8f2f4d6a11")

EntryKind = Literal["fee", "reward", "payout"]


@dataclass(frozen=True)
class Price:
    """A task's price as its facts carry it."""

    task_id: str
    version: int
    assignee: str | None
    assign_fee: str
    reward: str
    denomination: str
    decimals: int


@dataclass(frozen=True)
class Entry:
    """One journal: `amount` to the user's account, its negation to the company's."""

    kind: EntryKind
    user: str
    amount: Decimal  # signed, from the user's side: - a fee or payout, + a reward
    denomination: str
    decimals: int
    ref: str         # the task id, or the payout id
    task_version: int | None = None
    day: date | None = None


@dataclass(frozen=True)
class Nothing:
    """The fact moves no money (a free task, a completion nobody was assigned to)."""

    why: str


@dataclass(frozen=True)
class Invalid:
    """The fact can never be booked as it is."""

    field: str
    why: str


Decision = Entry | Nothing | Invalid


def exact(amount: str, decimals: int) -> Decimal | None:
    """The amount as an exact Decimal, or None if it has more fraction digits than allowed."""
    value = Decimal(amount)
    scaled = value.scaleb(decimals, context=EXACT)
    return value if scaled == scaled.to_integral_value() else None


def plain(amount: Decimal) -> str:
    """A decimal string with no exponent and no trailing zeros; zero is "0", never "-0"."""
    if amount == 0:
        return "0"
    return format(amount.normalize(EXACT), "f")


def base_units(amount: Decimal, decimals: int) -> int:
    return int(amount.scaleb(decimals, context=EXACT))


def _priced(price: Price, field: str, amount: str) -> Decimal | Invalid:
    value = exact(amount, price.decimals)
    if value is None:
        return Invalid(f"data.{field}", f"{amount} {price.denomination} has more than "
                                        f"{price.decimals} decimals")
    return value


def on_assigned(price: Price) -> Decision:
    if price.assignee is None:
        return Invalid("data.assignee", "an assignment names its assignee")
    fee = _priced(price, "assign_fee", price.assign_fee)
    if isinstance(fee, Invalid):
        return fee
    if fee == 0:
        return Nothing("the task is free to take")
    return Entry("fee", price.assignee, -fee, price.denomination, price.decimals,
                 price.task_id, task_version=price.version)


def on_completed(price: Price) -> Decision:
    reward = _priced(price, "reward", price.reward)
    if isinstance(reward, Invalid):
        return reward
    if price.assignee is None:
        return Nothing("nobody was assigned: nobody earns the reward")
    if reward == 0:
        return Nothing("the task has no reward")
    return Entry("reward", price.assignee, reward, price.denomination, price.decimals,
                 price.task_id)


# -- balance.get ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Allowed:
    user: str


@dataclass(frozen=True)
class Refused:
    status: Literal[401, 403]
    why: str


def authorize(actor: str | None, role: str | None, asked: str | None) -> Allowed | Refused:
    """Whose balance the actor may read: their own; anyone's as an accountant or admin.
    Another user's is a 403 whether or not they have an account, so it reveals nothing."""
    if actor is None:
        return Refused(401, "no authenticated user (authid) on the request")
    user = asked or actor
    if user == actor or role in PRIVILEGED_ROLES:
        return Allowed(user)
    return Refused(403, "only accountants and admins read another user's balance")


# -- the daily close ------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    user: str
    denomination: str
    decimals: int
    balance: Decimal


def closed_day(ping_time: datetime) -> date:
    """A ping closes the UTC day before the one it ticks in (a 00:05 tick closes yesterday)."""
    return ping_time.astimezone(UTC).date() - timedelta(days=1)


def payout_id(user: str, denomination: str, day: date) -> str:
    """The same user, denomination and day always give the same id: consumers deduplicate."""
    return str(uuid.uuid5(PAYOUT_NAMESPACE, f"{user}\n{denomination}\n{day.isoformat()}"))


def payouts(day: date, accounts: list[Account]) -> list[Entry]:
    """A payout entry for each positive balance, which brings it to zero; a negative
    balance carries over to the next day untouched."""
    return [Entry("payout", a.user, -a.balance, a.denomination, a.decimals,
                  payout_id(a.user, a.denomination, day), day=day)
            for a in sorted(accounts, key=lambda a: (a.user, a.denomination))
            if a.balance > 0]
