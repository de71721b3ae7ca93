"""What a trusted edge lets through to the Broker, and in which form.

Two edges share this: the local broker ingress (broker/ingress.py, which stores what it
admits in Kafka) and the gateway (broker/gateway.py, the public edge of a cluster, which
posts what it admits to the Knative Broker's ingress). Both

- read a request as a CloudEvent (`receive`): binary or structured, CloudEvents 1.0;
- decide who acts (`eventing.auth.Verifier.context`): a verified bearer token's Auth
  Context (`authtype=app_user`, `authid`, `authrole`), or `authtype=unauthenticated`;
- turn a signed GitHub webhook into the CloudEvent GitHubSource emits (`github`,
  broker/webhook.py);
- pass the event on in binary content mode (`admit`): every attribute as its canonical
  text, the client's `authtype`/`authid`/`authrole`/`authclaims` dropped and the edge's
  own Auth Context put in their place, the data bytes as they came (binary mode) or the
  `data` member serialised (structured mode), `time` only when the sender set it (a
  broker does not invent attributes), `partitionkey` as the record key.

Nothing here does I/O but reading the request: the Kafka record (broker/ingress.py) and
the HTTP request (`http_headers`) are two spellings of one `Admitted`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from pydantic import SecretStr

from broker import webhook
from eventing import auth, wire
from eventing.edge import status_of
from eventing.errors import (
    EventworksError,
    InvalidEvent,
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)

FIRST = ("specversion", "id", "source", "type")      # header order: required attributes first
UNTRUSTED = auth.AUTH_ATTRIBUTES                    # set only by a trusted edge (DESIGN §4)
PARTITIONKEY = "partitionkey"
DATACONTENTTYPE = "datacontenttype"
JSON_MEDIA_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]+\+)?json$")
PROBLEM: Mapping[str, str] = {"content-type": "application/problem+json"}


@dataclass(frozen=True)
class Received:
    """A request that is a CloudEvent 1.0: the event (its binary-mode data unparsed), the
    body as it came and the request's headers (lower-case names)."""

    event: BaseCloudEvent
    body: bytes
    headers: Mapping[str, str]

    @property
    def binary(self) -> bool:
        return any(name.startswith("ce-") for name in self.headers)

    @property
    def sent_time(self) -> bool:
        return sent_time(self.headers, self.body, self.binary)


@dataclass(frozen=True)
class Admitted:
    """An event as an edge passes it on in binary content mode: its attributes as
    (name, canonical text), required ones first, `datacontenttype` among them; its data
    bytes; its partition key."""

    attributes: tuple[tuple[str, str], ...]
    value: bytes
    key: bytes | None

    def http_headers(self) -> dict[str, str]:
        """The HTTP binary content mode of the event (CloudEvents HTTP binding)."""
        return {("content-type" if name == DATACONTENTTYPE else f"ce-{name}"): text
                for name, text in self.attributes}


def request_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    # latin-1 maps every byte: a bad header byte must not become a 500.
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def receive(scope: Mapping[str, Any], receive: wire.Receive) -> Received:
    """The request as a CloudEvent 1.0, or the EventworksError saying why not."""
    chunks: list[bytes] = []

    async def recording() -> MutableMapping[str, Any]:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
        return message

    event = await wire.decode_request(scope, recording, parse_data=False)
    if isinstance(event, wire.Rejected):
        raise event.error
    if event.get_specversion() != "1.0":
        raise InvalidEvent("only CloudEvents 1.0 are accepted", field="specversion")
    return Received(event, b"".join(chunks), request_headers(scope))


