"""The batch reader: pending requests of `batch.tx_requests` → the broker, at least once.

One pass is one PostgreSQL transaction:

1. `SELECT … WHERE published_at IS NULL ORDER BY created_at LIMIT <batch> FOR UPDATE
   SKIP LOCKED`: the oldest pending requests, locked, so that readers running side by
   side (a PingSource tick and a job, two replicas) take disjoint batches and never
   wait for each other;
2. each is POSTed to the broker ingress (BROKER_URL) as `tx.sign.requested`, up to
   `concurrency` at once, its CloudEvent id the request id;
3. `published_at` is set for exactly those the broker answered 202 (it answers 202 only
   once Kafka acknowledged the record), then the transaction commits.

Anything else — a refused connection, a timeout, a 503, a 4xx — leaves the request
pending for the next pass. A crash after the broker's 202 and before the commit
publishes the request again later: the same event (same source and id), which sign-tx's
inbox deduplicates. So every request is published at least once and marked only once
the broker has it.

`drain` runs passes until none is pending, or until a pass made no progress (the broker
is down: stop and report instead of spinning), or until a time budget is spent.

Blocking code on purpose: the POSTs go out from a thread pool over the standard
library's keep-alive connections (`broker.connections`, what the dispatcher delivers
with), which costs a fraction of httpx's CPU per request; the HTTP endpoint
(batch/server.py) runs a drain in a worker thread.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from psycopg import Connection, sql
from psycopg_pool import ConnectionPool

from batch.requests import COLUMNS, SCHEMA, TxRequest, session_setup
from broker.connections import Connections, DeliveryError, DeliveryTimeout
from eventing import oidc

log = logging.getLogger("batch.reader")

BATCH_SIZE = 100
CONCURRENCY = 16
ACCEPTED = 202
POST_TIMEOUT = 10.0  # seconds per POST to the broker ingress

_SELECT = sql.SQL(
    "SELECT {columns} FROM tx_requests WHERE published_at IS NULL "
    "ORDER BY created_at, request_id LIMIT %s FOR UPDATE SKIP LOCKED"
).format(columns=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
_MARK = ("UPDATE tx_requests SET published_at = clock_timestamp() "
         "WHERE request_id = ANY(%s) AND published_at IS NULL")


@dataclass(frozen=True)
class Pass:
    """One transaction's worth: how many were taken, and published (202)."""

    selected: int
    published: int

    @property
    def failed(self) -> int:
        return self.selected - self.published


@dataclass(frozen=True)
class Drained:
    passes: int
    selected: int
    published: int
    failed: int
    # Why the drain ended: "empty" (nothing pending), "stalled" (a pass published
    # nothing: the broker is failing) or "budget" (time is up, more may be pending).
    ended: str
    seconds: float

    @property
    def complete(self) -> bool:
        return self.ended == "empty"


class Reader:
    """Relays pending requests; `close()` it (or use it as a context manager)."""

    def __init__(self, database_url: str, broker_url: str, *, schema: str = SCHEMA,
                 batch_size: int = BATCH_SIZE, concurrency: int = CONCURRENCY,
                 pool_size: int = 2, open_wait: bool = True) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.broker_url = broker_url
        self.batch_size = batch_size
        self.schema = schema
        self._connections = Connections()
        self._posting = ThreadPoolExecutor(max_workers=concurrency,
                                           thread_name_prefix="batch-publish")
        self._pool = ConnectionPool(database_url, min_size=1, max_size=pool_size,
                                    open=False, timeout=10.0, configure=self._configure,
                                    name="batch-reader")
        self._pool.open(wait=open_wait, timeout=15.0)

    def _configure(self, conn: Connection[Any]) -> None:
        conn.autocommit = True
        conn.execute(session_setup(self.schema))
        conn.autocommit = False

    def close(self) -> None:
        self._pool.close()
        self._posting.shutdown(wait=True)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """Raises when the database cannot be reached (for readiness)."""
        with self._pool.connection(timeout=2.0) as conn:
            conn.execute("SELECT 1")

    def _publish(self, request: TxRequest) -> bool:
        headers, body = request.http_event()
        # The OIDC identity of the SinkBinding `batch-reader`, which the Broker's
        # EventPolicy admits (knative/base/gateway.yaml); nothing without OIDC.
        headers = {**headers, **oidc.authorization()}
        try:
            answer = self._connections.post(self.broker_url, body, headers, POST_TIMEOUT)
        except (DeliveryError, DeliveryTimeout) as exc:
            log.warning("broker unreachable; the request stays pending", extra={
                "request_id": request.request_id, "error": str(exc)})
            return False
        if answer.status != ACCEPTED:
            log.warning("broker did not accept the request; it stays pending", extra={
                "request_id": request.request_id, "status": answer.status,
                "body": answer.body[:300].decode("utf-8", "replace")})
            return False
        return True

    def run_once(self) -> Pass:
        """One pass: take a batch, publish it, mark what the broker accepted, commit."""
        with self._pool.connection() as conn, conn.transaction():
            rows = conn.execute(_SELECT, (self.batch_size,)).fetchall()
            if not rows:
                return Pass(0, 0)
            requests = []
            for row in rows:
                try:
                    requests.append(TxRequest.of(row))
                except ValueError as exc:  # the table's checks make this unreachable
                    log.error("request cannot become an event; it stays pending",
                              extra={"request_id": row[0], "error": str(exc)})
            outcomes = list(self._posting.map(self._publish, requests))
            accepted = [r.request_id for r, ok in zip(requests, outcomes, strict=True) if ok]
            if accepted:
                conn.execute(_MARK, (accepted,))
        return Pass(len(rows), len(accepted))

    def drain(self, budget: float | None = None) -> Drained:
        """Passes until nothing is pending, no progress, or `budget` seconds are spent."""
        started = time.monotonic()
        passes = selected = published = 0
        ended = "empty"
        while True:
            done = self.run_once()
            if done.selected == 0:
                break
            passes += 1
            selected += done.selected
            published += done.published
            if done.published == 0:
                ended = "stalled"
                break
            if budget is not None and time.monotonic() - started >= budget:
                ended = "budget"
                break
        drained = Drained(passes, selected, published, selected - published, ended,
                          time.monotonic() - started)
        if drained.selected:
            log.info("batch reader drained", extra={
                "passes": passes, "published": published, "failed": drained.failed,
                "ended": ended, "seconds": round(drained.seconds, 3)})
        return drained


def drain(database_url: str, broker_url: str, *, schema: str = SCHEMA,
          batch_size: int = BATCH_SIZE, concurrency: int = CONCURRENCY,
          budget: float | None = None) -> Drained:
    """Job mode: connect, drain, close."""
    with Reader(database_url, broker_url, schema=schema, batch_size=batch_size,
                concurrency=concurrency) as reader:
        return reader.drain(budget)


def run_once(database_url: str, broker_url: str, *, schema: str = SCHEMA,
             batch_size: int = BATCH_SIZE, concurrency: int = CONCURRENCY) -> Pass:
    with Reader(database_url, broker_url, schema=schema, batch_size=batch_size,
                concurrency=concurrency) as reader:
        return reader.run_once()
