"""The function edge: decode → validate → route by type → act → answer.

Every function is an `Edge` subclass with a table of routes (event type → data
model + handler). The edge owns what is the same everywhere: the status rules
of the Knative data plane, problem+json errors, the idempotency inbox in the
same transaction as the handler's effects, logging, and the func-python
lifecycle (`start`, `stop`, `alive`, `ready`). Handlers see typed values only,
never the SDK's CloudEvent object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ValidationError

from eventing import auth, inbox, logs, wire
from eventing.errors import (
    Conflict,
    EventworksError,
    Forbidden,
    InvalidEvent,
    MethodNotAllowed,
    NotBuilt,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnknownEventType,
)
from eventing.settings import Settings, SettingsError

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    # Imported when used (cold start): only functions with a schema need psycopg, only
    # those with an outbox its HTTP client.
    from eventing.database import Database
    from eventing.outbox import Relay

log = logging.getLogger("eventing.edge")

# The one place errors become statuses (DESIGN §3, Knative's retry rules):
# 400/401/403/405/413 are final and dead-lettered; 404, 409, 503 are retried.
STATUS: Mapping[type[EventworksError], int] = {
    PayloadTooLarge: 413,
    UnknownEventType: 400,
    InvalidEvent: 400,
    MethodNotAllowed: 405,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
    NotBuilt: 501,
}

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound=Settings)


def status_of(error: EventworksError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


@dataclass(frozen=True)
class Envelope:
    """The attributes of the incoming event a handler may look at."""

    id: str
    source: str
    type: str
    subject: str | None
    time: datetime | None
    traceparent: str | None
    # CloudEvents Auth Context: who acts. Only a trusted edge sets these (the broker
    # ingress after verifying a bearer token); the ingress drops any a client sent.
    authtype: str | None = None
    authid: str | None = None
    # Our extension beside them: the verified token's role (eventing.auth.ROLES).
    authrole: str | None = None


@dataclass(frozen=True)
class Delivery(Generic[M]):
    """One event for a handler: its envelope, its validated data, and the open
    transaction its effects must use (None for a function without a database)."""

    envelope: Envelope
    data: M
    tx: AsyncConnection | None


@dataclass(frozen=True)
class Reply:
    """A handler's answer that is an event: the broker publishes it."""

    type: str
    data: BaseModel
    subject: str | None = None


Handler = Callable[[Delivery[M]], Awaitable[Reply | None]]


@dataclass(frozen=True)
class Route(Generic[M]):
    model: type[M]
    handler: Handler[M]
    # True when the handler would answer 202 and do nothing, whatever its store holds (a
    # pure test of the event): the edge answers so without a transaction or an inbox row
    # (with no effect there is nothing to deduplicate), so such events cost no I/O.
    ignores: Callable[[M], bool] | None = None


Statement = Callable[[Delivery[M], bytes], Awaitable["inbox.Recorded | inbox.Known"]]


@dataclass(frozen=True)
class OneStatement(Generic[M]):
    """A route whose whole effect is one statement that also claims the event's inbox row
    and records its answer (a database function of the function's schema, keyed by the
    envelope's (source, id) as `inbox.claim` is). The edge opens no transaction for it:
    `handler` gets the delivery with `tx` in autocommit, where that statement is its own
    transaction (one round trip; all of it commits or none), and the event's digest
    (`inbox.digest`). It returns the answer it recorded, or, when the inbox already had
    the event, what it holds (`inbox.Known`: the edge answers it again or refuses other
    data with 409, as for any route). It must make no other statement: a second one would
    commit on its own."""

    model: type[M]
    handler: Statement[M]
    ignores: Callable[[M], bool] | None = None


# What `Edge.routes` maps an event type to.
AnyRoute = Route[Any] | OneStatement[Any]


