"""The signing page's server: the static page, and `POST /events` forwarded to the broker.

`python -m stack.signing_page` (env `LISTEN_ADDRESS` host:port, `BROKER_URL`, optional
`SIGNING_PAGE_DIR`, default `signing-page/`) serves

    GET  /, /<file>         the page's files (index.html, *.js, *.css), nothing below them
    POST /events            a structured CloudEvent from the page → BROKER_URL
    GET  /health/readiness, /health/liveness

The page posts to its own origin because the broker ingress is another origin and
answers no CORS preflight; in a cluster the page's route sends `/events` to this same
guard in front of the broker ingress (docs/decisions.md, "The signing page").

The guard forwards only what the page makes: the types of `PAGE_EVENTS`, `source`
`/eventworks/signing-page`, data that validates against the type's model (problem+json
400 naming the field otherwise, before anything reaches the broker). It forwards the
body as it came; the broker's answer (202, or its problem) goes back to the page, and
a broker that cannot be reached is a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from eventing.edge import status_of, validate
from eventing.errors import (
    EventworksError,
    InvalidEvent,
    MethodNotAllowed,
    NotFound,
    Unavailable,
)
from eventing.events import BOUNTY_SIGNED, IDENTITY_LINK, BountySigned, IdentityLink
from eventing.wire import (
    STRUCTURED,
    Receive,
    Rejected,
    Send,
    decode_request,
    lifespan,
    problem,
    send_response,
)
from stack import asgi_server

log = logging.getLogger("stack.signing_page")

SOURCE = "/eventworks/signing-page"
# What the page makes, and the model its data must pass: nothing else is forwarded.
PAGE_EVENTS: Mapping[str, type[BaseModel]] = {
    BOUNTY_SIGNED: BountySigned,
    IDENTITY_LINK: IdentityLink,
}
FORWARD_TIMEOUT_SECONDS = 10.0
ROOT = Path(__file__).resolve().parent.parent
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
PROBLEM = {"content-type": "application/problem+json"}
RETRY_AFTER = {"retry-after": "1"}
class SigningPage:
    def __init__(self, folder: Path, broker_url: str,
                 client: httpx.AsyncClient | None = None) -> None:
        self.folder = folder
        self.broker_url = broker_url
        self.client = client or httpx.AsyncClient(timeout=FORWARD_TIMEOUT_SECONDS)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive,
                       send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            await self.client.aclose()
            return
        path, method = scope.get("path", "/"), scope.get("method", "GET")
        try:
            if path == "/events":
                if method != "POST":
                    raise MethodNotAllowed("events are sent with POST", field="method")
                await self.forward(scope, receive, send)
            elif path in ("/health/readiness", "/health/liveness"):
                await send_response(send, 200, {"content-type": "text/plain"}, b"OK")
            elif method in ("GET", "HEAD"):
                await self.file(path, send, head=method == "HEAD")
            else:
                raise MethodNotAllowed("the page's files are read with GET", field="method")
        except EventworksError as exc:
            status = status_of(exc)
            headers = {**PROBLEM, **RETRY_AFTER} if status == 503 else PROBLEM
            await send_response(send, status, headers, problem(status, exc, event_id=None))

    async def file(self, path: str, send: Send, *, head: bool) -> None:
        name = "index.html" if path == "/" else path.removeprefix("/")
        match = FILE_NAME.match(name)
        target = self.folder / name
        if match is None or not target.is_file():
            raise NotFound(f"no file {path}", field="path")
        body = target.read_bytes()
        headers = {**PAGE_HEADERS, "content-type": CONTENT_TYPES[match.group(1)]}
        await send_response(send, 200, headers, b"" if head else body)

    async def forward(self, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if headers.get("content-type", "").split(";")[0].strip().lower() != STRUCTURED:
            raise InvalidEvent(f"the page posts {STRUCTURED}", field="content-type")
        body = bytearray()

        async def replay() -> dict[str, Any]:
            # decode_request reads the body through this, and the bytes are kept to
            # forward as they came.
            message = dict(await receive())
            body.extend(message.get("body", b""))
            return message

        event = await decode_request(scope, replay)
        if isinstance(event, Rejected):
            raise event.error
        attributes = event.get_attributes()
        model = PAGE_EVENTS.get(str(attributes.get("type")))
        if model is None:
            raise InvalidEvent(f"the signing page sends only {', '.join(PAGE_EVENTS)}",
                               field="type")
        if attributes.get("source") != SOURCE:
            raise InvalidEvent(f"the page's events have source {SOURCE}", field="source")
        validate(model, event.get_data())
        try:
            answer = await self.client.post(self.broker_url, content=bytes(body),
                                            headers={"content-type": STRUCTURED})
        except httpx.HTTPError as exc:
            log.warning("the broker cannot be reached", extra={"error": str(exc)})
            raise Unavailable("the broker cannot be reached; try again") from None
        log.info("event forwarded", extra={"id": attributes.get("id"),
                                           "type": attributes.get("type"),
                                           "status": answer.status_code})
        kept = {k: v for k, v in answer.headers.items()
                if k.lower() in ("content-type", "retry-after")}
        await send_response(send, answer.status_code, kept, answer.content)


# -- the process ---------------------------------------------------------------------------

def main() -> int:
    from eventing import logs

    level = os.environ.get("LOG_LEVEL", "INFO")
    logs.configure("signing-page", level if level in ("DEBUG", "INFO", "WARNING") else "INFO")
    listen_address = os.environ.get("LISTEN_ADDRESS", "127.0.0.1:8082")
    broker_url = os.environ.get("BROKER_URL", "")
    if not re.fullmatch(r"\S+:\d{1,5}", listen_address) or not broker_url.startswith("http"):
        log.error("LISTEN_ADDRESS must be host:port and BROKER_URL an http(s) URL",
                  extra={"listen_address": listen_address, "broker_url": broker_url})
        return 2
    folder = Path(os.environ.get("SIGNING_PAGE_DIR", str(ROOT / "signing-page")))
    asyncio.run(asgi_server.serve(SigningPage(folder, broker_url), listen_address, log,
                                  "signing page"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