async def read_body(receive: wire.Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole request body, refused as soon as it is known to exceed `limit` bytes."""
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidEvent("the client went away before sending the whole body")
        body += message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        if not message.get("more_body", False):
            return bytes(body)


async def github(scope: Mapping[str, Any], receive: wire.Receive, secret: SecretStr | None,
                 limit: int) -> tuple[webhook.Delivery, Admitted]:
    """`POST /github`: a GitHub webhook whose X-Hub-Signature-256 verifies, admitted as
    the CloudEvent GitHubSource emits. Webhooks are authenticated by their HMAC, as
    GitHub's are: no Auth Context. Without a secret nothing is accepted (503)."""
    if scope.get("method") != "POST":
        raise MethodNotAllowed("GitHub webhooks are delivered with POST", field="method")
    if secret is None:
        raise Unavailable("webhook secret not configured: no GitHub webhooks are accepted "
                          "until GITHUB_WEBHOOK_SECRET is set", retry_after=60)
    headers = request_headers(scope)
    body = await read_body(receive, headers, limit)
    delivery, event = webhook.event_of(secret.get_secret_value(), headers, body,
                                       datetime.now(UTC))
    return delivery, admit(event, body, binary=True)


async def refuse(send: wire.Send, error: EventworksError, event_id: str | None,
                 logger: logging.Logger, *, allow: str = "POST") -> None:
    """The problem+json answer of an edge, with the headers its status calls for."""
    status = status_of(error)
    headers = dict(PROBLEM)
    if isinstance(error, Unavailable):
        headers["retry-after"] = str(error.retry_after)
    if isinstance(error, MethodNotAllowed):
        headers["allow"] = allow
    if isinstance(error, Unauthorized):
        headers["www-authenticate"] = 'Bearer realm="eventworks"'  # RFC 6750 §3
    logger.warning("event refused", extra={"status": status, "problem": error.slug,
                                           "field": error.field, "detail": error.detail,
                                           "event_id": event_id})
    await wire.send_response(send, status, headers,
                             wire.problem(status, error, event_id=event_id))


def text(name: str, value: object) -> str:
    """An attribute's canonical string form (CloudEvents type system)."""
    if isinstance(value, datetime):
        shown = value.isoformat()
        return shown[:-6] + "Z" if shown.endswith("+00:00") else shown
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise InvalidEvent(f"attribute {name} is a {type(value).__name__}, which is not a "
                       "CloudEvents attribute type", field=name)


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # structured mode: data without datacontenttype is JSON
    return bool(JSON_MEDIA_TYPE.match(content_type.split(";")[0].strip().lower()))


def _structured_value(event: BaseCloudEvent) -> bytes:
    data = event.get_data()
    if data is None:
        return b""
    if isinstance(data, bytes):  # data_base64
        return data
    if isinstance(data, str) and not _is_json(event.get_datacontenttype()):
        return data.encode()
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def sent_time(headers: Mapping[str, str], body: bytes, binary: bool) -> bool:
    if binary:
        return "ce-time" in headers
    try:
        document = json.loads(body)
    except ValueError:
        return True
    return isinstance(document, dict) and document.get("time") is not None


def admit(event: BaseCloudEvent, body: bytes, *, binary: bool, sent_time: bool = True,
          context: Mapping[str, str] | None = None) -> Admitted:
    """`event` in binary content mode; `body` is the HTTP body it was decoded from.
    `context`: the Auth Context this edge vouches for (the client's is dropped)."""
    attributes: dict[str, object] = {k: v for k, v in event.get_attributes().items()
                                     if v is not None and k not in UNTRUSTED}
    attributes.update(context or {})
    if not sent_time:
        attributes.pop("time", None)
    shown = [(name, text(name, attributes[name]))
             for name in [*FIRST, *sorted(set(attributes) - set(FIRST))] if name in attributes]
    if binary:
        value = body
    else:
        value = _structured_value(event)
        if DATACONTENTTYPE not in attributes and event.get_data() is not None \
                and not isinstance(event.get_data(), bytes):
            shown.append((DATACONTENTTYPE, "application/json"))
    key = attributes.get(PARTITIONKEY)
    return Admitted(attributes=tuple(shown), value=value,
                    key=None if key is None else text(PARTITIONKEY, key).encode())


def admit_received(received: Received, context: Mapping[str, str]) -> Admitted:
    return admit(received.event, received.body, binary=received.binary,
                 sent_time=received.sent_time, context=context)
