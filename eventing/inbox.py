"""The idempotency inbox: one row per delivered event, keyed by (source, id).

The row is written in the same transaction as the event's effects, so an effect
and its inbox row commit or vanish together. A redelivery with the same data gets
the answer recorded the first time (the same reply event, the same id); the same
(source, id) with different data is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventing.errors import Conflict

if TYPE_CHECKING:
    # Only functions with a schema use the inbox: psycopg is theirs to import.
    from psycopg import AsyncConnection


@dataclass(frozen=True)
class Recorded:
    """The answer given to the first delivery: a status and, for 200, the reply."""

    status: int
    reply: dict[str, Any] | None


def digest(event_type: str, subject: str | None, data: Any, actor: str | None = None) -> bytes:
    """What makes two deliveries 'the same event' beyond (source, id). `actor` (the Auth
    Context's authid, when there is one): the same id sent by someone else is another
    event, a 409, never the first sender's answer."""
    if isinstance(data, bytes | bytearray):
        body = bytes(data)
    else:
        body = json.dumps(data, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
    h = hashlib.sha256()
    parts = [event_type.encode(), (subject or "").encode(), body]
    if actor is not None:  # absent: the digest of every event recorded before actors counted
        parts.append(actor.encode())
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


async def claim(conn: AsyncConnection, source: str, event_id: str,
                event_digest: bytes) -> Recorded | None:
    """Claim (source, id) for this transaction.

    None: first delivery, go on and act. A Recorded answer: a redelivery of the
    same event, answer it again. Conflict: the same key with other data.
    A concurrent delivery of the same event waits here for the first to commit.
    """
    cur = await conn.execute(
        "INSERT INTO inbox (source, id, digest) VALUES (%s, %s, %s) "
        "ON CONFLICT (source, id) DO NOTHING",
        (source, event_id, event_digest),
    )
    if cur.rowcount == 1:
        return None
    cur = await conn.execute(
        "SELECT digest, status, reply FROM inbox WHERE source = %s AND id = %s",
        (source, event_id),
    )
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - the row was there a statement ago
        raise Conflict("the inbox row vanished; deliver again")
    known_digest, status, reply = row
    return again(source, event_id, event_digest, Known(bytes(known_digest),
                                                       Recorded(status=status, reply=reply)))


@dataclass(frozen=True)
class Known:
    """What the inbox holds for a (source, id) delivered before: the first delivery's
    digest and answer. A handler that claims the inbox itself, in the one statement that
    is its whole effect (eventing.edge.OneStatement), returns it for `again` to judge."""

    digest: bytes
    answer: Recorded


def again(source: str, event_id: str, event_digest: bytes, known: Known) -> Recorded:
    """The answer to a redelivery: the first answer for the same data, else Conflict."""
    if known.digest != event_digest:
        raise Conflict(
            f"event {event_id!r} from {source!r} was already delivered with other data",
            field="id",
        )
    return known.answer


async def record(conn: AsyncConnection, source: str, event_id: str, answer: Recorded) -> None:
    from psycopg.types.json import Json

    await conn.execute(
        "UPDATE inbox SET status = %s, reply = %s WHERE source = %s AND id = %s",
        (answer.status, Json(answer.reply) if answer.reply is not None else None,
         source, event_id),
    )
