"""GitHub webhooks as CloudEvents: the pure half of the broker's GitHubSource.

The broker answers `POST /github` (`GITHUB_WEBHOOK_URL`) the way Knative's
GitHubSource receive adapter does, but checks `X-Hub-Signature-256` first. This
module holds the parts that need no I/O, so they are tested on plain values:

- `sign` / `verify` / `authenticate`: HMAC-SHA256 of the raw body with the
  webhook secret, compared in constant time (`hmac.compare_digest`).
- `parse_headers`: GitHub's three headers → a `Delivery`, or an `InvalidEvent`
  naming the header that is missing or malformed.
- `parse_payload`: the body → a JSON object, or an `InvalidEvent` naming `body`.
- `attributes`: a verified delivery → the CloudEvent attributes GitHubSource
  sets (`type` `dev.knative.source.github.<event>`, `source`
  `https://github.com/<owner>/<repo>`, `id` = the delivery id, `subject`).
- `event_of`: all of it, headers and body → the verified delivery's CloudEvent; what
  both receivers (the local ingress, the gateway) run.

The data of the event is the raw body, byte for byte: the bytes GitHub signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.v1.event import CloudEvent

from eventing.errors import InvalidEvent, Unauthorized

PATH = "/github"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
SIGNATURE_HEADER = "X-Hub-Signature-256"
TYPE_PREFIX = "dev.knative.source.github."
GITHUB = "https://github.com/"

SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # issue_comment, pull_request, ping…
DELIVERY_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # a GUID; any visible ASCII, bounded
JSON_MEDIA_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]+\+)?json$")


@dataclass(frozen=True)
class Delivery:
    """GitHub's headers of one webhook delivery (the signature not yet checked)."""

    event: str
    delivery_id: str
    signature: bytes = field(repr=False)  # the 32 digest bytes claimed; never printed


# -- the signature -----------------------------------------------------------------------

