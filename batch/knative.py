"""The batch reader in a cluster: a Knative Function of func-python's HTTP middleware.

`./taskw deploy` stages it like a function (deploy/stage.py: batch/func.yaml and
batch/pyproject.toml, with `batch`, `eventing` and `broker` vendored and a `function`
package whose `new` is this module's), and `kn func deploy` builds it. The middleware
binds LISTEN_ADDRESS, serves /health/liveness and /health/readiness from `alive` and
`ready`, and hands every other request to the same ASGI application the local stack
serves with uvicorn (batch/server.py): a PingSource tick drains the pending requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch.server import BatchReaderApp, ServerSettings
from eventing import logs, wire


class BatchReaderFunction:
    """func-python's instanced HTTP function: start/stop/alive/ready/handle."""

    def __init__(self) -> None:
        self.app: BatchReaderApp | None = None

    def start(self, cfg: Mapping[str, str]) -> None:
        settings = logs.started("batch-reader", ServerSettings, cfg)
        if settings is None:
            raise RuntimeError("the batch reader's settings are invalid (see the log)")
        self.app = BatchReaderApp(settings)
        self.app.open()

    def stop(self) -> None:
        if self.app is not None and self.app.reader is not None:
            self.app.reader.close()
            self.app.reader = None

    def alive(self) -> tuple[bool, str]:
        return True, "alive"

    def ready(self) -> tuple[bool, str]:
        # Not the database: a tick that cannot reach it answers 503 and is retried, while
        # a readiness check here would block the event loop the middleware runs it on.
        started = self.app is not None and self.app.reader is not None
        return started, "ready" if started else "starting"

    async def handle(self, scope: Mapping[str, Any], receive: wire.Receive,
                     send: wire.Send) -> None:
        if self.app is None:
            await wire.send_response(send, 503, {"retry-after": "1"}, b"")
            return
        await self.app(scope, receive, send)


def new() -> BatchReaderFunction:
    return BatchReaderFunction()
