"""The GitHub API stand-in (stack/github_api.py) served in-process over real HTTP, for
tests whose code under test talks to GitHub (a real socket, real requests; the
stand-in records what it received)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

from stack.github_api import GitHubStandIn


@dataclass
class Served:
    url: str
    app: GitHubStandIn

    async def comments(self, **query: str) -> list[dict[str, Any]]:
        """What the stand-in recorded, as `GET /_stand-in/comments` lists it."""
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"{self.url}/_stand-in/comments", params=query)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def github_stand_in() -> AsyncIterator[Served]:
    app = GitHubStandIn()
    port = _free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    framework: Any = app
    task = asyncio.create_task(serve(framework, config, shutdown_trigger=stop.wait,
                                     mode="asgi"))
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health/readiness")).status_code == 200:
                    break
            await asyncio.sleep(0.02)
    try:
        yield Served(url, app)
    finally:
        stop.set()
        await task
