"""Every function beside the bare function, in one run: cold start, sequential and
concurrent events/s, idle memory.

1. Cold starts: rounds of one spawn each of the bare function and every function (the
   order turns round by round, so machine noise hits each alike; the first round is
   discarded: it warms the page cache and writes bytecode). Spawn → the first 2xx answer
   to the workload's event, posted every POLL_INTERVAL.
2. Load, one function at a time, beside one bare process that lives for the whole part:
   the function is spawned, answers its first event, idles IDLE seconds, and its memory is
   read ("after start"); then `requests` events one after the other over one keep-alive
   connection, the function and the bare (sent the same kind of event) taking turns in
   chunks; then `requests` events from `concurrency` clients at once (threads, one
   connection each), function and bare by halves in turn; it idles again and its memory
   is read ("after load"). A 503/409/429 (a retryable answer: sign-tx with no free key)
   is posted again after RETRY_PAUSE, as the broker would redeliver, and counted.

Memory: RSS and USS (what would be freed if it exited) of the process and its children,
by psutil.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.measure import COLD_START_TIMEOUT, NOT_YET, POLL_INTERVAL, ColdStarts, percentile
from bench.processes import BenchFailure, Served, serve, stop
from bench.subjects import Subject
from bench.workloads import Post, Stream, Workload
from stack.processes import free_port

REQUEST_TIMEOUT = 15.0
RETRYABLE = {409, 429, 503}
RETRY_PAUSE = 0.005
# How long a retryable answer is posted again. A sign-tx the benchmark stops gives its
# keys back at stop (functions/sign-tx/function/held.py), so this no longer has to outlast
# a lease left by every stopped process (it was 90 s). It still outlasts one of sign-tx's
# lease TTLs (15 s) for what remains: a process SIGKILLed after STOP_TIMEOUT, a release at
# stop that did not reach lease-key within its bound, and the stack's own sign-tx holding
# the shared pool's keys; every retry is counted (`retried`), so a wait shows.
RETRY_FOR = 30.0
IDLE = 1.0               # seconds of idling before memory is read
WARMUP = 20              # events per process before the sequential clock starts
CHUNK = 50               # sequential events per turn
DISCARDED = 1            # cold-start rounds run but not recorded
CONCURRENCY = 8
TARGET_COLD_START_RATIO = 1.5
TARGET_MEMORY_MIB = 80.0

Say = Callable[[str], None]


# -- figures ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rate:
    """Events posted and answered 2xx: the time it took and each one's latency."""

    events: int
    seconds: float
    latencies_ms: list[float]
    retried: int = 0      # retryable answers posted again

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def document(self) -> dict[str, Any]:
        return {"events": self.events, "seconds": self.seconds,
                "events_per_second": self.per_second, "retried": self.retried,
                "latency_ms": {"p50": self.p50, "p99": self.p99,
                               "max": max(self.latencies_ms)}}


@dataclass(frozen=True)
class Memory:
    rss: int   # bytes, the process and its children
    uss: int

    def document(self) -> dict[str, float]:
        return {"rss_mib": self.rss / 2**20, "uss_mib": self.uss / 2**20}


@dataclass(frozen=True)
class Loaded:
    """One process under load: what `load` found."""

    sequential: Rate
    concurrent: Rate
    started: Memory
    loaded: Memory | None = None


@dataclass(frozen=True)
class FunctionFigures:
    workload: Workload
    cold: ColdStarts | None
    own: Loaded             # the function
    bare: Loaded            # the bare function, sent this function's events meanwhile

    def ratio_sequential(self) -> float:
        return self.own.sequential.per_second / self.bare.sequential.per_second

    def ratio_concurrent(self) -> float:
        return self.own.concurrent.per_second / self.bare.concurrent.per_second

    def document(self, bare_cold: ColdStarts) -> dict[str, Any]:
        found: dict[str, Any] = {
            "function": self.workload.function, "event": self.workload.event,
            "io": self.workload.io,
            "sequential": self.own.sequential.document(),
            "concurrent": self.own.concurrent.document(),
            "bare_sequential": self.bare.sequential.document(),
            "bare_concurrent": self.bare.concurrent.document(),
            "ratios": {"sequential_events_per_second": self.ratio_sequential(),
                       "concurrent_events_per_second": self.ratio_concurrent()},
            "memory": {"after_start": self.own.started.document(),
                       "after_load": self.own.loaded.document() if self.own.loaded else None},
        }
        if self.cold is not None:
            found["cold_start_ms"] = _cold_document(self.cold)
            found["ratios"]["cold_start_median"] = self.cold.median / bare_cold.median
        if self.workload.target_rate is not None:
            found["target_rate_ratio"] = self.workload.target_rate
        return found


