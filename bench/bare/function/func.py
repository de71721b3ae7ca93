"""The baseline: a func-python function that does nothing but answer 202.

Served exactly like a real function (`python -m stack.scaffold`), so what it
costs is what func-python, hypercorn and the CloudEvents decode cost on their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]


class Bare:
    async def handle(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        # func-python wraps `send` in a CloudEventSender whose plain call expects an
        # event; `.http` is its way to send raw ASGI messages.
        respond: Send = getattr(send, "http", send)
        await respond({"type": "http.response.start", "status": 202, "headers": []})
        await respond({"type": "http.response.body", "body": b""})


def new() -> Bare:
    return Bare()
