"""The receiving end of the broker benchmark: a 202-only HTTP subscriber in this
process that notes when each event id first arrives.

The bare func-python function would do as a subscriber, but it cannot say *when*
an event reached it; this one can, on the same clock (`time.perf_counter`) the
benchmark posts with. It speaks HTTP/1.1 keep-alive, as the dispatcher's client
expects, and answers as little as a subscriber can: `202` with an empty body.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Expectation:
    """Ids the benchmark is waiting for; `done` is set once every one arrived."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.pending = set(ids)
        self.done = threading.Event()
        if not self.pending:
            self.done.set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a burst's
    # clients all connect at once.
    request_queue_size = 128


class Subscriber:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}  # ce-id → perf_counter of its first arrival
        self.requests = 0
        self.duplicates = 0  # the same id delivered again (a redelivery)
        self._lock = threading.Lock()
        self._expecting: list[Expectation] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the dispatcher's client uses it

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                owner._arrived(self.headers.get("ce-id", ""), time.perf_counter())
                self.send_response_only(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="subscriber-accept", daemon=True)
        self._thread.start()

    def _arrived(self, event_id: str, at: float) -> None:
        with self._lock:
            self.requests += 1
            if event_id in self.arrivals:
                self.duplicates += 1
                return
            self.arrivals[event_id] = at
            for expectation in self._expecting:
                expectation.pending.discard(event_id)
                if not expectation.pending:
                    expectation.done.set()
            self._expecting = [e for e in self._expecting if not e.done.is_set()]

    def expect(self, ids: Iterable[str]) -> Expectation:
        """Start waiting for `ids`: call it before they are sent, so none is missed."""
        with self._lock:
            expectation = Expectation(i for i in ids if i not in self.arrivals)
            if not expectation.done.is_set():
                self._expecting.append(expectation)
        return expectation

    def missing(self, expectation: Expectation) -> int:
        with self._lock:
            return len(expectation.pending)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
