"""The local stack's own ASGI servers (the GitHub API stand-in, the signing page) run
under hypercorn, as the functions do, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any


async def serve(app: Any, listen_address: str, log: logging.Logger, what: str) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [listen_address]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(f"{what} listening", extra={"url": f"http://{listen_address}"})
    await hypercorn_serve(app, config, shutdown_trigger=stop.wait, mode="asgi")
    log.info(f"{what} stopped")
