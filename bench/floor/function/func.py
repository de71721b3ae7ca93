"""The floor: the least any function of ours must do, with the libraries it must use.

Every function validates its event into a pydantic model at the edge (DESIGN §3, the
project's style), and six of the seven keep their state in PostgreSQL through psycopg. This
function does only that: it imports pydantic and psycopg, connects once at start as a
function opens its pool, validates the event's data into a small model, runs one
statement, and answers 202. Served like bare (`python -m stack.scaffold`, only PYTHONPATH
swapped), its cold start over bare's is what those libraries cost before any code of ours
runs: a cold-start target below it cannot be met by a function that uses them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
from pydantic import BaseModel, ConfigDict

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]


class Comment(BaseModel):
    """What parse-comment reads of a GitHub `issue_comment`, the event bare gets in a full
    run; every field optional, since `--function` may give bare another function's event."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    action: str | None = None
    comment: dict[str, Any] | None = None
    issue: dict[str, Any] | None = None
    repository: dict[str, Any] | None = None


class Floor:
    def __init__(self) -> None:
        self._connecting: asyncio.Task[psycopg.AsyncConnection[Any]] | None = None

    def start(self, cfg: Mapping[str, str]) -> None:
        url = cfg.get("DATABASE_URL") or os.environ["DATABASE_URL"]
        self._connecting = asyncio.get_running_loop().create_task(
            psycopg.AsyncConnection.connect(url, autocommit=True))

    def stop(self) -> None:
        pass

    async def handle(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        respond: Send = getattr(send, "http", send)
        data = scope["event"].get_data()
        if isinstance(data, str | bytes):
            Comment.model_validate_json(data)
        else:
            Comment.model_validate(data)
        assert self._connecting is not None
        connection = await self._connecting
        await connection.execute("SELECT 1")
        await respond({"type": "http.response.start", "status": 202, "headers": []})
        await respond({"type": "http.response.body", "body": b""})


def new() -> Floor:
    return Floor()