def _field_path(loc: tuple[int | str, ...]) -> str:
    return "data" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def validate(model: type[M], raw: Any) -> M:
    """The event's data as its model, or InvalidEvent naming every bad field."""
    try:
        if isinstance(raw, str | bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [{"field": _field_path(e["loc"]), "message": e["msg"]}
                  for e in exc.errors(include_url=False, include_input=False)]
        first = errors[0]
        raise InvalidEvent(
            f"data is not a valid {model.__name__}: {first['field']}: {first['message']}",
            field=first["field"], errors=errors) from None


def authorization_of(scope: Mapping[str, Any]) -> str | None:
    """The request's Authorization header, if it has one."""
    return next((value.decode("latin-1") for name, value in scope.get("headers", ())
                 if name.lower() == b"authorization"), None)


def envelope_of(event: BaseCloudEvent, actor: auth.Identity | None = None) -> Envelope:
    """`actor`: who a token verified at this edge names; it replaces whatever Auth
    Context the event carries. None: the event's own, which only the broker sets."""
    def text(name: str) -> str | None:
        value = event.get_attributes().get(name)
        return None if value is None else str(value)

    context: Mapping[str, str | None] = (
        actor.context() if actor is not None
        else {name: text(name) for name in (auth.AUTHTYPE, auth.AUTHID, auth.AUTHROLE)})
    return Envelope(id=event.get_id(), source=event.get_source(), type=event.get_type(),
                    subject=event.get_subject(), time=event.get_time(),
                    traceparent=text("traceparent"), authtype=context.get(auth.AUTHTYPE),
                    authid=context.get(auth.AUTHID), authrole=context.get(auth.AUTHROLE))


class Edge(Generic[S]):
    """Base of every function instance that `new()` returns."""

    name: ClassVar[str]                 # the function's name; replies come from /eventworks/<name>
    schema: ClassVar[str | None] = None  # its PostgreSQL schema, if it keeps state
    # Whether it publishes facts through its schema's outbox (`publish`), relayed to K_SINK.
    outbox: ClassVar[bool] = False
    settings_type: type[S]

    def __init__(self) -> None:
        wire.install()
        logs.configure(self.name)
        self._settings: S | None = None
        self._db: Database | None = None
        self._routes: Mapping[str, AnyRoute] = {}
        self._start_error: str | None = None
        self._verifier: auth.Verifier | None = None
        self._relay: Relay | None = None

    # -- what each function provides -------------------------------------------------
    def routes(self) -> Mapping[str, AnyRoute]:
        """Event type → (data model, handler)."""
        raise NotImplementedError

    def route_for(self, event_type: str) -> AnyRoute:
        route = self._routes.get(event_type)
        if route is None:
            raise UnknownEventType(event_type)
        return route

    # -- func-python lifecycle ---------------------------------------------------------
    @property
    def settings(self) -> S:
        if self._settings is None:
            raise RuntimeError("the function has not been started")
        return self._settings

    def start(self, cfg: Mapping[str, str]) -> None:
        try:
            self._start(cfg)
        except Exception as exc:
            # Hypercorn swallows lifespan errors and serves on; say why loudly, and stay
            # not-ready so that no orchestrator routes events here.
            self._start_error = f"{type(exc).__name__}: {exc}"
            log.critical("the function could not start", extra={"error": self._start_error})
            raise

    def _start(self, cfg: Mapping[str, str]) -> None:
        settings = self.settings_type.from_env(cfg)
        logs.configure(self.name, settings.log_level)
        wire.max_event_bytes = settings.max_event_bytes
        if self.schema is not None:
            if not settings.database_url:
                raise SettingsError(f"{self.name} keeps state in PostgreSQL: set DATABASE_URL")
            from eventing.database import Database

            self._db = Database(settings.database_url, self.schema,
                                pool_size=settings.database_pool_size)
            self._db.open_soon()
        verifies: object = settings  # a function's settings that mix in AuthSettings
        if isinstance(verifies, auth.AuthSettings):
            self._verifier = auth.Verifier(verifies)
        if self.outbox:
            self._start_relay(settings)
        self._settings = settings
        self._routes = self.routes()
        log.info("function started")

    def _start_relay(self, settings: S) -> None:
        if self._db is None:
            raise SettingsError(f"{self.name} publishes through an outbox: it needs a schema")
        if settings.k_sink is None:
            # Nothing is lost: the facts wait in the outbox for a relay that has a sink.
            log.warning("no K_SINK (no SinkBinding): facts stay in the outbox")
            return
        from eventing.outbox import Relay

        self._relay = Relay(self._db, settings.k_sink)
        self._relay.start()

    def stop(self) -> None:
        if self._relay is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._relay.stop())
            self._relay = None
        if self._db is not None:
            self._db.close_soon()
        log.info("function stopping")

    async def aclose(self) -> None:
        """Close the stores and wait for it (tests, benchmarks); `stop` cannot wait."""
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        if self._settings is None:
            return False, f"not started: {self._start_error or 'starting'}"
        if self._db is not None:
            return self._db.ready()
        return True, "ready"

    async def publish(self, delivery: Delivery[Any], type: str, data: BaseModel,
                      subject: str | None = None) -> str:
        """Publish a fact with the delivery's effects: into the outbox, in its transaction."""
        if not self.outbox or delivery.tx is None:
            raise RuntimeError(f"{self.name} has no outbox (set `outbox = True` and a schema)")
        from eventing import outbox

        return await outbox.put(delivery.tx, source=f"/eventworks/{self.name}", type=type,
                                data=data, subject=subject,
                                traceparent=delivery.envelope.traceparent)

    # -- the request path --------------------------------------------------------------
    async def handle(self, scope: dict[str, Any], receive: wire.Receive, send: wire.Send) -> None:
        started = time.perf_counter()
        request = scope.get("event")
        event_id: str | None = None
        status = 500
        try:
            # Who may call at all comes first: a caller refused learns nothing of the event.
            await self.admit(authorization_of(scope))
            if isinstance(request, wire.Rejected):
                raise request.error
            if not isinstance(request, CloudEvent):
                raise InvalidEvent("only CloudEvents 1.0 are accepted", field="specversion")
            event_id = request.get_id()
            with logs.bound(event_id=request.get_id(), event_type=request.get_type(),
                            event_source=request.get_source(),
                            traceparent=request.get_attributes().get("traceparent")):
                actor = await self._actor(scope)
                status, reply = await self._answer(request, actor)
                if reply is None:
                    await wire.send_response(send, status, {}, b"")
                else:
                    await wire.send_event(send, _rebuild(reply), status)
                log.info("event handled", extra={
                    "status": status, "ms": round((time.perf_counter() - started) * 1000, 2)})
        except EventworksError as error:
            status = status_of(error)
            headers = {"content-type": "application/problem+json"}
            if isinstance(error, Unavailable):
                headers["retry-after"] = str(error.retry_after)
            log.warning("event refused", extra={"status": status, "problem": error.slug,
                                                "field": error.field, "detail": error.detail,
                                                "event_id": event_id})
            await wire.send_response(send, status, headers,
                                     wire.problem(status, error, event_id=event_id))
        except Exception:
            log.exception("event failed", extra={"event_id": event_id})
            await wire.send_response(send, 500, {"content-type": "application/problem+json"},
                                     wire.problem(500, None, event_id=event_id))

    async def admit(self, authorization: str | None) -> None:
        """Refuse a direct caller this function does not answer (Unauthorized, Forbidden),
        given the request's Authorization header. By default every caller the network
        lets through is answered; a function reached by named callers only checks their
        caller tokens here (eventing.callers.Callers)."""

    async def _actor(self, scope: Mapping[str, Any]) -> auth.Identity | None:
        """A direct call's bearer token, verified here when the function is configured to
        verify tokens: it is then its own trusted edge. Otherwise (no token, or a function
        that verifies none) the event's Auth Context stands, as the broker set it. A
        function that verifies none ignores the header: in a cluster, Knative's dispatcher
        may send its own (OIDC) token, which names no user."""
        if self._verifier is None or not self._verifier.configured:
            return None
        token = auth.bearer(authorization_of(scope))
        if token is None:
            return None
        return await self._verifier.verified(token)

    async def _answer(self, event: BaseCloudEvent,
                      actor: auth.Identity | None = None) -> tuple[int, dict[str, Any] | None]:
        envelope = envelope_of(event, actor)
        route = self.route_for(envelope.type)
        raw = event.get_data()
        data = validate(route.model, raw)
        if route.ignores is not None and route.ignores(data):
            return 202, None
        if self._db is None:
            if isinstance(route, OneStatement):
                raise RuntimeError(f"{self.name}: a OneStatement route needs a schema")
            reply = await route.handler(Delivery(envelope, data, None))
            answer = self._recorded(reply, envelope)
            return answer.status, answer.reply
        digest = inbox.digest(envelope.type, envelope.subject, raw, envelope.authid)
        if isinstance(route, OneStatement):
            async with self._db.autocommit() as conn:
                outcome = await route.handler(Delivery(envelope, data, conn), digest)
            if isinstance(outcome, inbox.Known):
                log.info("redelivery answered from the inbox")
                answer = inbox.again(envelope.source, envelope.id, digest, outcome)
                return answer.status, answer.reply
            if self._relay is not None:
                self._relay.wake()
            return outcome.status, outcome.reply
        async with self._db.transaction() as tx:
            known = await inbox.claim(tx, envelope.source, envelope.id, digest)
            if known is not None:
                log.info("redelivery answered from the inbox")
                return known.status, known.reply
            reply = await route.handler(Delivery(envelope, data, tx))
            answer = self._recorded(reply, envelope)
            await inbox.record(tx, envelope.source, envelope.id, answer)
        if self._relay is not None:
            self._relay.wake()  # committed: what it wrote to the outbox may go now
        return answer.status, answer.reply

    def _recorded(self, reply: Reply | None, incoming: Envelope) -> inbox.Recorded:
        if reply is None:
            return inbox.Recorded(status=202, reply=None)
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": f"/eventworks/{self.name}",
            "type": reply.type,
            "time": datetime.now(UTC).isoformat(),
            "datacontenttype": "application/json",
        }
        if reply.subject is not None:
            attributes["subject"] = reply.subject
        if incoming.traceparent is not None:
            attributes["traceparent"] = incoming.traceparent
        # by_alias: some fields are named as on the wire, where Python cannot (`from`).
        data = reply.data.model_dump(mode="json", by_alias=True)
        return inbox.Recorded(status=200, reply={"attributes": attributes, "data": data})


def _rebuild(stored: Mapping[str, Any]) -> CloudEvent:
    # A fresh attributes dict every time: the SDK writes defaults into the dict it gets.
    attributes = dict(stored["attributes"])
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    return CloudEvent(attributes, stored["data"])


class NotBuiltEdge(Edge[Settings]):
    """A function whose capability has its own issue: every event → 501."""

    settings_type = Settings

    def routes(self) -> Mapping[str, Route[Any]]:
        return {}

    def route_for(self, event_type: str) -> AnyRoute:
        raise NotBuilt(f"{self.name} does not handle events yet: its capability is not built")
