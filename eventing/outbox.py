"""The outbox: facts written in the transaction of the change they report, relayed later.

A handler can answer a delivery with one reply event; facts beyond that (a task changed,
a daily close's payouts) go here. `put` writes the event into the function's own
`outbox` table in the delivery's transaction, so a rolled-back change publishes nothing
and a committed one cannot be lost. The `Relay` (running in the function's own process,
started by the edge) posts unpublished rows in order to `K_SINK` (what a SinkBinding
injects: the Broker) and marks a row published only after a 2xx, retrying with backoff
while the sink fails. A crash between the 2xx and the mark publishes that event again
with the same id: consumers deduplicate by (source, id), as for any redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent
from psycopg import AsyncConnection
from psycopg.types.json import Json
from pydantic import BaseModel

from eventing import oidc
from eventing.database import Database

if TYPE_CHECKING:
    from eventing.http import httpx

log = logging.getLogger(__name__)

# One relay pass publishes at most this many facts in one transaction.
BATCH = 100
# Published rows are kept this long for inspection, then pruned.
KEEP_PUBLISHED = "1 day"


async def put(tx: AsyncConnection, *, source: str, type: str, data: BaseModel,
              subject: str | None = None, traceparent: str | None = None) -> str:
    """Write one fact into the outbox of the transaction's schema; returns its event id."""
    event_id = str(uuid.uuid4())
    attributes: dict[str, Any] = {
        "specversion": "1.0", "id": event_id, "source": source, "type": type,
        "time": datetime.now(UTC).isoformat(), "datacontenttype": "application/json",
    }
    if subject is not None:
        attributes["subject"] = subject
    if traceparent is not None:
        attributes["traceparent"] = traceparent
    await tx.execute(
        "INSERT INTO outbox (id, attributes, data) VALUES (%s, %s, %s)",
        (event_id, Json(attributes), Json(data.model_dump(mode="json", by_alias=True))))
    return event_id


@dataclass(frozen=True)
class Pending:
    seq: int
    attributes: Mapping[str, Any]
    data: Any

    def http(self) -> tuple[dict[str, str], bytes]:
        # A fresh attributes dict: the SDK writes defaults into the dict it gets.
        attributes = dict(self.attributes)
        attributes["time"] = datetime.fromisoformat(attributes["time"])
        message = to_binary_event(CloudEvent(attributes, self.data))
        return dict(message.headers), message.body


class SinkRefused(Exception):
    """The sink did not take an event; the row stays pending."""


class Relay:
    """Posts a schema's pending outbox rows to the sink, oldest first.

    Runs as a task of the function's process: woken after each delivery that may have
    written facts, and every `poll_seconds` anyway (another replica's leftovers, a crash
    between commit and wake-up). Rows are claimed FOR UPDATE SKIP LOCKED, so replicas
    never post the same row at once; order holds per replica, which is all a consumer
    that deduplicates and reads whole resources needs.
    """

    def __init__(self, database: Database, sink: str, *, timeout: float = 5.0,
                 poll_seconds: float = 5.0, max_backoff: float = 30.0) -> None:
        self._db = database
        self._sink = sink
        # Made at the first post (cold start: httpx is not imported before a fact exists).
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._poll = poll_seconds
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-relay")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Let a pass in flight finish (so what it posted is marked), then end."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), grace_seconds)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            self._wake.clear()
            try:
                while await self.flush() == BATCH:
                    pass
                backoff = 0.1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The sink or the database is away: the rows wait, and so do we.
                log.warning("outbox relay paused", extra={
                    "error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped(), backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def _stopped(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._wake.wait()

    async def flush(self) -> int:
        """Publish up to BATCH pending facts; returns how many were published."""
        published = 0
        failure: Exception | None = None
        async with self._db.transaction() as tx:
            cur = await tx.execute(
                "SELECT seq, attributes, data FROM outbox WHERE published_at IS NULL "
                "ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED", (BATCH,))
            rows = [Pending(seq, attributes, data) for seq, attributes, data
                    in await cur.fetchall()]
            for row in rows:
                try:
                    await self._post(row)
                except Exception as exc:
                    # Commit what was posted before it; later rows keep their order.
                    failure = exc
                    break
                await tx.execute("UPDATE outbox SET published_at = now() WHERE seq = %s",
                                 (row.seq,))
                published += 1
            if published:
                await tx.execute("DELETE FROM outbox WHERE published_at < now() - %s::interval",
                                 (KEEP_PUBLISHED,))
        self.published += published
        if published:
            log.info("outbox relayed", extra={"events": published})
        if failure is not None:
            raise failure
        return published

    async def _post(self, row: Pending) -> None:
        headers, body = row.http()
        # The SinkBinding's OIDC identity, which the Broker's EventPolicy admits.
        headers.update(oidc.authorization())
        if self._http is None:
            from eventing.http import httpx

            self._http = httpx.AsyncClient(timeout=self._timeout)
        response = await self._http.post(self._sink, headers=headers, content=body)
        if not 200 <= response.status_code < 300:
            raise SinkRefused(f"{self._sink} answered {response.status_code}")
