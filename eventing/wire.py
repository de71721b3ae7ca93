"""The HTTP side of a function: request bytes → CloudEvent, answers → ASGI messages.

func-python's cloudevent middleware decodes the request before the function
sees it, reads bodies of any size, and answers undecodable requests with a
text/plain 400. `install()` replaces its decode step with `decode_request`,
which bounds the body and never raises: a request that is not a valid
CloudEvent becomes a `Rejected` value in `scope["event"]`, and the edge
answers it with problem+json like every other error. Everything else about
serving stays func-python's (health endpoints, lifespan, binding).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event, to_binary_event
from cloudevents.core.exceptions import CloudEventValidationError

from eventing.errors import EventworksError, InvalidEvent, MethodNotAllowed, PayloadTooLarge
from eventing.settings import ONE_MIB

# The ASGI callables, typed as ASGI servers and httpx's ASGITransport type them.
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

STRUCTURED = "application/cloudevents+json"
REQUIRED = ("id", "source", "type", "specversion")

# Set by the edge from its settings at start; one function per process.
max_event_bytes = ONE_MIB


@dataclass(frozen=True)
class Rejected:
    """A request that never became a CloudEvent, and why."""

    error: EventworksError


def install() -> None:
    """Make func-python decode requests with `decode_request` (idempotent)."""
    import func_python.cloudevent as middleware

    middleware.decode_event = decode_request


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    # latin-1 maps every byte: a bad header byte must not become a 500.
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes | Rejected:
    too_large = Rejected(PayloadTooLarge(f"the event is larger than {limit} bytes"))
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return too_large
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return Rejected(InvalidEvent("the client went away before sending the whole event"))
        body += message.get("body", b"")
        if len(body) > limit:
            return too_large
        if not message.get("more_body", False):
            return bytes(body)


def _missing_attributes(headers: Mapping[str, str], body: bytes) -> Rejected | None:
    """The SDK defaults a missing id and specversion; an event without an id
    cannot be deduplicated, so absence is checked on the raw message."""
    if any(k.startswith("ce-") for k in headers):
        missing = [a for a in REQUIRED if f"ce-{a}" not in headers]
        where = "header ce-{}"
    else:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != STRUCTURED:
            return Rejected(InvalidEvent(
                "not a CloudEvent: send ce-* headers (binary mode) or an "
                f"{STRUCTURED} body (structured mode)", field="content-type"))
        try:
            document = json.loads(body)
        except ValueError as exc:
            return Rejected(InvalidEvent(f"the structured event is not JSON: {exc}", field="body"))
        if not isinstance(document, dict):
            return Rejected(InvalidEvent("the structured event is not a JSON object", field="body"))
        missing = [a for a in REQUIRED if a not in document]
        where = "{}"
    if missing:
        return Rejected(InvalidEvent(
            f"not a CloudEvent: missing required attribute(s) {', '.join(missing)}",
            field=where.format(missing[0]),
            errors=[{"field": where.format(a), "message": "missing"} for a in missing]))
    return None


async def decode_request(scope: Mapping[str, Any], receive: Receive, *,
                         parse_data: bool = True) -> BaseCloudEvent | Rejected:
    """The request as a CloudEvent, or why not. `parse_data=False` leaves a binary-mode
    body unparsed (the event's data is then empty): for the broker, which stores the
    bytes as they came and would only throw the parsed JSON away."""
    if scope.get("method", "POST") != "POST":
        return Rejected(MethodNotAllowed("events are delivered with POST", field="method"))
    headers = _headers(scope)
    body = await _body(receive, headers, max_event_bytes)
    if isinstance(body, Rejected):
        return body
    missing = _missing_attributes(headers, body)
    if missing is not None:
        return missing
    binary = any(k.startswith("ce-") for k in headers)
    try:
        return from_http_event(HTTPMessage(headers=headers,
                                           body=body if parse_data or not binary else b""))
    except CloudEventValidationError as exc:
        field = next(iter(exc.errors), None)
        return Rejected(InvalidEvent(f"invalid CloudEvent attributes: {exc}", field=field))
    except Exception as exc:  # the SDK raises ValueError, TypeError, JSON errors...
        return Rejected(InvalidEvent(f"not a valid CloudEvent: {exc}",
                                     field=_culprit(headers, body, binary)))


def _culprit(headers: Mapping[str, str], body: bytes, binary: bool) -> str:
    """Which part of the message the SDK could not read (it does not say): the time,
    whose format is strict, or else the data."""
    if binary:
        time = headers.get("ce-time")
        return "header ce-time" if time is not None and not _is_time(time) else "data"
    try:
        document = json.loads(body)
    except ValueError:
        return "body"
    time = document.get("time") if isinstance(document, dict) else None
    if time is not None and not (isinstance(time, str) and _is_time(time)):
        return "time"
    return "data_base64" if isinstance(document, dict) and "data_base64" in document else "data"


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


async def lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan protocol for an app with nothing to start or stop in it."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_response(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    raw = getattr(send, "http", send)  # func-python wraps send; plain ASGI send works too
    await raw({
        "type": "http.response.start",
        "status": status,
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
    })
    await raw({"type": "http.response.body", "body": body})


async def send_event(send: Send, event: BaseCloudEvent, status: int = 200) -> None:
    message = to_binary_event(event)
    await send_response(send, status, message.headers, message.body)


def problem(status: int, error: EventworksError | None, *, event_id: str | None) -> bytes:
    """An RFC 9457 problem document; never a stack trace."""
    if error is None:
        doc: dict[str, Any] = {"type": "urn:eventworks:problem:internal", "title": "Internal error",
                               "status": status,
                               "detail": "the function failed; the event will be retried"}
    else:
        doc = {"type": f"urn:eventworks:problem:{error.slug}", "title": error.title,
               "status": status, "detail": error.detail}
        if error.field:
            doc["field"] = error.field
        if error.errors:
            doc["errors"] = [dict(e) for e in error.errors]
    if event_id:
        doc["event_id"] = event_id
    return json.dumps(doc).encode()
