"""`python -m bench.load`: POST a burst of events with N concurrent clients, in a
process of its own.

The broker benchmark runs the dispatcher and the subscriber in its own process;
a load generator in there too would take the GIL from them and measure itself.
So the burst is posted from here, with the cheapest client Python has: one
keep-alive `http.client` connection per thread (httpx's AsyncClient spent ~3 ms of
CPU per request at 16 concurrent requests on the 2-core machine; this ~0.3 ms).

Protocol, one JSON line each way: the parent writes the job (`url`, `body` in
base64, `headers` — one dict per event —, `concurrency`); this answers
`{"ready": true}` once every connection is open (or `false` and an `error`); the
parent writes `go`; this posts every event and answers `first`/`last`
(`time.perf_counter()` of the first POST and the last response: CLOCK_MONOTONIC on
Linux, the same clock in every process), the CPU it spent, and the first `error` if
any request failed.
"""

from __future__ import annotations

import base64
import http.client
import json
import sys
import threading
import time
import urllib.parse
from typing import Any


def _post_slice(connection: http.client.HTTPConnection, path: str, body: bytes,
                headers: list[dict[str, str]], errors: list[str]) -> None:
    try:
        for h in headers:
            if errors:
                return
            try:
                connection.request("POST", path, body=body, headers=h)
                response = connection.getresponse()
                text = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            if not 200 <= response.status < 300:
                errors.append(f"answered {response.status}: {text[:500]!r}")
                return
    finally:
        connection.close()


class Burst:
    """The connections, opened before the clock starts; `run` posts every event."""

    def __init__(self, url: str, body: bytes, headers: list[dict[str, str]],
                 concurrency: int) -> None:
        parts = urllib.parse.urlsplit(url)
        self.path = parts.path or "/"
        self.body = body
        self.slices = [headers[i::concurrency] for i in range(min(concurrency, len(headers)))]
        self.connections = [http.client.HTTPConnection(parts.hostname or "127.0.0.1",
                                                       parts.port or 80, timeout=15)
                            for _ in self.slices]
        for connection in self.connections:
            connection.connect()

    def run(self) -> dict[str, Any]:
        errors: list[str] = []
        threads = [threading.Thread(target=_post_slice, daemon=True,
                                    args=(connection, self.path, self.body, part, errors))
                   for connection, part in zip(self.connections, self.slices, strict=True)]
        cpu = time.process_time()
        first = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        last = time.perf_counter()
        return {"first": first, "last": last, "cpu_seconds": time.process_time() - cpu,
                "error": errors[0] if errors else None}


def main() -> int:
    job = json.loads(sys.stdin.readline())
    try:
        burst = Burst(job["url"], base64.b64decode(job["body"]), job["headers"],
                      int(job["concurrency"]))
    except OSError as exc:
        print(json.dumps({"ready": False, "error": f"cannot connect: {exc}"}), flush=True)
        return 1
    print(json.dumps({"ready": True}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    print(json.dumps(burst.run()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
