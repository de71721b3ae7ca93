"""The function's PostgreSQL pool, confined to the function's own schema.

Every connection runs as the function's own role with search_path set to its
schema: the role has rights on that schema only (see db/migrations), so a
function cannot read or write another function's tables even by mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from eventing.errors import Conflict, Unavailable

log = logging.getLogger(__name__)

# SQLSTATEs that mean "the same transaction may succeed if tried again".
_RETRYABLE_CONFLICTS = {"40001", "40P01"}  # serialization_failure, deadlock_detected


class Database:
    def __init__(self, url: str, schema: str, *, pool_size: int = 4) -> None:
        self.schema = schema
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=5.0,
            configure=self._configure,
            name=f"{schema}-pool",
        )
        self._opening: asyncio.Task[None] | None = None
        self._error: str | None = None

    async def _configure(self, conn: AsyncConnection) -> None:
        # Autocommit for good: `transaction()` sends BEGIN and COMMIT itself either way,
        # and `autocommit()` then needs no switching back and forth on every use.
        await conn.set_autocommit(True)
        await conn.execute(
            sql.SQL("SET ROLE {role}; SET search_path TO {role}").format(
                role=sql.Identifier(self.schema)
            )
        )

    def open_soon(self) -> None:
        """Start opening the pool on the running loop (func-python's start hook is sync)."""
        self._opening = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=15.0)
            self._error = None
        except Exception as exc:
            self._error = f"database unreachable: {type(exc).__name__}"
            log.error("could not open the database pool", extra={"error": str(exc)})
            raise

    def ready(self) -> tuple[bool, str]:
        if self._opening is None or not self._opening.done():
            return False, "database: opening"
        if self._error:
            return False, self._error
        return True, "database: ok"

    def close_soon(self) -> None:
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self.close())

    async def wait_open(self) -> None:
        if self._opening is None:
            self.open_soon()
        assert self._opening is not None
        try:
            await asyncio.shield(self._opening)
        except Exception:
            # Try again on the next request rather than staying broken forever.
            self._opening = None
            raise Unavailable("the database is not reachable yet", retry_after=2) from None

    async def close(self) -> None:
        # A pool still opening (the database slow or away) must not hold shutdown up.
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; store failures become the edge's transient errors."""
        await self.wait_open()
        with _store_errors():
            async with self._pool.connection() as conn, conn.transaction():
                yield conn

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection where each statement is its own transaction: for work that is one
        statement (a database function), which then costs one round trip instead of three
        with BEGIN and COMMIT. Store failures map as in `transaction`."""
        await self.wait_open()
        with _store_errors():
            async with self._pool.connection() as conn:
                yield conn


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except PoolTimeout:
        raise Unavailable("no database connection free in time", retry_after=1) from None
    except psycopg.errors.Error as exc:
        if exc.sqlstate in _RETRYABLE_CONFLICTS:
            raise Conflict("a concurrent change won; deliver again") from None
        if isinstance(exc, psycopg.OperationalError):
            raise Unavailable("the database connection failed", retry_after=1) from None
        raise
