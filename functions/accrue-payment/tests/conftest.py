"""Fixtures of accrue-payment's tests: task facts as todo-crud publishes them (the golden
task of tests/data/), and a read-only look at the ledger in the local stack's PostgreSQL
(schema `accounting`, as its own role)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.factory import Event, cloudevent

DATA = Path(__file__).parent / "data"
ASSIGNED = "dev.eventworks.todo.task.assigned"
COMPLETED = "dev.eventworks.todo.task.completed"
BALANCE_GET = "dev.eventworks.accounting.balance.get"
PING = "dev.knative.sources.ping"
TODO = "/eventworks/todo-crud"


@dataclass(frozen=True)
class Books:
    """What the ledger holds, read as the function's own role."""

    url: str

    def _rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def inbox(self, source: str, event_id: str) -> tuple[int | None, Any] | None:
        """The inbox's (status, reply) for (source, id); None: it has no row."""
        rows = self._rows("SELECT status, reply FROM accounting.inbox"
                          " WHERE source = %s AND id = %s", source, event_id)
        return (rows[0][0], rows[0][1]) if rows else None

    def balance(self, holder: str, denomination: str = "USDC") -> Decimal | None:
        rows = self._rows("SELECT balance FROM accounting.account_balances WHERE kind = 'user'"
                          " AND holder = %s AND denomination = %s", holder, denomination)
        return rows[0][0] if rows else None

    def summed(self, holder: str, denomination: str = "USDC") -> Decimal:
        """The user's balance from the postings alone."""
        rows = self._rows("SELECT coalesce(sum(p.amount), 0) FROM accounting.postings p"
                          " JOIN accounting.accounts a USING (account_id)"
                          " WHERE a.kind = 'user' AND a.holder = %s AND a.denomination = %s",
                          holder, denomination)
        return Decimal(rows[0][0])

    def journals(self, holder: str) -> list[tuple[str, str, Decimal]]:
        """(kind, ref, the user's amount) of each of the user's journals, oldest first."""
        return [(kind, ref, amount) for kind, ref, amount in self._rows(
            "SELECT j.kind, j.ref, p.amount FROM accounting.journals j"
            " JOIN accounting.postings p USING (journal_id)"
            " JOIN accounting.accounts a USING (account_id)"
            " WHERE j.holder = %s AND a.kind = 'user' ORDER BY j.recorded_at, j.ref", holder)]

    def audit(self, holders: list[str],
              denomination: str = "USDC") -> tuple[list[tuple[Decimal, Decimal]], int, Decimal]:
        """In one connection: each holder's (balance, sum of their postings), the number of
        unbalanced journals, and the sum of the whole ledger."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            each = [conn.execute(
                "SELECT coalesce((SELECT balance FROM accounting.account_balances"
                "                  WHERE kind = 'user' AND holder = %(h)s"
                "                    AND denomination = %(d)s), 0),"
                "       (SELECT coalesce(sum(p.amount), 0) FROM accounting.postings p"
                "          JOIN accounting.accounts a USING (account_id)"
                "         WHERE a.kind = 'user' AND a.holder = %(h)s"
                "           AND a.denomination = %(d)s)",
                {"h": h, "d": denomination}).fetchone() for h in holders]
            row = conn.execute(
                "SELECT (SELECT count(*) FROM (SELECT FROM accounting.postings GROUP BY journal_id"
                "                              HAVING sum(amount) <> 0 OR count(*) < 2) j),"
                "       (SELECT coalesce(sum(amount), 0) FROM accounting.postings)").fetchone()
        assert row is not None
        return ([(Decimal(r[0]), Decimal(r[1])) for r in each if r is not None], int(row[0]),
                Decimal(row[1]))

    def company_balance(self, denomination: str) -> Decimal | None:
        rows = self._rows("SELECT balance FROM accounting.account_balances"
                          " WHERE kind = 'company' AND denomination = %s", denomination)
        return rows[0][0] if rows else None

    def shards(self, kind: str, holder: str, denomination: str) -> int:
        """How many balance rows (migration 0011) the account's balance is the sum of."""
        return int(self._rows("SELECT count(*) FROM accounting.balances b"
                              " JOIN accounting.accounts a USING (account_id)"
                              " WHERE a.kind = %s AND a.holder = %s AND a.denomination = %s",
                              kind, holder, denomination)[0][0])

    def payouts_due(self, day: str) -> list[dict[str, Any]]:
        """The payout.due facts the close of `day` wrote to the outbox."""
        return [data for (data,) in self._rows(
            "SELECT data FROM accounting.outbox"
            " WHERE attributes->>'type' = 'dev.eventworks.accounting.payout.due'"
            "   AND data->>'day' = %s ORDER BY seq", day)]

    def accounts_agree_with_postings(self) -> bool:
        return bool(self._rows(
            "SELECT bool_and(a.balance = coalesce(s.total, 0)) FROM accounting.account_balances a"
            " LEFT JOIN (SELECT account_id, sum(amount) AS total FROM accounting.postings"
            "            GROUP BY account_id) s USING (account_id)")[0][0])


@pytest.fixture
def env(stack_env: dict[str, str]) -> dict[str, str]:
    return {"DATABASE_URL": stack_env["DATABASE_URL_ACCOUNTING"]}


@pytest.fixture
def books(stack_env: dict[str, str]) -> Books:
    return Books(stack_env["DATABASE_URL_ACCOUNTING"])


class Facts:
    """Builders of the events the tests send (a fixture: test modules cannot import this
    conftest by name)."""

    ASSIGNED = ASSIGNED
    COMPLETED = COMPLETED
    BALANCE_GET = BALANCE_GET
    PING = PING

    @staticmethod
    def task(**changes: Any) -> dict[str, Any]:
        """The golden task with a fresh id, and `changes`."""
        document: dict[str, Any] = json.loads((DATA / "task.assigned.json").read_text())
        document["task_id"] = str(uuid.uuid4())
        document.update(changes)
        return document

    @staticmethod
    def fact(event_type: str, task: dict[str, Any], *, event_id: str | None = None) -> Event:
        return cloudevent(event_type, task, id=event_id, source=TODO, subject=task["task_id"])

    @staticmethod
    def denomination() -> str:
        """A denomination no other test has booked in: its company account is new too."""
        return f"T{uuid.uuid4().hex[:12].upper()}"

    @staticmethod
    def user() -> str:
        """A user no other test has touched (the database outlives test runs)."""
        return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def facts() -> Facts:
    return Facts()
