"""/health/liveness and /health/readiness for a process that serves nothing else over
HTTP (the dispatcher), so the stack and Kubernetes probe it like every other part."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Check = Callable[[], tuple[bool, str]]


def serve(host: str, port: int, ready: Check) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health/liveness":
                ok, message = True, "alive"
            elif self.path == "/health/readiness":
                ok, message = ready()
            else:
                self.send_error(404)
                return
            body = message.encode()
            self.send_response(200 if ok else 503)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def run(listen_address: str, ready: Check, start: Callable[[], None],
        stop: Callable[[], None]) -> None:
    """A background process's life: health on `listen_address`, `start()`, then wait for
    SIGTERM or SIGINT and `stop()` (also when `start` fails)."""
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    host, _, port = listen_address.rpartition(":")
    server = serve(host.strip("[]"), int(port), ready)
    try:
        start()
        stopping.wait()
    finally:
        stop()
        server.shutdown()
