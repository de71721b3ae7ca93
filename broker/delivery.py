"""How one event is delivered to one destination, as Knative's Kafka broker does it.

Pure rules (which statuses are retried, the backoff, the dead-letter extensions)
and the HTTP exchange itself: the event goes out in binary content mode with
`Prefer: reply`; a 200 may carry a reply event, which the caller publishes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.v1.event import CloudEvent

from broker.connections import Connections, DeliveryError, DeliveryTimeout, Response

# Knative data plane: 4xx are final except these, which may succeed later.
RETRYABLE_4XX = frozenset({404, 408, 409, 429})
# Knative truncates the failed response body it puts in knativeerrordata.
ERROR_DATA_MAX_BYTES = 1024


@dataclass(frozen=True)
class Event:
    """An event as the broker topic holds it: binary content mode."""

    headers: tuple[tuple[str, bytes], ...]   # ce_* headers and content-type, as in Kafka
    value: bytes
    key: bytes | None = None

    @property
    def attributes(self) -> dict[str, str]:
        """Attribute name → string value, what filters look at."""
        found = {}
        for name, raw in self.headers:
            text = raw.decode("utf-8", errors="replace")
            if name.startswith("ce_"):
                found[name[3:]] = text
            elif name.lower() == "content-type":
                found["datacontenttype"] = text
        return found

    @property
    def id(self) -> str:
        return self.attributes.get("id", "")

    def http_headers(self) -> dict[str, str]:
        headers = {("ce-" + k if k != "datacontenttype" else "content-type"): v
                   for k, v in self.attributes.items()}
        headers["prefer"] = "reply"
        return headers

    def with_extensions(self, extensions: Mapping[str, str]) -> Event:
        kept = [(n, v) for n, v in self.headers if n.removeprefix("ce_") not in extensions]
        added = [(f"ce_{n}", v.encode()) for n, v in extensions.items()]
        return Event(tuple(kept + added), self.value, self.key)


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to."""

    status: int | None               # None: no HTTP answer (refused, reset, timed out)
    body: bytes = b""
    reason: str = ""
    reply: CloudEvent | None = None
    reply_body: bytes = b""
    reply_binary: bool = True
    invalid_reply: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.invalid_reply

    @property
    def retryable(self) -> bool:
        if self.ok or self.invalid_reply:
            return False
        if self.status is None or self.status >= 500:
            return True
        return self.status in RETRYABLE_4XX or not 400 <= self.status < 500


def backoff(policy: str, delay: float, retry_number: int) -> float:
    """Seconds to wait before retry `retry_number` (1, 2, …): Knative's linear
    (delay * n) and exponential (delay * 2**n) policies."""
    if policy == "linear":
        return delay * retry_number
    return float(delay * 2**retry_number)


def dead_letter_extensions(destination: str, outcome: Outcome) -> dict[str, str]:
    """The extensions Knative's Kafka broker adds to a dead-lettered event. Without an
    HTTP answer, the code is 500 and the data says why (as Knative's dispatcher does)."""
    if outcome.status is None:
        code, body = 500, f"dispatch error: {outcome.reason}".encode()
    else:
        code, body = outcome.status, outcome.body
        if outcome.invalid_reply:
            body = f"invalid reply: {outcome.invalid_reply}".encode()
    return {
        "knativeerrordest": destination,
        "knativeerrorcode": str(code),
        "knativeerrordata": base64.b64encode(body[:ERROR_DATA_MAX_BYTES]).decode(),
    }


def _reply_of(response: Response) -> tuple[CloudEvent | None, bool, str | None]:
    headers = response.headers
    binary = any(k.startswith("ce-") for k in headers)
    structured = headers.get("content-type", "").startswith("application/cloudevents+json")
    if not (binary or structured):
        return None, True, None
    try:
        event = from_http_event(HTTPMessage(headers=dict(headers), body=response.body))
    except Exception as exc:  # the SDK raises several kinds for a bad event
        return None, binary, f"{type(exc).__name__}: {exc}"
    if not isinstance(event, CloudEvent):
        return None, binary, "only CloudEvents 1.0 replies are accepted"
    return event, binary, None


def send(connections: Connections, url: str, event: Event, timeout: float) -> Outcome:
    """One attempt: POST the event to `url` and read what came back."""
    try:
        response = connections.post(url, event.value, event.http_headers(), timeout)
    except DeliveryTimeout as exc:
        return Outcome(status=None, reason=str(exc))
    except DeliveryError as exc:
        return Outcome(status=None, reason=str(exc))
    if response.status != 200:
        return Outcome(status=response.status, body=response.body, headers=response.headers)
    reply, binary, invalid = _reply_of(response)
    return Outcome(status=200, body=response.body, reply=reply, reply_body=response.body,
                   reply_binary=binary, invalid_reply=invalid, headers=response.headers)
