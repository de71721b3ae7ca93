"""accrue-payment: a double-entry ledger over task events (functions/accrue-payment/README.md).

decode (the edge) → decide (pure, function.decide) → act (one transaction in schema
`accounting`, with the event's inbox row) → answer:

- `todo.task.assigned` / `.completed`: a fee or reward journal (the user's line, then the
  company's counter-line), or nothing; 202.
- `accounting.balance.get`: the balance and recent entries of the acting user (`authid`),
  or of anyone for an accountant or admin; replied as `accounting.balance`.
- `dev.knative.sources.ping` with `{"close": "daily"}`: the daily close of the day before
  the tick: a payout journal per positive balance, and `accounting.payout.due` for each
  (many events: through the outbox, not the reply); 202.

The database enforces what must always hold (migrations 0009, 0011): every journal
balances, entries are append-only, balances follow postings (kept in shards, so that the
company's account is no row every booking waits for).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from psycopg import AsyncConnection
from psycopg.errors import InvalidParameterValue
from pydantic import Field

from eventing.auth import AuthSettings
from eventing.edge import Delivery, Edge, Envelope, Reply, Route
from eventing.errors import Forbidden, InvalidEvent, Unauthorized
from eventing.events import (
    ACCOUNTING_BALANCE,
    ACCOUNTING_BALANCE_GET,
    ACCOUNTING_PAYOUT_DUE,
    PING,
    TODO_TASK_ASSIGNED,
    TODO_TASK_COMPLETED,
    Balance,
    BalanceGet,
    LedgerEntry,
    Model,
    PayoutDue,
    TodoTask,
)
from eventing.settings import Settings
from function.decide import (
    COMPANY,
    Account,
    Decision,
    Entry,
    Invalid,
    Price,
    Refused,
    authorize,
    base_units,
    closed_day,
    on_assigned,
    on_completed,
    payouts,
    plain,
)

CLOSE_LOCK = int.from_bytes(hashlib.sha256(b"eventworks:accounting:close").digest()[:8], "big",
                            signed=True)
REFUSALS: Mapping[int, type[Unauthorized] | type[Forbidden]] = {401: Unauthorized,
                                                                  403: Forbidden}


class AccountingSettings(Settings, AuthSettings):
    # balance.get without a denomination reads the user's account in this one.
    denomination: str = Field(default="USDC", alias="ACCOUNTING_DENOMINATION",
                              pattern=r"^[A-Za-z0-9]{1,20}$")
    recent_entries: int = Field(default=20, alias="ACCOUNTING_RECENT_ENTRIES", ge=0, le=1000)


class DailyClose(Model):
    """The PingSource's data (knative/base/accrue-payment.yaml)."""

    close: Literal["daily"]


def acting_role(envelope: Envelope) -> str | None:
    """The acting user's role, as the trusted edge that set `authid` states it.

    The CloudEvents extension `authrole` (eventing.auth.AUTHROLE), set by the same trusted
    edge as `authid`: the broker ingress, or this function's edge for a direct call with a
    bearer token. A role without an `authid` is meaningless: `authorize` refuses first."""
    return envelope.authrole


def price_of(task: TodoTask) -> Price:
    return Price(task_id=task.task_id, version=task.version, assignee=task.assignee,
                 assign_fee=task.assign_fee, reward=task.reward,
                 denomination=task.denomination.upper(), decimals=task.decimals)


def new() -> Function:
    return Function()


class Function(Edge[AccountingSettings]):
    name = "accrue-payment"
    schema = "accounting"
    outbox = True  # the daily close's payout.due facts, relayed to K_SINK (the Broker)
    settings_type = AccountingSettings

    def routes(self) -> Mapping[str, Route[Any]]:
        return {TODO_TASK_ASSIGNED: Route(TodoTask, self.on_assigned),
                TODO_TASK_COMPLETED: Route(TodoTask, self.on_completed),
                ACCOUNTING_BALANCE_GET: Route(BalanceGet, self.on_balance_get),
                PING: Route(DailyClose, self.on_close)}

    # -- task facts ---------------------------------------------------------------------
    async def on_assigned(self, delivery: Delivery[TodoTask]) -> None:
        await self._book_fact(delivery, on_assigned(price_of(delivery.data)))

    async def on_completed(self, delivery: Delivery[TodoTask]) -> None:
        await self._book_fact(delivery, on_completed(price_of(delivery.data)))

    @staticmethod
    async def _book_fact(delivery: Delivery[TodoTask], decision: Decision) -> None:
        assert delivery.tx is not None  # the function has a schema: the edge opened it
        if isinstance(decision, Invalid):
            raise InvalidEvent(decision.why, field=decision.field)
        if isinstance(decision, Entry):
            await book(delivery.tx, [decision], delivery.envelope)

    # -- balance.get --------------------------------------------------------------------
    async def on_balance_get(self, delivery: Delivery[BalanceGet]) -> Reply:
        assert delivery.tx is not None
        envelope = delivery.envelope
        verdict = authorize(envelope.authid, acting_role(envelope), delivery.data.user)
        if isinstance(verdict, Refused):
            raise REFUSALS[verdict.status](verdict.why)
        denomination = (delivery.data.denomination or self.settings.denomination).upper()
        balance = await balance_of(delivery.tx, verdict.user, denomination,
                                   self.settings.recent_entries)
        return Reply(ACCOUNTING_BALANCE, balance, subject=verdict.user)

    # -- the daily close ----------------------------------------------------------------
    async def on_close(self, delivery: Delivery[DailyClose]) -> None:
        tx = delivery.tx
        assert tx is not None
        envelope = delivery.envelope
        day = closed_day(envelope.time or datetime.now(UTC))
        # One close at a time: two ticks of different days must not both pay one balance.
        # (Its own statement: the next one's snapshot is taken after the lock is held.)
        await tx.execute("SELECT pg_advisory_xact_lock(%s)", (CLOSE_LOCK,))
        cur = await tx.execute("SELECT EXISTS (SELECT FROM closes WHERE day = %s)", (day,))
        closed = await cur.fetchone()
        if closed is not None and closed[0]:
            return  # a day closes once: a second tick for it changes nothing
        entries = payouts(day, await positive_balances(tx))
        await book(tx, entries, envelope)
        await tx.execute(
            "INSERT INTO closes (day, payouts, event_source, event_id) VALUES (%s, %s, %s, %s)",
            (day, len(entries), envelope.source, envelope.id))
        await self._announce(delivery, entries)

    async def _announce(self, delivery: Delivery[DailyClose],
                        entries: Sequence[Entry]) -> None:
        """Each payout as `accounting.payout.due` (for link-identity), in the close's
        transaction: published once it commits, never for a close that rolled back."""
        for due in payouts_due(entries):
            await self.publish(delivery, ACCOUNTING_PAYOUT_DUE, due, subject=due.user)


