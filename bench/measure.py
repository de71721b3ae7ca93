"""Cold starts' figures, percentiles, and the first 2xx of a function to a real event
(the broker part's bare function; bench/fleet.py measures the functions)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from bench.events import Events
from bench.processes import Served

POLL_INTERVAL = 0.005
COLD_START_TIMEOUT = 30.0
# Long enough for a request that arrives while the function still opens its
# database pool: that wait is part of the cold start, not a failure.
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=1.0)
# Statuses that mean "up, but not ready for events yet" (Knative's queue-proxy and
# our edge both answer 503 while a dependency is still coming up).
NOT_YET = {503}

Say = Callable[[str], None]


@dataclass(frozen=True)
class ColdStarts:
    samples_ms: list[float]
    stop_ms: list[float]  # SIGTERM → exit, recorded because scale-to-zero pays it too

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min(self) -> float:
        return min(self.samples_ms)

    @property
    def stop_median(self) -> float:
        return statistics.median(self.stop_ms)

    @property
    def max(self) -> float:
        return max(self.samples_ms)


def percentile(samples: Sequence[float], pct: int) -> float:
    # Inclusive method: stays within the observed range even for few samples.
    if len(samples) == 1:  # quantiles needs two; a quick run may have one
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


def first_answer(served: Served, events: Events) -> float:
    """Post the event every POLL_INTERVAL until a 2xx; ms since the spawn."""
    deadline = served.spawned + COLD_START_TIMEOUT
    with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
        while time.perf_counter() < deadline:
            body, headers = events.fresh()
            try:
                response = client.post(served.url, content=body, headers=headers)
            except httpx.TransportError:  # not listening yet, or reset while starting
                response = None
            answered = time.perf_counter()
            if response is not None and response.is_success:
                return (answered - served.spawned) * 1000
            if response is not None and response.status_code not in NOT_YET:
                raise served.failure(f"answered {response.status_code} to a real event: "
                                     f"{response.text[:500]}")
            if served.exited():
                raise served.failure(f"exited with {served.process.returncode} while starting")
            time.sleep(POLL_INTERVAL)
    raise served.failure(f"no 2xx within {COLD_START_TIMEOUT:.0f} s")