def _cold_document(cold: ColdStarts) -> dict[str, Any]:
    return {"median": cold.median, "min": cold.min, "max": cold.max,
            "samples": [round(v, 3) for v in cold.samples_ms],
            "stop_median": cold.stop_median}


@dataclass(frozen=True)
class FleetResult:
    functions: list[FunctionFigures]
    bare_cold: ColdStarts
    bare_started: Memory
    bare_loaded: Memory
    concurrency: int
    parameters: dict[str, Any] = field(default_factory=dict)
    # bench/floor's cold starts, in the same rounds: what pydantic and psycopg cost alone.
    floor_cold: ColdStarts | None = None

    def document(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "baseline": {"name": "bare", "cold_start_ms": _cold_document(self.bare_cold),
                         "memory": {"after_start": self.bare_started.document(),
                                    "after_load": self.bare_loaded.document()}},
            "functions": {f.workload.name: f.document(self.bare_cold) for f in self.functions},
        }
        if self.floor_cold is not None:
            found["floor"] = {"name": "floor", "cold_start_ms": _cold_document(self.floor_cold),
                              "ratios": {"cold_start_median":
                                         self.floor_cold.median / self.bare_cold.median}}
        return found


# -- the client ----------------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection (http.client: the cheapest client Python has,
    so the benchmark's own cost per request stays small beside the functions')."""

    def __init__(self, url: str) -> None:
        parts = url.removeprefix("http://").rstrip("/").split(":")
        self._host, self._port = parts[0], int(parts[1])
        self._connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        reused = self._connection is not None
        try:
            return self._post(body, headers)
        except (OSError, http.client.HTTPException):
            self.close()
            if not reused:
                raise
        # The server closed the idle keep-alive connection (hypercorn does after 5 s), as
        # any HTTP client finds out on its next request: once more on a new one. The
        # event keeps its ce-id, so a function that did get it answers from its inbox.
        return self._post(body, headers)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self._host, self._port,
                                                          timeout=REQUEST_TIMEOUT)
        try:
            self._connection.request("POST", "/", body=body, headers=headers)
            response = self._connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def send(connection: Connection, stream: Stream, served: Served,
         post: Post | None = None) -> int:
    """Post the stream's next event (or `post`) until it is answered 2xx; how many
    retryable answers came first."""
    body, headers = post if post is not None else stream.fresh()
    retried = 0
    give_up = time.perf_counter() + RETRY_FOR
    while True:
        try:
            status, answer = connection.post(body, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise served.failure(f"{type(exc).__name__}: {exc}") from None
        if status in RETRYABLE and time.perf_counter() < give_up:
            retried += 1
            time.sleep(RETRY_PAUSE)
            continue
        stream.answered(status, answer)
        if not 200 <= status < 300:
            raise served.failure(f"answered {status} to a real event: {answer[:500]!r}")
        return retried


def settle(connection: Connection, stream: Stream, served: Served) -> None:
    """Undo what the stream holds (lease-key: release the key it leased)."""
    post = stream.settle()
    if post is not None:
        send(connection, stream, served, post)


def first_answer(served: Served, stream: Stream) -> float:
    """Post the event every POLL_INTERVAL until a 2xx; ms since the spawn."""
    deadline = served.spawned + COLD_START_TIMEOUT
    connection = Connection(served.url)
    try:
        while time.perf_counter() < deadline:
            body, headers = stream.fresh()
            try:
                status, answer = connection.post(body, headers)
            except (OSError, http.client.HTTPException):  # not listening yet
                status, answer = 0, b""
            answered = time.perf_counter()
            if 200 <= status < 300:
                stream.answered(status, answer)
                settle(connection, stream, served)
                return (answered - served.spawned) * 1000
            if status and status not in NOT_YET:
                raise served.failure(f"answered {status} to a real event: {answer[:500]!r}")
            if served.exited():
                raise served.failure(f"exited with {served.process.returncode} while starting")
            time.sleep(POLL_INTERVAL)
    finally:
        connection.close()
    raise served.failure(f"no 2xx within {COLD_START_TIMEOUT:.0f} s")


def memory(pid: int) -> Memory:
    """RSS and USS of the process and everything it started."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess as exc:
        raise BenchFailure(f"process {pid} is gone: {exc}") from None
    rss = uss = 0
    for process in tree:
        try:
            info = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        uss += info.uss
    return Memory(rss, uss)