def payouts_due(entries: Iterable[Entry]) -> list[PayoutDue]:
    """A payout entry debits the user: what is due to them is its negation."""
    return [PayoutDue(payout_id=e.ref, user=e.user, denomination=e.denomination,
                      amount=plain(-e.amount),
                      amount_base_units=str(base_units(-e.amount, e.decimals)),
                      decimals=e.decimals, day=_iso(e.day))
            for e in entries]


def _iso(day: date | None) -> str:
    assert day is not None  # a payout entry always names its day
    return day.isoformat()


# -- the ledger's statements ---------------------------------------------------------------
BOOK = ("SELECT accounting.book(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::integer[],"
        " %s::date[], %s::text[], %s::smallint[], %s::numeric[], %s, %s, %s)")


async def book(tx: AsyncConnection, entries: Sequence[Entry], envelope: Envelope) -> int:
    """Write each entry as a journal with two lines, the user's and the company's, in one
    statement (`accounting.book`, migration 0011: it opens the accounts that do not exist
    yet). An entry the ledger already has (the same assignment, reward or payout, under
    another event id) is skipped. An account keeps the decimals it was opened with: a fact
    that disagrees is invalid. Returns how many entries were booked."""
    if not entries:
        return 0
    try:
        cur = await tx.execute(BOOK, (
            [uuid.uuid4() for _ in entries], [e.kind for e in entries],
            [e.user for e in entries], [e.ref for e in entries],
            [e.task_version for e in entries], [e.day for e in entries],
            [e.denomination for e in entries], [e.decimals for e in entries],
            [e.amount for e in entries], envelope.source, envelope.id, COMPANY))
    except InvalidParameterValue as exc:
        if exc.diag.column_name != "decimals":
            raise
        raise InvalidEvent(exc.diag.message_primary or "decimals disagree with the ledger",
                           field="data.decimals") from None
    row = await cur.fetchone()
    assert row is not None  # a function call answers one row
    return len(row[0])


async def positive_balances(tx: AsyncConnection) -> list[Account]:
    cur = await tx.execute(
        "SELECT holder, denomination, decimals, balance FROM account_balances"
        " WHERE kind = 'user' AND balance > 0 ORDER BY account_id")
    return [Account(user, denomination, decimals, balance)
            for user, denomination, decimals, balance in await cur.fetchall()]


async def balance_of(tx: AsyncConnection, user: str, denomination: str, recent: int) -> Balance:
    """The user's balance and latest entries, newest first; no account yet: zero, none."""
    cur = await tx.execute(
        "SELECT account_id, balance FROM account_balances"
        " WHERE kind = 'user' AND holder = %s AND denomination = %s", (user, denomination))
    row = await cur.fetchone()
    if row is None:
        return Balance(user=user, balance="0", denomination=denomination, entries=[])
    account_id, balance = row
    cur = await tx.execute(
        "SELECT j.journal_id, j.recorded_at, j.kind, p.amount, j.ref"
        "  FROM postings p JOIN journals j USING (journal_id)"
        " WHERE p.account_id = %s ORDER BY j.recorded_at DESC, j.journal_id LIMIT %s",
        (account_id, recent))
    entries = [LedgerEntry(entry_id=str(journal_id), at=at, kind=kind, amount=plain(amount),
                           ref=ref)
               for journal_id, at, kind, amount, ref in await cur.fetchall()]
    return Balance(user=user, balance=plain(Decimal(balance)), denomination=denomination,
                   entries=entries)
