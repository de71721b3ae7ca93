"""`python -m batch serve`: the batch reader as the sink of a PingSource.

`POST /` takes a CloudEvent (binary or structured mode). A `dev.knative.sources.ping`
runs passes until nothing is pending (batch.reader.Reader.drain, bounded by
DRAIN_BUDGET_SECONDS so that the answer comes well within the sink's 30 s delivery
timeout), then answers:

- 202 when the drain ended with nothing pending, or with its time budget spent (the
  next tick goes on where this one stopped);
- 503 with Retry-After when a pass published nothing (the broker is failing) or the
  database cannot be reached: the PingSource retries, and the requests stay pending;
- 400 problem+json for anything that is not a CloudEvent or not a ping.

Ticks that overlap (a slow drain, a retried tick, a second replica) are safe: each pass
locks its batch with `FOR UPDATE SKIP LOCKED`.

`GET /health/liveness` is 200; `GET /health/readiness` is 200 once the database answers.
Served by uvicorn, like the broker ingress: it is our own process, not a function.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from typing import Any

import uvicorn
from pydantic import Field

from batch.reader import BATCH_SIZE, CONCURRENCY, Reader
from batch.requests import SCHEMA
from eventing import logs, wire
from eventing.edge import status_of
from eventing.errors import EventworksError, NotFound, Unavailable, UnknownEventType
from eventing.settings import EnvSettings

log = logging.getLogger("batch.server")

PING = "dev.knative.sources.ping"
LIVENESS = "/health/liveness"
READINESS = "/health/readiness"
PROBLEM = {"content-type": "application/problem+json"}


class ServerSettings(EnvSettings):
    listen_address: str = Field(default="127.0.0.1:8080", alias="LISTEN_ADDRESS",
                                pattern=r"^\S+:\d{1,5}$")
    database_url: str = Field(alias="DATABASE_URL", min_length=1)
    broker_url: str = Field(alias="BROKER_URL", pattern=r"^https?://\S+$")
    schema_name: str = Field(default=SCHEMA, alias="BATCH_SCHEMA",
                             pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    batch_size: int = Field(default=BATCH_SIZE, alias="BATCH_SIZE", ge=1, le=10_000)
    concurrency: int = Field(default=CONCURRENCY, alias="BATCH_CONCURRENCY", ge=1, le=256)
    drain_budget: float = Field(default=20.0, alias="DRAIN_BUDGET_SECONDS", gt=0, le=600)
    log_level: str = Field(default="INFO", alias="LOG_LEVEL",
                           pattern="^(DEBUG|INFO|WARNING|ERROR)$")


class BatchReaderApp:
    """The ASGI application. The reader is opened by the lifespan (or `start`)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.reader: Reader | None = None

    async def start(self) -> None:
        self.open()

    def open(self) -> None:
        """Open the reader (synchronous, for func-python's `start`: batch/knative.py)."""
        s = self.settings
        # Not waiting for the database: one that comes up later makes it ready later.
        self.reader = Reader(s.database_url, s.broker_url, schema=s.schema_name,
                             batch_size=s.batch_size, concurrency=s.concurrency,
                             open_wait=False)

    async def stop(self) -> None:
        if self.reader is not None:
            await asyncio.to_thread(self.reader.close)
            self.reader = None

    async def __call__(self, scope: Mapping[str, Any], receive: wire.Receive,
                       send: wire.Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("path", "/")
        if scope.get("method") == "GET" and path in (LIVENESS, READINESS):
            await self._health(send, path)
            return
        event_id: str | None = None
        try:
            if path != "/":
                raise NotFound(f"no such path: {path}", field="path")
            request = await wire.decode_request(scope, receive)
            if isinstance(request, wire.Rejected):
                raise request.error
            event_id = request.get_id()
            if request.get_type() != PING:
                raise UnknownEventType(request.get_type())
            await self._drain(event_id)
            await wire.send_response(send, 202, {}, b"")
        except EventworksError as error:
            await self._refuse(send, error, event_id)
        except Exception:
            log.exception("ping failed", extra={"event_id": event_id})
            await wire.send_response(send, 500, PROBLEM,
                                     wire.problem(500, None, event_id=event_id))

    async def _drain(self, event_id: str) -> None:
        if self.reader is None:
            raise Unavailable("the batch reader is starting", retry_after=1)
        try:
            drained = await asyncio.to_thread(self.reader.drain, self.settings.drain_budget)
        except Exception as exc:  # the database: refused, timed out, restarted
            log.warning("drain failed", extra={"event_id": event_id, "error": repr(exc)})
            raise Unavailable("the database is not reachable", retry_after=5) from None
        if drained.ended == "stalled":
            raise Unavailable(f"the broker accepted none of {drained.failed} pending "
                              "requests; they stay pending", retry_after=5)
        if drained.ended == "budget":
            log.info("drain budget spent; the next tick goes on",
                     extra={"event_id": event_id, "published": drained.published})

    async def _health(self, send: wire.Send, path: str) -> None:
        ok, message = True, "alive"
        if path == READINESS:
            ok, message = await self._ready()
        await wire.send_response(send, 200 if ok else 503, {"content-type": "text/plain"},
                                 message.encode())

    async def _ready(self) -> tuple[bool, str]:
        if self.reader is None:
            return False, "starting"
        try:
            await asyncio.wait_for(asyncio.to_thread(self.reader.check), timeout=3.0)
        except Exception as exc:
            return False, f"database unreachable: {type(exc).__name__}"
        return True, "database: ok"

    async def _refuse(self, send: wire.Send, error: EventworksError,
                      event_id: str | None) -> None:
        status = status_of(error)
        headers = dict(PROBLEM)
        if isinstance(error, Unavailable):
            headers["retry-after"] = str(error.retry_after)
        log.warning("event refused", extra={"status": status, "problem": error.slug,
                                            "detail": error.detail, "event_id": event_id})
        await wire.send_response(send, status, headers,
                                 wire.problem(status, error, event_id=event_id))

    async def _lifespan(self, receive: wire.Receive, send: wire.Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def serve(settings: ServerSettings) -> None:
    app = BatchReaderApp(settings)
    host, _, port = settings.listen_address.rpartition(":")
    server = uvicorn.Server(uvicorn.Config(
        app, host=host.strip("[]"), port=int(port), http="httptools", loop="none",
        lifespan="on", access_log=False, log_config=None, timeout_graceful_shutdown=5))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("batch reader listening", extra={"url": f"http://{settings.listen_address}/"})
    serving = asyncio.create_task(server.serve())
    told = asyncio.create_task(stopping.wait())
    await asyncio.wait({serving, told}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    told.cancel()
    await serving
    if not server.started:
        raise RuntimeError("the server did not start (see the log)")


def main(env: Mapping[str, str]) -> int:
    settings = logs.started("batch-reader", ServerSettings, env)
    if settings is None:
        return 2
    import uvloop

    try:
        uvloop.run(serve(settings))
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        log.error("batch reader stopped", extra={"error": str(exc)})
        return 1
    return 0