# -- 1. cold starts -----------------------------------------------------------------------

def _serve(subject: Subject, logs: Path) -> Served:
    return serve(subject.component(free_port()), logs / f"{subject.name}.log")


def cold_starts(subjects: Sequence[tuple[Subject, Callable[[], Stream]]], runs: int,
                logs: Path, say: Say, *, discarded: int = DISCARDED) -> dict[str, ColdStarts]:
    samples: dict[str, list[float]] = {s.name: [] for s, _ in subjects}
    stops: dict[str, list[float]] = {s.name: [] for s, _ in subjects}
    for run in range(discarded + runs):
        turn = run % len(subjects)
        for subject, stream in [*subjects[turn:], *subjects[:turn]]:
            served = _serve(subject, logs)
            try:
                took = first_answer(served, stream())
            finally:
                stopped = stop(served)
            if run >= discarded:
                samples[subject.name].append(took)
                stops[subject.name].append(stopped)
        if run >= discarded:
            say(f"  cold start {run - discarded + 1}/{runs}: " + ", ".join(
                f"{s.name} {samples[s.name][-1]:.0f}" for s, _ in subjects) + " ms")
    return {name: ColdStarts(samples[name], stops[name]) for name in samples}


# -- 2. load ---------------------------------------------------------------------------------

@dataclass
class _Process:
    served: Served
    connection: Connection
    stream: Stream
    latencies: list[float] = field(default_factory=list)
    retried: int = 0


def _sequential(turns: Sequence[_Process], requests: int, chunk: int) -> list[Rate]:
    done = 0
    for p in turns:
        p.latencies, p.retried = [], 0
    while done < requests:
        batch = min(chunk, requests - done)
        for p in turns:
            for _ in range(batch):
                post = p.stream.fresh()  # built before the clock starts
                started = time.perf_counter()
                p.retried += send(p.connection, p.stream, p.served, post)
                p.latencies.append((time.perf_counter() - started) * 1000)
        done += batch
    return [Rate(len(p.latencies), sum(p.latencies) / 1000, p.latencies, p.retried)
            for p in turns]


def _concurrent_once(served: Served, stream: Callable[[], Stream], events: int,
                     clients: int) -> Rate:
    shares = [events // clients + (1 if n < events % clients else 0) for n in range(clients)]
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    retried = [0] * clients
    failures: list[BaseException] = []

    def client(n: int) -> None:
        connection, own = Connection(served.url), stream()
        try:
            send(connection, own, served)  # the connection opened before the clock
            # Undone before the barrier: a lease held while waiting there kept the clients
            # still retrying for a key waiting out its TTL (4 keys, 8 clients).
            settle(connection, own, served)
            barrier.wait()
            for _ in range(shares[n]):
                post = own.fresh()
                started = time.perf_counter()
                retried[n] += send(connection, own, served, post)
                latencies[n].append((time.perf_counter() - started) * 1000)
            settle(connection, own, served)
        except BaseException as exc:  # reported by the caller, not lost in a thread
            failures.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True, name=f"client-{n}")
               for n in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: said below
        barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        failure = failures[0]
        raise failure if isinstance(failure, BenchFailure) else BenchFailure(
            f"{served.component.name}: {type(failure).__name__}: {failure}")
    return Rate(events, seconds, [ms for own in latencies for ms in own], sum(retried))


