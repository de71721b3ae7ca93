"""Keep-alive HTTP/1.1 connections for deliveries: one per (thread, host, port).

The dispatcher's workers are threads, each delivering one event at a time, so a
connection per thread and destination needs no pool locking. The standard
library's http.client costs a fraction of httpx's CPU per request, and the
dispatcher pays it on every event (measured in bench/: the broker's throughput).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit


class DeliveryTimeout(Exception):
    """No answer within the attempt's timeout."""


class DeliveryError(Exception):
    """No answer at all: refused, reset, closed."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]   # lower-case names
    body: bytes


# A reused keep-alive connection the server already closed fails like this before any
# byte of the request was processed; one retry on a fresh connection is then safe.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Connections:
    def __init__(self) -> None:
        self._local = threading.local()

    def _pool(self) -> dict[tuple[str, str, int], http.client.HTTPConnection]:
        pool: dict[tuple[str, str, int], http.client.HTTPConnection] | None = getattr(
            self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = {}
        return pool

    def post(self, url: str, body: bytes, headers: Mapping[str, str],
             timeout: float) -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        key = (scheme, host, port)
        pool = self._pool()
        for fresh in (False, True):
            connection = pool.get(key)
            reused = connection is not None and not fresh
            if connection is None or fresh:
                if connection is not None:
                    connection.close()
                factory = (http.client.HTTPSConnection if scheme == "https"
                           else http.client.HTTPConnection)
                connection = factory(host, port, timeout=timeout)
                pool[key] = connection
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            else:
                connection.timeout = timeout
            try:
                connection.request("POST", path, body=body, headers=dict(headers))
                answer = connection.getresponse()
                data = answer.read()
            except TimeoutError as exc:
                self._drop(key)
                raise DeliveryTimeout(f"timed out after {timeout} s") from exc
            except _STALE as exc:
                self._drop(key)
                if reused:
                    continue
                raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(key)
                raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
            if answer.will_close:
                self._drop(key)
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()},
                            data)
        raise DeliveryError("the connection closed twice")  # pragma: no cover

    def _drop(self, key: tuple[str, str, int]) -> None:
        connection = self._pool().pop(key, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Close this thread's connections (others close when their threads end)."""
        for key in list(self._pool()):
            self._drop(key)