def sign(secret: str | bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + _digest(secret, body).hex()


def verify(secret: str | bytes, body: bytes, signature: bytes) -> bool:
    """Whether `signature` (digest bytes) is the HMAC-SHA256 of `body`, in constant time."""
    return hmac.compare_digest(_digest(secret, body), signature)


def authenticate(secret: str | bytes, body: bytes, delivery: Delivery) -> None:
    """Raise `Unauthorized` unless the delivery's signature matches the body.

    The answer never says whether the body, the secret or the signature was wrong.
    """
    if not verify(secret, body, delivery.signature):
        raise Unauthorized(f"the {SIGNATURE_HEADER} signature does not match the body")


def _digest(secret: str | bytes, body: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).digest()


# -- headers and body --------------------------------------------------------------------

def parse_signature(value: str) -> bytes:
    """`sha256=<64 hex digits>` → the 32 digest bytes."""
    match = SIGNATURE.match(value.strip())
    if match is None:
        raise InvalidEvent(f"{SIGNATURE_HEADER} is not of the form sha256=<64 hex digits>",
                           field=f"header {SIGNATURE_HEADER}")
    return bytes.fromhex(match.group(1))


def parse_headers(headers: Mapping[str, str]) -> Delivery:
    """GitHub's webhook headers (names in any case) → a `Delivery`."""
    lower = {name.lower(): value.strip() for name, value in headers.items()}
    missing = [h for h in (EVENT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER)
               if not lower.get(h.lower())]
    if missing:
        raise InvalidEvent(
            f"not a GitHub webhook: missing header(s) {', '.join(missing)}",
            field=f"header {missing[0]}",
            errors=[{"field": f"header {h}", "message": "missing"} for h in missing])
    event = lower[EVENT_HEADER.lower()]
    if not EVENT_NAME.match(event):
        raise InvalidEvent(f"{EVENT_HEADER} is not a GitHub event name",
                           field=f"header {EVENT_HEADER}")
    delivery_id = lower[DELIVERY_HEADER.lower()]
    if not DELIVERY_ID.match(delivery_id):
        raise InvalidEvent(f"{DELIVERY_HEADER} must be 1 to 128 visible ASCII characters",
                           field=f"header {DELIVERY_HEADER}")
    return Delivery(event=event, delivery_id=delivery_id,
                    signature=parse_signature(lower[SIGNATURE_HEADER.lower()]))


def parse_payload(body: bytes, content_type: str | None = None) -> dict[str, Any]:
    """The webhook body → its JSON object (GitHub's `application/json` content type)."""
    if content_type:
        media_type = content_type.split(";")[0].strip().lower()
        if not JSON_MEDIA_TYPE.match(media_type):
            raise InvalidEvent(
                f"the webhook body is {media_type}: configure the GitHub webhook with "
                "content type application/json", field="header Content-Type")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidEvent(f"the webhook body is not JSON: {exc}", field="body") from None
    if not isinstance(document, dict):
        raise InvalidEvent("the webhook body is not a JSON object", field="body")
    return document


# -- delivery → CloudEvent attributes ----------------------------------------------------

def source_of(payload: Mapping[str, Any]) -> str:
    """`https://github.com/<owner>/<repo>`; for events without a repository (an org
    hook's `ping`, `installation`…), `https://github.com/<organization or sender>`."""
    repository = payload.get("repository")
    if isinstance(repository, Mapping):
        full_name = repository.get("full_name")
        if isinstance(full_name, str) and full_name.strip("/"):
            return GITHUB + quote(full_name.strip("/"), safe="/")
    for owner in ("organization", "sender"):
        account = payload.get(owner)
        if isinstance(account, Mapping):
            login = account.get("login")
            if isinstance(login, str) and login:
                return GITHUB + quote(login, safe="")  # dependabot[bot] → dependabot%5Bbot%5D
    raise InvalidEvent("the webhook names no repository, organization or sender",
                       field="repository.full_name")


def subject_of(event: str, payload: Mapping[str, Any]) -> str | None:
    """What Knative's GitHubSource puts in `subject`: for a comment the last segment of
    its URL (`1#issuecomment-492700400`), else the issue or pull request number."""
    comment = payload.get("comment")
    if event == "issue_comment" and isinstance(comment, Mapping):
        url = comment.get("html_url")
        if isinstance(url, str) and "/" in url:
            return url.rsplit("/", 1)[1]
    for item in ("issue", "pull_request"):
        value = payload.get(item)
        if isinstance(value, Mapping):
            number = value.get("number")
            if isinstance(number, int) and not isinstance(number, bool):
                return str(number)
    return None


def attributes(delivery: Delivery, payload: Mapping[str, Any],
               now: datetime) -> dict[str, Any]:
    """The CloudEvent attributes of a verified delivery (its data is the raw body)."""
    result: dict[str, Any] = {
        "specversion": "1.0",
        "id": delivery.delivery_id,
        "source": source_of(payload),
        "type": TYPE_PREFIX + delivery.event,
        "datacontenttype": "application/json",
        "time": now,
    }
    subject = subject_of(delivery.event, payload)
    if subject is not None:
        result["subject"] = subject
    return result


def event_of(secret: str | bytes, headers: Mapping[str, str], body: bytes,
             now: datetime) -> tuple[Delivery, CloudEvent]:
    """A webhook delivery → its GitHubSource CloudEvent (data: the raw body), once its
    signature verified; InvalidEvent or Unauthorized otherwise."""
    delivery = parse_headers(headers)
    authenticate(secret, body, delivery)
    payload = parse_payload(body, headers.get("content-type"))
    try:
        return delivery, CloudEvent(attributes(delivery, payload, now), body)
    except CloudEventValidationError as exc:
        raise InvalidEvent(f"the webhook makes no valid CloudEvent: {exc}",
                           field=next(iter(exc.errors), None)) from None