def _concurrent(pairs: Sequence[tuple[Served, Callable[[], Stream]]], events: int,
                clients: int) -> list[Rate]:
    """Half the events for each, then the other half, turn by turn."""
    halves: list[list[Rate]] = [[] for _ in pairs]
    for half in (events // 2, events - events // 2):
        for n, (served, stream) in enumerate(pairs):
            halves[n].append(_concurrent_once(served, stream, max(half, 1), clients))
    return [Rate(sum(r.events for r in rates), sum(r.seconds for r in rates),
                 [ms for r in rates for ms in r.latencies_ms], sum(r.retried for r in rates))
            for rates in halves]


def load(workload: Workload, subject: Subject, bare: Served, logs: Path, *, requests: int,
         concurrency: int, warmup: int = WARMUP, chunk: int = CHUNK,
         idle: float = IDLE) -> tuple[Loaded, Loaded]:
    """The function under load beside the (already warm) bare function: (own, bare)."""
    served = _serve(subject, logs)
    own = _Process(served, Connection(served.url), workload.stream())
    beside = _Process(bare, Connection(bare.url), workload.stream())
    try:
        first_answer(served, workload.stream())
        time.sleep(idle)
        started = memory(served.process.pid)
        for p in (own, beside):
            for _ in range(warmup):
                send(p.connection, p.stream, p.served)
        sequential = _sequential([own, beside], requests, chunk)
        for p in (own, beside):
            settle(p.connection, p.stream, p.served)
        concurrent = _concurrent([(served, workload.stream), (bare, workload.stream)],
                                 requests, concurrency)
        time.sleep(idle)
        loaded = memory(served.process.pid)
    finally:
        own.connection.close()
        beside.connection.close()
        stop(served)
    bare_memory = memory(bare.process.pid)
    return (Loaded(sequential[0], concurrent[0], started, loaded),
            Loaded(sequential[1], concurrent[1], bare_memory))


def run(workloads: Sequence[Workload], subjects: dict[str, Subject], bare: Subject,
        logs: Path, say: Say, *, runs: int, requests: int,
        concurrency: int = CONCURRENCY, floor: Subject | None = None) -> FleetResult:
    """`subjects`: the served function of each workload's `function`. `floor`, when
    given, takes its turn in the cold-start rounds with bare's event."""
    for name in {bare.name, *subjects}:  # one log per function and run
        (logs / f"{name}.log").unlink(missing_ok=True)
    cold_subjects: list[tuple[Subject, Callable[[], Stream]]] = [
        (bare, workloads[0].stream),
        *([(floor, workloads[0].stream)] if floor is not None else []),
        *((subjects[w.function], w.stream) for w in workloads if w.cold_start)]
    say(f"cold starts: {runs} per function and the bare one"
        f"{' and the floor' if floor is not None else ''}, in turns…")
    cold = cold_starts(cold_subjects, runs, logs, say)
    served_bare = _serve(bare, logs)
    figures: list[FunctionFigures] = []
    try:
        first_answer(served_bare, workloads[0].stream())
        time.sleep(IDLE)
        bare_started = memory(served_bare.process.pid)
        for workload in workloads:
            say(f"load: {workload.name}, {requests} events one after the other, then "
                f"{requests} from {concurrency} clients, beside the bare function…")
            own, beside = load(workload, subjects[workload.function], served_bare, logs,
                               requests=requests, concurrency=concurrency)
            figures.append(FunctionFigures(
                workload, cold[workload.function] if workload.cold_start else None,
                own, beside))
            say(f"  {own.sequential.per_second:.0f}/s sequential, "
                f"{own.concurrent.per_second:.0f}/s concurrent (bare "
                f"{beside.sequential.per_second:.0f}/s, {beside.concurrent.per_second:.0f}/s)"
                f"; RSS {own.started.rss / 2**20:.0f} MiB after start")
        bare_loaded = memory(served_bare.process.pid)
    finally:
        stop(served_bare)
    return FleetResult(figures, cold[bare.name], bare_started, bare_loaded, concurrency,
                       floor_cold=cold[floor.name] if floor is not None else None)
