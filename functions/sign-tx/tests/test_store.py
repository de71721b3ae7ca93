"""sign-tx's tables on the local stack's PostgreSQL, as sign-tx's own role: fencing tokens,
nonces without gaps, and the unique constraints behind "signed once"."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import AsyncConnection

from function import store

pytestmark = pytest.mark.stack


@pytest.fixture
async def connect(stack_env):
    """Connections as sign-tx makes them: its role, its schema."""
    opened: list[AsyncConnection] = []

    async def open_one() -> AsyncConnection:
        conn = await AsyncConnection.connect(stack_env["DATABASE_URL_SIGNING"])
        await conn.execute("SET ROLE signing; SET search_path TO signing")
        await conn.commit()   # settings kept, no transaction left open
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


@pytest.fixture
async def tx(connect) -> AsyncIterator[AsyncConnection]:
    """One transaction, rolled back at the end: nothing of these tests stays."""
    conn = await connect()
    try:
        yield conn
    finally:
        await conn.rollback()


def an_address() -> str:
    return "0x" + secrets.token_hex(20)


def signed(sender: str, nonce: int, request_id: str | None = None,
           payload: bytes = b"\x01") -> store.Signed:
    return store.Signed(
        request_id=request_id or f"req-{secrets.token_hex(8)}", request_digest=bytes(32),
        sender=sender, chain_id=1, nonce=nonce, signing_hash=bytes(31) + payload,
        tx_hash=bytes(31) + payload, raw_tx=b"\x02" + payload, fencing_token=7,
        lease_id="7abc", worker_id="w1")


async def test_given_fencing_tokens_when_written_then_a_lower_one_is_refused_equal_or_higher_not(
        tx):
    key = an_address()
    assert await store.fence(tx, key, 10, "a", "w1") is None    # the first write of the key
    assert await store.fence(tx, key, 5, "b", "w2") == 10       # a lease that has run out
    assert await store.fence(tx, key, 10, "a", "w1") is None    # the same lease again
    assert await store.fence(tx, key, 11, "c", "w3") is None    # a later lease
    assert await store.fence(tx, key, 10, "a", "w1") == 11
    cur = await tx.execute("SELECT fencing_token, worker_id FROM fencing WHERE sender = %s",
                           (key,))
    assert await cur.fetchall() == [(11, "w3")]


async def test_given_nonces_when_allocated_then_counted_per_sender_and_chain(tx):
    a, b = an_address(), an_address()
    assert [await store.next_nonce(tx, a, 1) for _ in range(3)] == [0, 1, 2]
    assert await store.next_nonce(tx, a, 5) == 0
    assert await store.next_nonce(tx, b, 1) == 0


async def test_given_allocation_rolled_back_then_the_nonce_is_given_again_no_gap(connect):
    sender = an_address()
    conn = await connect()
    async with conn.transaction():
        assert await store.next_nonce(conn, sender, 1) == 0
    async with conn.transaction(force_rollback=True):   # a crash before the commit
        assert await store.next_nonce(conn, sender, 1) == 1
    async with conn.transaction(force_rollback=True):
        assert await store.next_nonce(conn, sender, 1) == 1
    async with conn.transaction():
        await conn.execute("DELETE FROM nonces WHERE sender = %s", (sender,))


async def test_given_two_payloads_for_one_sender_chain_nonce_when_stored_then_second_refused(
        tx):
    sender = an_address()
    await store.insert(tx, signed(sender, 0, payload=b"\x01"))
    with pytest.raises(psycopg.errors.UniqueViolation, match="sender_chain_id_nonce"):
        await store.insert(tx, signed(sender, 0, payload=b"\x02"))


async def test_given_one_request_signed_twice_when_stored_then_second_refused(tx):
    sender = an_address()
    await store.insert(tx, signed(sender, 0, request_id="req-same"))
    with pytest.raises(psycopg.errors.UniqueViolation, match="request_id"):
        await store.insert(tx, signed(sender, 1, request_id="req-same"))


async def test_given_stored_transaction_when_found_then_the_same_values(tx):
    stored = signed(an_address(), 3)
    await store.insert(tx, stored)
    assert await store.find(tx, stored.request_id) == stored
    assert await store.find(tx, "req-never") is None


async def test_given_request_locked_when_another_transaction_asks_then_it_waits_for_commit(
        connect):
    first, second = await connect(), await connect()
    await second.execute("SET lock_timeout = '200ms'")
    await second.commit()
    async with first.transaction():
        await store.lock_request(first, "req-held")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            async with second.transaction():
                await store.lock_request(second, "req-held")
    async with second.transaction():   # released by the first transaction's end
        await store.lock_request(second, "req-held")
