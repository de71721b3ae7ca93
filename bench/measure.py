"""The two measurements: cold start (spawn → first 2xx to a real event) and
sequential requests over one keep-alive connection."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.events import Events
from bench.processes import Served, serve, stop
from bench.subjects import Subject
from stack.processes import free_port

POLL_INTERVAL = 0.005
COLD_START_TIMEOUT = 30.0
# Long enough for a request that arrives while the function still opens its
# database pool: that wait is part of the cold start, not a failure.
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=1.0)
# Statuses that mean "up, but not ready for events yet" (Knative's queue-proxy and
# our edge both answer 503 while a dependency is still coming up).
NOT_YET = {503}
WARMUP = 50  # requests per function before the sequential clock starts
CHUNK = 100  # sequential requests per turn when the functions take turns
DISCARDED = 1  # cold-start rounds run but not recorded

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


@dataclass(frozen=True)
class Throughput:
    requests: int
    seconds: float  # time spent in this function's requests only
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)


def percentile(samples: Sequence[float], pct: int) -> float:
    # Inclusive method: stays within the observed range even for few samples.
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


def _serve(subject: Subject, logs: Path) -> Served:
    return serve(subject.component(free_port()), logs / f"{subject.name}.log")


def cold_starts(subjects: Sequence[Subject], runs: int, events: Events, logs: Path,
                say: Say, *, discarded: int = DISCARDED) -> dict[str, ColdStarts]:
    """Alternate the subjects run by run, so that machine noise hits each alike.

    The first `discarded` rounds are not recorded: they warm the page cache and
    write bytecode, which a node that already runs the image has done before.
    """
    samples: dict[str, list[float]] = {s.name: [] for s in subjects}
    stops: dict[str, list[float]] = {s.name: [] for s in subjects}
    for run in range(discarded + runs):
        for subject in subjects:
            served = _serve(subject, logs)
            try:
                took = first_answer(served, events)
            finally:
                stopped = stop(served)
            if run >= discarded:
                samples[subject.name].append(took)
                stops[subject.name].append(stopped)
        if run >= discarded:
            say(f"  cold start {run - discarded + 1}/{runs}: " + ", ".join(
                f"{s.name} {samples[s.name][-1]:.0f} ms" for s in subjects))
    return {s.name: ColdStarts(samples[s.name], stops[s.name]) for s in subjects}


def _post(client: httpx.Client, served: Served, body: bytes, headers: dict[str, str]) -> None:
    response = client.post(served.url, content=body, headers=headers)
    if not response.is_success:
        raise served.failure(f"answered {response.status_code}: {response.text[:500]}")


def throughput(subjects: Sequence[Subject], requests: int, events: Events, logs: Path,
               *, warmup: int = WARMUP, chunk: int = CHUNK) -> dict[str, Throughput]:
    """N sequential requests per subject over one keep-alive client each.

    The subjects take turns in chunks, for the same reason cold starts alternate.
    Only the POST itself is timed; headers are built before the clock starts.
    """
    servers = [_serve(s, logs) for s in subjects]
    clients = [httpx.Client(timeout=REQUEST_TIMEOUT) for _ in subjects]
    latencies: dict[str, list[float]] = {s.name: [] for s in subjects}
    try:
        for served, client in zip(servers, clients, strict=True):
            first_answer(served, events)
            for _ in range(warmup):
                _post(client, served, *events.fresh())
        done = 0
        while done < requests:
            batch = min(chunk, requests - done)
            for subject, served, client in zip(subjects, servers, clients, strict=True):
                requests_ = [events.fresh() for _ in range(batch)]
                own = latencies[subject.name]
                for body, headers in requests_:
                    started = time.perf_counter()
                    _post(client, served, body, headers)
                    own.append((time.perf_counter() - started) * 1000)
            done += batch
    finally:
        for client in clients:
            client.close()
        for served in servers:
            stop(served)
    return {name: Throughput(len(ms), sum(ms) / 1000, ms) for name, ms in latencies.items()}
