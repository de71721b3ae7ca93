"""parse-comment's rows (schema `parse_comment`, db/migrations/0006): SQL only here.

Every read locks what it reads (FOR UPDATE, and an advisory lock per key before a row
may exist), so two deliveries about one bounty (an edit racing its creation, a claim
racing a payout) run one after the other and each sees the other's result.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row

from function.decide import Candidacy, Status, Stored
from function.grammar import Amount


@dataclass(frozen=True)
class Bounty:
    bounty_id: str
    source_kind: str
    source_id: int
    repository_id: int
    repository: str
    issue_number: int
    status: Status
    deleted: bool = False
    funder_login: str | None = None
    funder_id: int | None = None
    denomination: str | None = None
    amount: str | None = None
    amount_base_units: Decimal | None = None
    decimals: int | None = None
    chain_id: int | None = None
    source_updated_at: datetime | None = None
    funder_address: str | None = None
    solver_login: str | None = None
    solver_id: int | None = None
    pull_request: int | None = None
    pull_request_url: str | None = None
    payout_id: str | None = None
    claim_published: bool | None = None
    tx_hash: str | None = None
    note: str | None = None

    @property
    def terms(self) -> Amount | None:
        if (self.denomination is None or self.amount is None
                or self.amount_base_units is None or self.decimals is None):
            return None
        return Amount(self.denomination, Decimal(self.amount), int(self.amount_base_units),
                      self.decimals)

    def stored(self) -> Stored:
        return Stored(status=self.status, amount=self.terms, deleted=self.deleted,
                      source_updated_at=self.source_updated_at)

    def candidacy(self) -> Candidacy:
        return Candidacy(self.bounty_id, self.status, self.pull_request)


COLUMNS = tuple(f.name for f in fields(Bounty))
_NAMES = sql.SQL(", ").join(sql.Identifier(n) for n in COLUMNS)
SELECT = sql.SQL("SELECT {} FROM bounties ").format(_NAMES)
UPSERT = sql.SQL(
    "INSERT INTO bounties ({names}) VALUES ({values}) "
    "ON CONFLICT (bounty_id) DO UPDATE SET {updates}, updated_at = now()").format(
    names=_NAMES, values=sql.SQL(", ").join(sql.Placeholder(n) for n in COLUMNS),
    updates=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
                               for n in COLUMNS if n != "bounty_id"))


def amount_columns(amount: Amount) -> dict[str, Any]:
    return {"denomination": amount.denomination, "amount": amount.plain,
            "amount_base_units": Decimal(amount.base_units),
            "decimals": amount.decimals}


async def lock(tx: AsyncConnection, key: str) -> None:
    """Serialise the transactions about `key` (a bounty id, a bot comment key)."""
    await tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


async def load(tx: AsyncConnection, bounty_id: str) -> Bounty | None:
    await lock(tx, bounty_id)
    async with tx.cursor(row_factory=class_row(Bounty)) as cur:
        await cur.execute(SELECT + sql.SQL("WHERE bounty_id = %s FOR UPDATE"), (bounty_id,))
        return await cur.fetchone()


async def by_payout(tx: AsyncConnection, payout_id: str) -> Bounty | None:
    async with tx.cursor(row_factory=class_row(Bounty)) as cur:
        await cur.execute(SELECT + sql.SQL("WHERE payout_id = %s FOR UPDATE"), (payout_id,))
        return await cur.fetchone()


async def on_issue(tx: AsyncConnection, repository: str, issue_number: int) -> list[Bounty]:
    async with tx.cursor(row_factory=class_row(Bounty)) as cur:
        await cur.execute(SELECT + sql.SQL(
            "WHERE lower(repository) = lower(%s) AND issue_number = %s AND NOT deleted "
            "ORDER BY created_at, bounty_id FOR UPDATE"), (repository, issue_number))
        return await cur.fetchall()


async def save(tx: AsyncConnection, bounty: Bounty) -> None:
    await tx.execute(UPSERT, {name: getattr(bounty, name) for name in COLUMNS})


@dataclass(frozen=True)
class BotComment:
    comment_id: int
    body: str


async def bot_comment(tx: AsyncConnection, key: str) -> BotComment | None:
    await lock(tx, f"bot:{key}")
    async with tx.cursor(row_factory=class_row(BotComment)) as cur:
        await cur.execute("SELECT comment_id, body FROM bot_comments WHERE key = %s FOR UPDATE",
                          (key,))
        return await cur.fetchone()


async def save_bot_comment(tx: AsyncConnection, key: str, repository: str, issue_number: int,
                           comment_id: int, body: str) -> None:
    await tx.execute(
        "INSERT INTO bot_comments (key, repository, issue_number, comment_id, body) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
        "comment_id = EXCLUDED.comment_id, body = EXCLUDED.body, updated_at = now()",
        (key, repository, issue_number, comment_id, body))


async def announce_post(conn: AsyncConnection, key: str, repository: str,
                        issue_number: int) -> bool:
    """Note that the bot is about to post `key` (committed by the caller's own transaction,
    before the GitHub call); False when an earlier try had announced it already, so its
    post may have happened (function.bot searches before posting again)."""
    cur = await conn.execute(
        "INSERT INTO bot_posts (key, repository, issue_number) VALUES (%s, %s, %s) "
        "ON CONFLICT (key) DO NOTHING RETURNING key", (key, repository, issue_number))
    return await cur.fetchone() is not None


async def posted(tx: AsyncConnection, key: str) -> None:
    """The post of `key` is recorded (bot_comments) in this transaction: nothing unknown."""
    await tx.execute("DELETE FROM bot_posts WHERE key = %s", (key,))
