"""Transaction requests in `batch.tx_requests`: the row, its event, and mocked ones to seed.

The schema and its checks are db/migrations/0004.batch-tx-requests.sql. Every
connection runs as the role `batch` with `search_path` set to the schema (the same
rule as a function's, eventing/database.py): with the local stack's own login URL
(DATABASE_URL_BATCH) that is the login itself; with a shared login it is a SET ROLE.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from Crypto.Hash import keccak
from psycopg import sql

from eventing.events import TX_SIGN_REQUESTED, TxSignRequested

ROLE = "batch"
SCHEMA = "batch"
SOURCE = "/eventworks/batch-reader"

COLUMNS = ("request_id", "chain_id", "to", "value", "data", "gas_limit", "max_fee_per_gas",
           "max_priority_fee_per_gas")

# Mocked requests: plain ETH transfers on chain 1 with fees of the usual size.
SEED_CHAIN_ID = 1
SEED_GAS_LIMIT = 21_000
SEED_MAX_FEE_PER_GAS = 30 * 10**9           # 30 gwei
SEED_MAX_PRIORITY_FEE_PER_GAS = 2 * 10**9   # 2 gwei
SEED_MAX_VALUE = 10**15                     # at most 0.001 ETH


def session_setup(schema: str = SCHEMA) -> sql.Composed:
    """What every connection runs first: act as the role, see only the schema."""
    return sql.SQL("SET ROLE {role}; SET search_path TO {schema}").format(
        role=sql.Identifier(ROLE), schema=sql.Identifier(schema))


@dataclass(frozen=True)
class TxRequest:
    request_id: str
    chain_id: int
    to: str
    value: int
    data: str
    gas_limit: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    @classmethod
    def of(cls, row: Sequence[Any]) -> TxRequest:
        """A row of `SELECT <COLUMNS>`; numeric columns arrive as Decimal."""
        request_id, chain_id, to, value, data, gas_limit, max_fee, max_priority = row
        return cls(str(request_id), int(chain_id), str(to), _integer(value), str(data),
                   int(gas_limit), _integer(max_fee), _integer(max_priority))

    def event_data(self) -> TxSignRequested:
        """The event's data, validated by the catalog's model."""
        return TxSignRequested(
            request_id=self.request_id, chain_id=self.chain_id, to=self.to,
            value=str(self.value), data=self.data, gas_limit=self.gas_limit,
            max_fee_per_gas=str(self.max_fee_per_gas),
            max_priority_fee_per_gas=str(self.max_priority_fee_per_gas))

    def http_event(self) -> tuple[dict[str, str], bytes]:
        """The `tx.sign.requested` CloudEvent in binary HTTP mode. The id is the request
        id, so a re-publish (a crash between the broker's 202 and the commit) is the same
        event and sign-tx's inbox deduplicates it."""
        data = self.event_data().model_dump(mode="json", by_alias=True)
        headers = {
            "ce-specversion": "1.0",
            "ce-id": self.request_id,
            "ce-source": SOURCE,
            "ce-type": TX_SIGN_REQUESTED,
            "ce-subject": self.request_id,
            "content-type": "application/json",
        }
        return headers, json.dumps(data, separators=(",", ":")).encode()


def _integer(value: Decimal | int) -> int:
    number = int(value)
    if number != value:  # numeric(78, 0) cannot hold a fraction; never round silently
        raise ValueError(f"not an integer: {value}")
    return number


# -- mocked requests (the seed job) -------------------------------------------------------
def checksum_address(raw: bytes) -> str:
    """EIP-55 mixed-case form of a 20-byte address."""
    plain = raw.hex()
    digest = keccak.new(digest_bits=256, data=plain.encode()).hexdigest()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c
                          for c, d in zip(plain, digest, strict=False))


def mocked(count: int) -> list[TxRequest]:
    """`count` plain transfers to random addresses, of a small random value."""
    return [TxRequest(
        request_id=str(uuid.uuid4()), chain_id=SEED_CHAIN_ID,
        to=checksum_address(secrets.token_bytes(20)),
        value=1 + secrets.randbelow(SEED_MAX_VALUE), data="0x", gas_limit=SEED_GAS_LIMIT,
        max_fee_per_gas=SEED_MAX_FEE_PER_GAS,
        max_priority_fee_per_gas=SEED_MAX_PRIORITY_FEE_PER_GAS,
    ) for _ in range(count)]


def insert(conn: psycopg.Connection[Any], requests: Sequence[TxRequest]) -> None:
    """Add the requests, pending, in the caller's transaction (COPY: fast for many)."""
    statement = sql.SQL("COPY tx_requests ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
    with conn.cursor().copy(statement) as copy:
        for r in requests:
            copy.write_row((r.request_id, r.chain_id, r.to, r.value, r.data, r.gas_limit,
                            r.max_fee_per_gas, r.max_priority_fee_per_gas))


def seed(database_url: str, count: int, *, schema: str = SCHEMA) -> list[str]:
    """Insert `count` mocked requests in one transaction; return their request ids."""
    requests = mocked(count)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(session_setup(schema))
        with conn.transaction():
            insert(conn, requests)
    return [r.request_id for r in requests]
