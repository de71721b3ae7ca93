"""The public edge of eventworks: the one thing a cluster exposes, and the signing page's
server on one laptop.

    POST /events            a CloudEvent → the Broker, with the Auth Context this edge
                            vouches for (broker/admission.py)
    POST /github            a GitHub webhook whose X-Hub-Signature-256 verifies → the
                            CloudEvent GitHubSource emits → the Broker
    GET  /, /<file>         the signing page's files (index.html, *.js, *.css)
    GET  /health/readiness, /health/liveness

`/events` takes two kinds of sender:

- a client with `Authorization: Bearer <jwt>`: the token is verified (eventing/auth.py)
  and the event goes on with `authtype=app_user`, `authid=<sub>`, `authrole=<role>`; any
  Auth Context the client wrote is dropped; a token that does not verify is a 401. This
  is what makes todo-crud's and accrue-payment's commands trustworthy in a cluster, where
  the Kafka Broker's own ingress verifies no user tokens.
- the signing page, tokenless: only the types of `PAGE_EVENTS`, structured mode, source
  `/eventworks/signing-page`, data that validates against the type's model (400 naming
  the field otherwise); they go on with `authtype=unauthenticated`. Any other tokenless
  event is a 401 where this edge verifies tokens, and a 400 where it verifies none (the
  local signing page server, which only ever forwards the page's events).

Everything admitted is posted to the sink (K_SINK: the Broker's ingress, from the
gateway's SinkBinding; locally BROKER_URL) in binary content mode, with the SinkBinding's
OIDC token (eventing/oidc.py) when Knative gave it one. The Broker's 2xx is a 202; its
400/413/415 (the event's own fault) go back as they came; anything else, and a Broker that
cannot be reached, is a 503 with Retry-After: the client retries.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field, SecretStr, field_validator

from broker import admission
from eventing import auth, logs, oidc, wire
from eventing.edge import validate
from eventing.errors import (
    EventworksError,
    InvalidEvent,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
    Unavailable,
)
from eventing.events import BOUNTY_SIGNED, IDENTITY_LINK, BountySigned, IdentityLink
from eventing.settings import ONE_MIB

log = logging.getLogger("broker.gateway")

EVENTS = "/events"
LIVENESS = "/health/liveness"
READINESS = "/health/readiness"
SOURCE = "/eventworks/signing-page"
# What the page makes, and the model its data must pass: nothing else goes on tokenless.
PAGE_EVENTS: Mapping[str, type[BaseModel]] = {
    BOUNTY_SIGNED: BountySigned,
    IDENTITY_LINK: IdentityLink,
}
FORWARD_TIMEOUT_SECONDS = 10.0
# A file directly in the page's folder: no path separators, no dot files.
FILE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(html|js|css)$")
CONTENT_TYPES: Mapping[str, str] = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
# The page runs only its own script and talks only to its own origin; the URL carries
# the bounty, so it is not sent on as a referrer.
PAGE_HEADERS: Mapping[str, str] = {
    "content-security-policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}
# The Broker's refusals that are the event's own fault, passed back as they came.
EVENT_FAULTS = frozenset({400, 413, 415})
KEPT_HEADERS = ("content-type", "retry-after")


def page_event(received: admission.Received, *, tokens: bool) -> None:
    """Raise unless a tokenless request is one of the page's own events. `tokens`: this
    edge verifies bearer tokens, so another event is a 401 (send a token), not a 400."""
    attributes = received.event.get_attributes()
    model = PAGE_EVENTS.get(str(attributes.get("type")))
    if model is None:
        message = f"the signing page sends only {', '.join(PAGE_EVENTS)}"
        if tokens:
            raise Unauthorized(f"{message}; other events need a bearer token",
                               field="header authorization")
        raise InvalidEvent(message, field="type")
    if received.headers.get("content-type", "").split(";")[0].strip().lower() != wire.STRUCTURED:
        raise InvalidEvent(f"the page posts {wire.STRUCTURED}", field="content-type")
    if attributes.get("source") != SOURCE:
        raise InvalidEvent(f"the page's events have source {SOURCE}", field="source")
    validate(model, received.event.get_data())


class GatewaySettings(auth.AuthSettings):
    """The gateway's environment in a cluster (gateway/func.yaml), validated once, with
    how it verifies bearer tokens (JWT_SECRET, JWT_JWKS_FILE, JWT_JWKS_URL, JWT_ISSUER,
    JWT_AUDIENCE: the settings the local broker ingress reads)."""

    # The Broker's ingress, injected by the SinkBinding `gateway` (knative/base/gateway.yaml).
    sink: str = Field(alias="K_SINK", pattern=r"^https?://\S+$")
    # Without it, POST /github answers 503: unsigned webhooks are never accepted.
    github_webhook_secret: SecretStr | None = Field(default=None, alias="GITHUB_WEBHOOK_SECRET")
    # The page's files; staged into the function package by deploy/stage.py.
    signing_page_dir: Path | None = Field(default=None, alias="SIGNING_PAGE_DIR")
    max_event_bytes: int = Field(default=ONE_MIB, alias="MAX_EVENT_BYTES", gt=0)
    log_level: str = Field(default="INFO", alias="LOG_LEVEL",
                           pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    # Where Knative mounts the SinkBinding's OIDC token (eventing/oidc.py).
    oidc_token_file: Path = Field(default=oidc.TOKEN_FILE, alias="OIDC_TOKEN_FILE")

    @field_validator("github_webhook_secret", "signing_page_dir", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class Gateway:
    """The edge as a raw ASGI app. `verifier`: how bearer tokens are verified (None or
    unconfigured: none are, and only the page's events go on); `webhook_secret`: GitHub's
    (None: `/github` answers 503); `sink`: where admitted events are posted."""

    def __init__(self, sink: str, page: Path, *, verifier: auth.Verifier | None = None,
                 webhook_secret: SecretStr | None = None, max_event_bytes: int = ONE_MIB,
                 client: httpx.AsyncClient | None = None,
                 token_file: Path = oidc.TOKEN_FILE) -> None:
        self.sink = sink
        self.page = page
        self.verifier = verifier if verifier is not None and verifier.configured else None
        self.webhook_secret = webhook_secret
        self.max_event_bytes = max_event_bytes
        self.client = client or httpx.AsyncClient(timeout=FORWARD_TIMEOUT_SECONDS)
        self.token_file = token_file
        self._posts: Mapping[str, Callable[[MutableMapping[str, Any], wire.Receive, wire.Send],
                                           Awaitable[None]]] = {
            EVENTS: self.events, "/github": self.github}

    @classmethod
    def of(cls, settings: GatewaySettings, page: Path) -> Gateway:
        """The gateway of a cluster: `page` unless SIGNING_PAGE_DIR names another folder."""
        return cls(settings.sink, settings.signing_page_dir or page,
                   verifier=auth.Verifier(settings),
                   webhook_secret=settings.github_webhook_secret,
                   max_event_bytes=settings.max_event_bytes,
                   token_file=settings.oidc_token_file)

    async def close(self) -> None:
        await self.client.aclose()

    async def __call__(self, scope: MutableMapping[str, Any], receive: wire.Receive,
                       send: wire.Send) -> None:
        if scope["type"] == "lifespan":
            await wire.lifespan(receive, send)
            await self.close()
            return
        if scope["type"] != "http":
            return
        path, method = scope.get("path", "/").rstrip("/") or "/", scope.get("method", "GET")
        post = self._posts.get(path)
        try:
            if post is not None:
                await post(scope, receive, send)
            elif path in (LIVENESS, READINESS):
                await wire.send_response(send, 200, {"content-type": "text/plain"}, b"OK")
            elif method in ("GET", "HEAD"):
                await self.file(path, send, head=method == "HEAD")
            else:
                raise MethodNotAllowed("the page's files are read with GET", field="method")
        except EventworksError as error:
            await admission.refuse(send, error, None, log, allow="POST" if post else "GET, HEAD")

    async def file(self, path: str, send: wire.Send, *, head: bool) -> None:
        name = "index.html" if path == "/" else path.removeprefix("/")
        match = FILE_NAME.match(name)
        target = self.page / name
        if match is None or not target.is_file():
            raise NotFound(f"no file {path}", field="path")
        body = target.read_bytes()
        headers = {**PAGE_HEADERS, "content-type": CONTENT_TYPES[match.group(1)]}
        await wire.send_response(send, 200, headers, b"" if head else body)

    async def events(self, scope: MutableMapping[str, Any], receive: wire.Receive,
                     send: wire.Send) -> None:
        received = await admission.receive(scope, receive)
        authorization = received.headers.get("authorization")
        if authorization is None:
            page_event(received, tokens=self.verifier is not None)
            context = auth.UNAUTHENTICATED_CONTEXT
        elif self.verifier is None:
            raise Unauthorized("this edge verifies no bearer tokens",
                               field="header authorization")
        else:
            context = await self.verifier.context(authorization)
        event = received.event
        with logs.bound(event_id=event.get_id(), event_type=event.get_type(),
                        event_source=event.get_source()):
            await self.forward(admission.admit_received(received, context), send)

    async def github(self, scope: MutableMapping[str, Any], receive: wire.Receive,
                     send: wire.Send) -> None:
        delivery, admitted = await admission.github(scope, receive, self.webhook_secret,
                                                    self.max_event_bytes)
        with logs.bound(event_id=delivery.delivery_id, github_event=delivery.event):
            await self.forward(admitted, send)

    async def forward(self, admitted: admission.Admitted, send: wire.Send) -> None:
        headers = {**admitted.http_headers(), **oidc.authorization(self.token_file)}
        try:
            answer = await self.client.post(self.sink, content=admitted.value,
                                            headers=headers)
        except httpx.HTTPError as exc:
            log.warning("the broker cannot be reached", extra={"error": str(exc)})
            raise Unavailable("the broker cannot be reached; try again") from None
        status = answer.status_code
        log.info("event forwarded", extra={"status": status})
        if 200 <= status < 300:
            await wire.send_response(send, 202, {}, b"")
        elif status in EVENT_FAULTS:
            kept = {k: v for k, v in answer.headers.items() if k.lower() in KEPT_HEADERS}
            await wire.send_response(send, status, kept, answer.content)
        else:
            # 401/403 here mean the Broker does not admit this gateway (EventPolicy, OIDC):
            # the operator's to fix, and the client's to retry once fixed.
            log.error("the broker refused the event", extra={"status": status})
            raise Unavailable(f"the broker answered {status}; try again")
