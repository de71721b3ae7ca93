"""The gateway: the public edge of eventworks in a cluster (broker/gateway.py), as a
Knative Function of func-python's HTTP middleware, in the shape `kn func create -l python
-t http` makes: `new()` returns the function instance, whose `handle` is an ASGI app.

The middleware binds LISTEN_ADDRESS, serves /health/liveness and /health/readiness from
`alive` and `ready`, calls `start` with the environment and `stop` at shutdown, and hands
every other request to `handle`. `./taskw deploy` stages this folder with `eventing/` and
`broker/` vendored and the signing page's files in `function/page/` (deploy/stage.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.gateway import Gateway, GatewaySettings
from eventing import logs, wire

# Where deploy/stage.py puts the signing page's files: inside this package, so that the
# wheel kn func builds carries them.
PAGE = Path(__file__).resolve().parent / "page"

log = logging.getLogger("gateway")


class Function:
    """func-python's instanced HTTP function: start/stop/alive/ready/handle."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None

    def start(self, cfg: Mapping[str, str]) -> None:
        settings = logs.started("gateway", GatewaySettings, cfg)
        if settings is None:
            raise RuntimeError("the gateway's settings are invalid (see the log)")
        wire.max_event_bytes = settings.max_event_bytes
        self.gateway = Gateway.of(settings, PAGE)
        log.info("gateway started", extra={"sink": settings.sink,
                                           "verifies_tokens": self.gateway.verifier is not None})

    def stop(self) -> None:
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            # The middleware calls stop from its running loop, without awaiting it.
            asyncio.get_running_loop().create_task(gateway.close())

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        # Not the Broker: one that is away is a 503 per request, which clients retry,
        # while a readiness probe that posted would turn a Broker outage into no route.
        started = self.gateway is not None
        return started, "ready" if started else "starting"

    async def handle(self, scope: Any, receive: wire.Receive, send: wire.Send) -> None:
        if self.gateway is None:
            await wire.send_response(send, 503, {"retry-after": "1"}, b"")
            return
        await self.gateway(scope, receive, send)


def new() -> Function:
    return Function()
