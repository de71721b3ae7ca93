"""A subscriber of our own for dispatcher tests: a real HTTP server on loopback
whose answers a test scripts, recording every request it receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers.get("ce-id", "")


@dataclass(frozen=True)
class Answer:
    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


Script = Callable[[Received, int], Answer]   # (request, how many times this id came) → answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when an unordered
    # Trigger delivers a burst at once (seen in CI: ConnectionResetError on the
    # 20-event doorbell test, and a Trigger without retries then drops the event).
    request_queue_size = 128


class Subscriber:
    def __init__(self, script: Script | None = None) -> None:
        self.script: Script = script or (lambda request, seen: Answer())
        self.received: list[Received] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = Received({k.lower(): v for k, v in self.headers.items()},
                                   self.rfile.read(length), time.monotonic())
                with owner._lock:
                    owner.received.append(request)
                    seen = sum(1 for r in owner.received if r.id == request.id)
                answer = owner.script(request, seen)
                if answer.delay:
                    time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, event_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.id == event_id]

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
