"""sign-tx's tables (db/migrations/0002.signing-transactions.sql), used inside the edge's
transaction: the one that claimed the event in the inbox and commits with it.

Locks are always taken in one order, so that signers never deadlock: the request (an
advisory lock), then the key's fencing row, then its nonce row.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection

# The advisory lock space of sign-tx's requests: PostgreSQL's two-key form (a class id
# and a 32-bit object id) never overlaps the one-key form other code may use.
REQUEST_LOCKS = 0x5167  # "sign"


@dataclass(frozen=True)
class Signed:
    """A signed transaction as stored, and as it is answered on every redelivery."""

    request_id: str
    request_digest: bytes
    sender: str  # lower case
    chain_id: int
    nonce: int
    signing_hash: bytes
    tx_hash: bytes
    raw_tx: bytes
    fencing_token: int
    lease_id: str
    worker_id: str


async def lock_request(tx: AsyncConnection, request_id: str) -> None:
    """Hold the request until this transaction ends. The same request published twice (two
    events, one request id) is then signed once: the second waits here for the first to
    commit and finds its transaction. Requests whose ids hash alike merely take turns."""
    await tx.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                     (REQUEST_LOCKS, request_id))


async def find(tx: AsyncConnection, request_id: str) -> Signed | None:
    cur = await tx.execute(
        "SELECT request_id, request_digest, sender, chain_id, nonce, signing_hash, tx_hash, "
        "raw_tx, fencing_token, lease_id, worker_id FROM transactions WHERE request_id = %s",
        (request_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    return Signed(request_id=row[0], request_digest=bytes(row[1]), sender=row[2],
                  chain_id=int(row[3]), nonce=int(row[4]), signing_hash=bytes(row[5]),
                  tx_hash=bytes(row[6]), raw_tx=bytes(row[7]), fencing_token=int(row[8]),
                  lease_id=row[9], worker_id=row[10])


async def fence(tx: AsyncConnection, sender: str, fencing_token: int, lease_id: str,
                worker_id: str) -> int | None:
    """Record a write under this lease's fencing token. None: accepted (the token is the
    highest seen for the key, or ties with it). Otherwise the higher token seen: this
    lease expired and the key was leased again since, so its write is refused.

    The key's row stays locked until commit either way (ON CONFLICT DO UPDATE locks the
    row even where its WHERE is false), so a later lease's write waits for this one."""
    cur = await tx.execute(
        "INSERT INTO fencing AS f (sender, fencing_token, lease_id, worker_id) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (sender) DO UPDATE SET "
        "fencing_token = EXCLUDED.fencing_token, lease_id = EXCLUDED.lease_id, "
        "worker_id = EXCLUDED.worker_id, updated_at = now() "
        "WHERE f.fencing_token <= EXCLUDED.fencing_token RETURNING f.fencing_token",
        (sender, fencing_token, lease_id, worker_id))
    if await cur.fetchone() is not None:
        return None
    cur = await tx.execute("SELECT fencing_token FROM fencing WHERE sender = %s", (sender,))
    row = await cur.fetchone()
    assert row is not None  # the upsert found it and locked it
    return int(row[0])


async def next_nonce(tx: AsyncConnection, sender: str, chain_id: int) -> int:
    """The next nonce of (sender, chain id), counted up in this transaction.

    The upsert takes the nonce row's lock (as SELECT … FOR UPDATE would) until commit, so
    concurrent signers of one key take turns; a rollback gives the nonce back, so the
    nonces of a key have no gaps."""
    cur = await tx.execute(
        "INSERT INTO nonces AS n (sender, chain_id, next_nonce) VALUES (%s, %s, 1) "
        "ON CONFLICT (sender, chain_id) DO UPDATE SET next_nonce = n.next_nonce + 1, "
        "updated_at = now() RETURNING n.next_nonce - 1",
        (sender, chain_id))
    row = await cur.fetchone()
    assert row is not None  # an upsert with RETURNING returns its row
    return int(row[0])


async def insert(tx: AsyncConnection, signed: Signed) -> None:
    """Store the signed transaction. The unique constraints are the last line of defence
    (one transaction per request; one payload per sender, chain and nonce): under the
    locks above neither can fire, so if one does it is a bug, and a loud one."""
    await tx.execute(
        "INSERT INTO transactions (request_id, request_digest, sender, chain_id, nonce, "
        "signing_hash, tx_hash, raw_tx, fencing_token, lease_id, worker_id) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (signed.request_id, signed.request_digest, signed.sender, signed.chain_id,
         signed.nonce, signed.signing_hash, signed.tx_hash, signed.raw_tx,
         signed.fencing_token, signed.lease_id, signed.worker_id))
