"""The one exception vocabulary of every function.

Handlers raise these; the edge maps each class to an HTTP status once
(`eventing.edge.STATUS`) and renders an `application/problem+json` body.
Anything else that escapes a handler is a bug: a 500 with no detail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class EventworksError(Exception):
    """Base of every error a function answers on purpose."""

    slug = "error"
    title = "Error"

    def __init__(self, detail: str, *, field: str | None = None,
                 errors: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.errors = tuple(errors)


class InvalidEvent(EventworksError):
    """The event can never succeed as it is: not a CloudEvent, bad attributes,
    data that fails its model. Not retried; the broker dead-letters it."""

    slug = "invalid-event"
    title = "Invalid event"


class UnknownEventType(InvalidEvent):
    slug = "unknown-event-type"
    title = "Unknown event type"

    def __init__(self, event_type: str) -> None:
        super().__init__(f"this function does not handle events of type {event_type!r}",
                         field="type")


class PayloadTooLarge(InvalidEvent):
    slug = "payload-too-large"
    title = "Payload too large"


class MethodNotAllowed(EventworksError):
    slug = "method-not-allowed"
    title = "Method not allowed"


class Unauthorized(EventworksError):
    slug = "unauthorized"
    title = "Unauthorized"


class Forbidden(EventworksError):
    slug = "forbidden"
    title = "Forbidden"


class NotFound(EventworksError):
    slug = "not-found"
    title = "Not found"


class Conflict(EventworksError):
    """Retried by the broker: the state may change (or a duplicate id with other data)."""

    slug = "conflict"
    title = "Conflict"


class Unavailable(EventworksError):
    """A transient failure (a store is down, no capacity): try again later."""

    slug = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotBuilt(EventworksError):
    """The function exists but its capability has not been built yet."""

    slug = "not-built"
    title = "Not implemented yet"
