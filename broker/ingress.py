"""The broker ingress: HTTP CloudEvents in, Kafka records (binary content mode) out.

The shape of Knative's Kafka broker receiver (DESIGN §6): `POST /<namespace>/<broker>`
with a binary or structured CloudEvent; the event is produced to the topic
`knative-broker-<namespace>-<broker>` with acks=all and answered 202 only once Kafka
acknowledged it. An invalid event is answered with its problem+json status and
never produced; a Kafka failure or timeout is a 503 with Retry-After, so the
sender retries.

Record layout (CloudEvents Kafka protocol binding, binary content mode): the
value is the event's data bytes (the HTTP body as received in binary mode; the
`data` member serialised, or `data_base64` decoded, in structured mode), every
attribute is a `ce_<name>` header (time in RFC 3339), `datacontenttype` is the
`content-type` header, and the `partitionkey` extension is the record key.

`POST /github` (`GITHUB_WEBHOOK_URL`) is the GitHubSource: a GitHub webhook whose
`X-Hub-Signature-256` verifies against `GITHUB_WEBHOOK_SECRET` becomes the CloudEvent
GitHubSource emits (`broker/webhook.py`) and goes to the same topic the same way.

Two deliberate differences from a plain re-encoding of the SDK's event:
- `time` is stored only when the sender set it (the SDK fills in "now" when it is
  absent; a broker does not invent attributes).
- The CloudEvents Auth Context is the ingress's own, never the client's (DESIGN §4):
  any `authtype`/`authid`/`authrole`/`authclaims` sent is dropped; a request with
  `Authorization: Bearer <jwt>` that verifies (eventing/auth.py) is stored with
  `authtype=app_user`, `authid=<sub>`, `authrole=<role>`, one without a token with
  `authtype=unauthenticated`; a token that does not verify is a 401, nothing stored.
  Webhooks (`/github`) are authenticated by their HMAC, as GitHub's: no Auth Context.

What is admitted, and in which form, is broker/admission.py's: the same rules the
gateway (broker/gateway.py), a cluster's public edge, applies before it posts to the
Knative Broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from confluent_kafka import KafkaException
from pydantic import Field, SecretStr, field_validator

from broker import admission, topics, webhook
from eventing import auth, logs, wire
from eventing.errors import (
    EventworksError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from eventing.settings import ONE_MIB

log = logging.getLogger("broker.ingress")

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"  # a Kubernetes name, also a valid topic part
LIVENESS = "/health/liveness"
READINESS = "/health/readiness"
PROBLEM = admission.PROBLEM


class IngressSettings(auth.AuthSettings):
    """The environment of `python -m broker`, validated once (with how it verifies bearer
    tokens: JWT_SECRET, JWT_JWKS_FILE, JWT_JWKS_URL, JWT_ISSUER, JWT_AUDIENCE)."""

    listen_address: str = Field(default="127.0.0.1:8080", alias="LISTEN_ADDRESS",
                                pattern=r"^\S+:\d{1,5}$")
    kafka_bootstrap_servers: str = Field(alias="KAFKA_BOOTSTRAP_SERVERS",
                                         pattern=r"^\S+:\d{1,5}(,\S+:\d{1,5})*$")
    namespace: str = Field(default="eventworks", alias="BROKER_NAMESPACE", pattern=DNS_LABEL)
    name: str = Field(default="default", alias="BROKER_NAME", pattern=DNS_LABEL)
    partitions: int = Field(default=4, alias="BROKER_PARTITIONS", ge=1, le=1000)
    produce_timeout_ms: int = Field(default=5000, alias="BROKER_PRODUCE_TIMEOUT_MS",
                                    ge=1000, le=120_000)
    startup_timeout_s: float = Field(default=30.0, alias="BROKER_STARTUP_TIMEOUT_SECONDS", gt=0)
    max_event_bytes: int = Field(default=ONE_MIB, alias="MAX_EVENT_BYTES", gt=0)
    log_level: str = Field(default="INFO", alias="LOG_LEVEL",
                           pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    # Without it, POST /github answers 503: unsigned webhooks are never accepted.
    github_webhook_secret: SecretStr | None = Field(default=None, alias="GITHUB_WEBHOOK_SECRET")

    @field_validator("github_webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


    @property
    def topic(self) -> str:
        return f"knative-broker-{self.namespace}-{self.name}"

    @property
    def path(self) -> str:
        return f"/{self.namespace}/{self.name}"

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()]


class StartupError(Exception):
    """Kafka could not be reached (or the topic created) within the startup timeout."""


# -- CloudEvent → Kafka record (binary content mode) ----------------------------------

@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def record_of(admitted: admission.Admitted) -> Record:
    """The Kafka spelling of an admitted event: `ce_<name>` headers, `content-type`."""
    return Record(key=admitted.key, value=admitted.value, headers=[
        ("content-type" if name == admission.DATACONTENTTYPE else f"ce_{name}", text.encode())
        for name, text in admitted.attributes])


def to_record(event: BaseCloudEvent, body: bytes, *, binary: bool,
              sent_time: bool = True, context: Mapping[str, str] | None = None) -> Record:
    """The Kafka record of `event`; `body` is the HTTP body it was decoded from.
    `context`: the Auth Context this ingress vouches for (the client's is dropped)."""
    return record_of(admission.admit(event, body, binary=binary, sent_time=sent_time,
                                     context=context))


# -- the ASGI application --------------------------------------------------------------

class Ingress:
    """The broker ingress as a raw ASGI app, with its Kafka producer.

    `start()` (blocking) creates the topic and the producer; `close()` (blocking)
    flushes and closes it. Between the two, `await ingress(scope, receive, send)`.
    """

    def __init__(self, settings: IngressSettings) -> None:
        self.settings = settings
        self._writer: topics.Writer | None = None
        self._closing = False
        self._verifier = auth.Verifier(settings)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        wire.max_event_bytes = self.settings.max_event_bytes
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while True:
            try:
                topics.ensure_topic(self.settings.bootstrap_servers, self.settings.topic,
                                    self.settings.partitions,
                                    client_id=f"eventworks-broker-{self.settings.name}-admin")
                break
            except (KafkaException, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise StartupError(
                        f"Kafka at {self.settings.kafka_bootstrap_servers} was not usable within "
                        f"{self.settings.startup_timeout_s:g} s: {exc}") from exc
                log.warning("kafka not usable yet, retrying", extra={"error": str(exc)})
                time.sleep(0.5)
        self._writer = topics.Writer(self.settings.bootstrap_servers,
                                     client_id=f"eventworks-broker-{self.settings.name}",
                                     timeout_ms=self.settings.produce_timeout_ms,
                                     max_event_bytes=self.settings.max_event_bytes)
        log.info("broker ingress started", extra={
            "topic": self.settings.topic, "path": self.settings.path,
            "kafka": self.settings.kafka_bootstrap_servers})

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what was accepted and close the writer (blocking; idempotent)."""
        self._closing = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close(timeout)
        log.info("broker ingress stopped")

    async def ready(self) -> tuple[bool, str]:
        """Ready when started and a bootstrap server accepts a connection.

        A TCP connect to a bootstrap server is the cheap check; a produce would
        write to the topic.
        """
        if self._writer is None or self._closing:
            return False, "not connected to Kafka"
        for server in self.settings.bootstrap_servers:
            host, port = split_address(server)
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout=1.0)
            except (OSError, TimeoutError):
                continue
            writer.close()
            return True, "ready"
        return False, f"Kafka at {self.settings.kafka_bootstrap_servers} is unreachable"

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: wire.Receive,
                       send: wire.Send) -> None:
        if scope["type"] == "lifespan":
            await wire.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path in (LIVENESS, READINESS):
            await self._health(scope, send, path)
            return
        if path.rstrip("/") == webhook.PATH:
            await self._webhook(scope, receive, send)
            return
        if path.rstrip("/") != self.settings.path:
            await self._refuse(send, NotFound(
                f"no broker at {path}: events go to {self.settings.path}", field="path"), None)
            return
        await self._ingest(scope, receive, send)

    async def _health(self, scope: Mapping[str, Any], send: wire.Send, path: str) -> None:
        if scope.get("method") not in ("GET", "HEAD"):
            await self._refuse(send, MethodNotAllowed("health is read with GET", field="method"),
                               None, allow="GET, HEAD")
            return
        ok, detail = (True, "alive") if path == LIVENESS else await self.ready()
        body = json.dumps({"status": "ok" if ok else "unavailable", "detail": detail}).encode()
        await wire.send_response(send, 200 if ok else 503,
                                 {"content-type": "application/json"}, body)

    async def _ingest(self, scope: Mapping[str, Any], receive: wire.Receive,
                      send: wire.Send) -> None:
        started = time.perf_counter()
        event_id: str | None = None
        try:
            received = await admission.receive(scope, receive)
            request = received.event
            event_id = request.get_id()
            context = await self._verifier.context(received.headers.get("authorization"))
            record = record_of(admission.admit_received(received, context))
            with logs.bound(event_id=event_id, event_type=request.get_type(),
                            event_source=request.get_source()):
                metadata = await self._produce(record)
                # Per event: DEBUG, so the hot path does not format a log line by default.
                log.debug("event accepted", extra={
                    "partition": metadata.partition, "offset": metadata.offset,
                    "ms": round((time.perf_counter() - started) * 1000, 2)})
            await wire.send_response(send, 202, {}, b"")
        except EventworksError as error:
            await self._refuse(send, error, event_id)
        except Exception:
            log.exception("event failed", extra={"event_id": event_id})
            await wire.send_response(send, 500, PROBLEM, wire.problem(500, None,
                                                                      event_id=event_id))

    async def _webhook(self, scope: Mapping[str, Any], receive: wire.Receive,
                       send: wire.Send) -> None:
        """`POST /github`: a signed GitHub webhook → a GitHubSource CloudEvent in Kafka."""
        started = time.perf_counter()
        delivery_id: str | None = None
        try:
            delivery, admitted = await admission.github(
                scope, receive, self.settings.github_webhook_secret,
                self.settings.max_event_bytes)
            delivery_id = delivery.delivery_id
            attributes = dict(admitted.attributes)
            with logs.bound(event_id=delivery_id, event_type=attributes["type"],
                            event_source=attributes["source"]):
                metadata = await self._produce(record_of(admitted))
                log.info("github webhook accepted", extra={
                    "github_event": delivery.event, "partition": metadata.partition,
                    "offset": metadata.offset,
                    "ms": round((time.perf_counter() - started) * 1000, 2)})
            await wire.send_response(send, 202, {}, b"")
        except EventworksError as error:  # logged by _refuse: never the secret or signature
            await self._refuse(send, error, delivery_id)
        except Exception:
            log.exception("github webhook failed", extra={"event_id": delivery_id})
            await wire.send_response(send, 500, PROBLEM, wire.problem(500, None,
                                                                      event_id=delivery_id))

    async def _refuse(self, send: wire.Send, error: EventworksError, event_id: str | None,
                      allow: str = "POST") -> None:
        await admission.refuse(send, error, event_id, log, allow=allow)

    async def _produce(self, record: Record) -> topics.Stored:
        """Produce `record`; return where it is once Kafka acknowledged it (acks=all)."""
        writer = self._writer
        if writer is None or self._closing:
            raise Unavailable("the broker is not connected to Kafka")
        acked = writer.send(self.settings.topic, record.value, key=record.key,
                            headers=record.headers)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(acked),
                                          timeout=self.settings.produce_timeout_ms / 1000 + 2.0)
        except TimeoutError as exc:
            log.warning("produce timed out")
            raise Unavailable("Kafka did not acknowledge the event in time") from exc
        except topics.TooLarge as exc:
            raise PayloadTooLarge(f"the event is too large for Kafka: {exc}") from exc
        except topics.NotStored as exc:
            log.warning("produce failed", extra={"error": str(exc)})
            raise Unavailable("Kafka did not acknowledge the event; try again later") from exc


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (or `[v6]:port`) → (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
