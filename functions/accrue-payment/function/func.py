"""accrue-payment: a double-entry ledger over task events (functions/accrue-payment/README.md).

decode (the edge) → decide (pure, function.decide) → act (one transaction in schema
`accounting`, with the event's inbox row) → answer:

- `todo.task.assigned` / `.completed`: a fee or reward journal (the user's line, then the
  company's counter-line), or nothing; 202. The transaction is one statement in autocommit
  (`accounting.book_fact`, migration 0013; the edge's `OneStatement`).
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

import contextlib
import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from psycopg import AsyncConnection
from psycopg.errors import InvalidParameterValue
from pydantic import Field

from eventing.auth import AuthSettings
from eventing.edge import AnyRoute, Delivery, Edge, Envelope, OneStatement, Reply, Route
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
from eventing.inbox import Known, Recorded
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

    def routes(self) -> Mapping[str, AnyRoute]:
        # A task fact is one statement (`book_fact`, migration 0013): inbox claim, booking
        # and answer in a single round trip, where the edge's transaction takes five.
        return {TODO_TASK_ASSIGNED: OneStatement(TodoTask, self.on_assigned),
                TODO_TASK_COMPLETED: OneStatement(TodoTask, self.on_completed),
                ACCOUNTING_BALANCE_GET: Route(BalanceGet, self.on_balance_get),
                PING: Route(DailyClose, self.on_close)}

    # -- task facts ---------------------------------------------------------------------
    async def on_assigned(self, delivery: Delivery[TodoTask],
                          digest: bytes) -> Recorded | Known:
        return await self._book_fact(delivery, digest, on_assigned(price_of(delivery.data)))

    async def on_completed(self, delivery: Delivery[TodoTask],
                           digest: bytes) -> Recorded | Known:
        return await self._book_fact(delivery, digest, on_completed(price_of(delivery.data)))

    @staticmethod
    async def _book_fact(delivery: Delivery[TodoTask], digest: bytes,
                         decision: Decision) -> Recorded | Known:
        assert delivery.tx is not None  # the function has a schema: the edge gave one
        if isinstance(decision, Invalid):
            raise InvalidEvent(decision.why, field=decision.field)
        # A fact that moves no money is still claimed: its redelivery with other data is
        # the same 409 as any other's.
        entry = decision if isinstance(decision, Entry) else None
        return await book_fact(delivery.tx, entry, delivery.envelope, digest)

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


BOOK_FACT = ("SELECT first, known_digest, known_status, known_reply FROM accounting.book_fact("
             "%s, %s, %s, %s::text, %s, %s, %s::integer, %s, %s::smallint, %s::numeric, %s)")
FACT_ANSWER = Recorded(status=202, reply=None)  # what book_fact records for a fact


async def book_fact(conn: AsyncConnection, entry: Entry | None, envelope: Envelope,
                    digest: bytes) -> Recorded | Known:
    """A task fact in one statement, on a connection in autocommit (its own transaction):
    claim the event's inbox row, book `entry` (if any) as `book` does, record the answer
    202 (`accounting.book_fact`, migration 0013). When the inbox already has (source, id),
    nothing is written and what it holds is returned for the edge to judge."""
    # Scalars, not `book`'s arrays: psycopg dumps a one-element list at several times the
    # cost of its element, and this is every fact's hot path.
    fields = ((entry.kind, entry.user, entry.ref, entry.task_version, entry.denomination,
               entry.decimals, entry.amount) if entry is not None else (None,) * 7)
    with _decimals_refused():
        cur = await conn.execute(BOOK_FACT, (envelope.source, envelope.id, digest, *fields,
                                             COMPANY))
    row = await cur.fetchone()
    assert row is not None  # a function call answers one row
    first, known_digest, status, reply = row
    if first:
        return FACT_ANSWER
    return Known(bytes(known_digest), Recorded(status=status, reply=reply))


@contextlib.contextmanager
def _decimals_refused() -> Iterator[None]:
    """An account keeps the decimals it was opened with: `book` refuses a fact that
    disagrees (SQLSTATE 22023, COLUMN decimals), which is the event's fault: a 400."""
    try:
        yield
    except InvalidParameterValue as exc:
        if exc.diag.column_name != "decimals":
            raise
        raise InvalidEvent(exc.diag.message_primary or "decimals disagree with the ledger",
                           field="data.decimals") from None


async def book(tx: AsyncConnection, entries: Sequence[Entry], envelope: Envelope) -> int:
    """Write each entry as a journal with two lines, the user's and the company's, in one
    statement (`accounting.book`, migration 0011: it opens the accounts that do not exist
    yet). An entry the ledger already has (the same assignment, reward or payout, under
    another event id) is skipped. An account keeps the decimals it was opened with: a fact
    that disagrees is invalid. Returns how many entries were booked."""
    if not entries:
        return 0
    with _decimals_refused():
        cur = await tx.execute(BOOK, (
            [uuid.uuid4() for _ in entries], [e.kind for e in entries],
            [e.user for e in entries], [e.ref for e in entries],
            [e.task_version for e in entries], [e.day for e in entries],
            [e.denomination for e in entries], [e.decimals for e in entries],
            [e.amount for e in entries], envelope.source, envelope.id, COMPANY))
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
