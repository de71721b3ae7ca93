"""The broker benchmark: what delivery through the broker costs a 202-only subscriber.

A private broker, so that neither knative/ nor the running stack is touched: the
broker ingress as its own process (`python -m broker ingress`, as the stack serves
it, under namespace `bench` and a fresh name, hence a fresh topic) and the
dispatcher in this process with one match-all Trigger whose subscriber is
`bench.subscriber.Subscriber`, which notes when each event id arrives. Only the
stack's Kafka (tansu) is shared; the private topics are deleted afterwards.

1. Latency: events one after the other, each POSTed to the ingress and waited for
   at the subscriber (POST → arrival), interleaved in chunks with the same event
   POSTed straight to the subscriber and straight to the bare func-python function
   (POST → response). "Added by the broker" is the broker's p50 minus the direct
   p50 to the same subscriber.
2. Throughput: a burst of events POSTed by `concurrency` concurrent clients (from
   `python -m bench.load`, so that the load generator takes no GIL from the
   dispatcher and the subscriber), timed from the first POST to the last arrival at
   the subscriber; the same burst straight to the subscriber (and to the bare
   function) is the baseline. Where the CPU went meanwhile is recorded too
   (`bench.cpu`).

Every timestamp is `time.perf_counter()`, CLOCK_MONOTONIC on Linux: one clock for
this process, its threads and the load generator's process.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaAdminClient

from bench import cpu
from bench.events import Events
from bench.measure import first_answer, percentile
from bench.processes import BenchFailure, Served, serve, stop
from bench.subjects import Subject
from bench.subscriber import Subscriber
from broker.dispatcher import Dispatcher, broker_topic
from broker.filters import Everything
from broker.manifests import DeliverySpec, Destination, Trigger
from stack import services
from stack.layout import Layout
from stack.processes import free_port

NAMESPACE = "bench"
PARTITIONS = 4
EVENTS = 500        # sequential events per path for the latency figures
BURST = 5000        # events in the throughput burst
CONCURRENCY = 16    # concurrent clients posting the burst
WARMUP = 50         # events per path before the latency clock starts
CHUNK = 100         # latency events per turn when the paths take turns
READY_TIMEOUT = 30.0
ARRIVAL_TIMEOUT = 10.0   # one event, ingress → subscriber
BURST_DRAIN = 120.0      # after the last 202, for the rest of the burst to arrive
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=2.0)
ROOT = Path(__file__).resolve().parent.parent

# The targets, on the 2-core machine: reported, never enforced.
TARGET_ADDED_P50_MS = 5.0
TARGET_EVENTS_PER_SECOND = 1000.0

VIA_BROKER = "via broker"
DIRECT = "direct to subscriber"
DIRECT_BARE = "direct to bare"


# -- the private broker -----------------------------------------------------------------

@dataclass(frozen=True)
class PrivateBroker:
    name: str
    url: str            # where events are POSTed
    ingress: Served
    dispatcher: Dispatcher
    dispatcher_log: Path

    def failure(self, reason: str) -> BenchFailure:
        return self.ingress.failure(f"{reason} (the dispatcher's log: {self.dispatcher_log})")


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """The in-process dispatcher's and kafka-python's log lines go to `path`, not
    between the benchmark's own lines (kafka-python warns and even logs tracebacks
    on a routine close)."""
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    levels = {"broker": logging.INFO, "kafka": logging.WARNING}
    saved = [(logging.getLogger(name), logging.getLogger(name).propagate,
              logging.getLogger(name).level) for name in levels]
    for logger, _, _ in saved:
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(levels[logger.name])
    try:
        yield
    finally:
        for logger, propagate, level in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
        handler.close()


def _bootstrap(stack_env: Mapping[str, str]) -> list[str]:
    return [s.strip() for s in stack_env["KAFKA_BOOTSTRAP_SERVERS"].split(",") if s.strip()]


def _delete_topics(bootstrap: list[str], topics: Sequence[str]) -> None:
    """tansu keeps topics in memory: a burst should not stay there after the run."""
    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="eventworks-bench",
                                 request_timeout_ms=5000, bootstrap_timeout_ms=3000)
        try:
            admin.delete_topics(list(topics), raise_errors=False)
        finally:
            admin.close()


@contextlib.contextmanager
def private_broker(layout: Layout, stack_env: Mapping[str, str], subscriber_url: str,
                   log: Path, dispatcher_log: Path) -> Iterator[PrivateBroker]:
    """The ingress process and an in-process dispatcher for a broker of our own;
    both stopped, and the topics deleted, however the block ends."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    bootstrap = _bootstrap(stack_env)
    port = free_port()
    # The stack's own ingress component, renamed; no webhook secret (no /github here).
    served_like_stack = services.broker(layout, port, {**stack_env, "GITHUB_WEBHOOK_SECRET": ""})
    component = dataclasses.replace(
        served_like_stack, name="bench-ingress",
        env={**served_like_stack.env, "BROKER_NAMESPACE": NAMESPACE, "BROKER_NAME": name,
             "BROKER_PARTITIONS": str(PARTITIONS)})
    # The one Trigger: everything to the subscriber, no retries (the real manifest types).
    trigger = Trigger(name=f"{name}-subscriber", namespace=NAMESPACE, broker=name,
                      filter=Everything("no filter"),
                      subscriber=Destination(uri=subscriber_url, describe=subscriber_url),
                      delivery=DeliverySpec(retry=0, timeout=5.0), ordered=False,
                      file=Path(__file__))
    dispatcher = Dispatcher([trigger], bootstrap=bootstrap, namespace=NAMESPACE, broker=name,
                            partitions=PARTITIONS)
    topic = broker_topic(NAMESPACE, name)
    ingress: Served | None = None
    try:
        ingress = serve(component, log)
        dispatcher.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while not (component.ready() and dispatcher.ready()[0]):
            if ingress.exited():
                raise ingress.failure(f"exited with {ingress.process.returncode} while starting")
            if time.monotonic() > deadline:
                raise ingress.failure(f"private broker not ready within {READY_TIMEOUT:.0f} s "
                                      f"(dispatcher: {dispatcher.ready()[1]})")
            time.sleep(0.05)
        yield PrivateBroker(name, f"http://127.0.0.1:{port}/{NAMESPACE}/{name}", ingress,
                            dispatcher, dispatcher_log)
    finally:
        dispatcher.stop()
        if ingress is not None:
            stop(ingress)
        _delete_topics(bootstrap, [topic, f"{topic}-retries"])


# -- figures ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Latencies:
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    def document(self) -> dict[str, Any]:
        return {"p50": self.p50, "p99": self.p99, "mean": statistics.fmean(self.samples_ms),
                "max": max(self.samples_ms),
                "samples": [round(v, 3) for v in self.samples_ms]}


@dataclass(frozen=True)
class Burst:
    events: int
    seconds: float                  # first POST → last arrival (last response: bare)
    accepted_seconds: float         # first POST → last response
    cpu_seconds: dict[str, float]   # where the CPU went meanwhile (bench.cpu)

    @property
    def per_second(self) -> float:
        return self.events / self.seconds

    @property
    def accepted_per_second(self) -> float:
        return self.events / self.accepted_seconds

    def document(self) -> dict[str, Any]:
        return {"events": self.events, "seconds": self.seconds,
                "events_per_second": self.per_second,
                "responses_per_second": self.accepted_per_second,
                "cpu_seconds": self.cpu_seconds,
                "cpu_ms_per_event": {k: round(v * 1000 / self.events, 4)
                                     for k, v in self.cpu_seconds.items()}}


@dataclass(frozen=True)
class BrokerResult:
    latency: dict[str, Latencies]   # VIA_BROKER, DIRECT, DIRECT_BARE
    ingress_ms: Latencies           # via the broker: POST → the ingress's 202
    throughput: dict[str, Burst]    # VIA_BROKER, DIRECT, DIRECT_BARE
    duplicates: int                 # redeliveries the subscriber saw

    @property
    def added_p50(self) -> float:
        return self.latency[VIA_BROKER].p50 - self.latency[DIRECT].p50

    @property
    def added_p99(self) -> float:
        return self.latency[VIA_BROKER].p99 - self.latency[DIRECT].p99

    @property
    def latency_met(self) -> bool:
        return self.added_p50 <= TARGET_ADDED_P50_MS

    @property
    def throughput_met(self) -> bool:
        return self.throughput[VIA_BROKER].per_second >= TARGET_EVENTS_PER_SECOND


# -- 1. latency ------------------------------------------------------------------------

def _post(client: httpx.Client, url: str, who: str, body: bytes,
          headers: dict[str, str]) -> None:
    response = client.post(url, content=body, headers=headers)
    if not response.is_success:
        raise BenchFailure(f"{who} answered {response.status_code}: {response.text[:500]}")


def _through_broker(client: httpx.Client, broker: PrivateBroker, subscriber: Subscriber,
                    events: Events) -> tuple[float, float]:
    """One event through the broker: (POST → 202, POST → arrival) in ms."""
    headers = events.headers()
    expectation = subscriber.expect([headers["ce-id"]])
    started = time.perf_counter()
    _post(client, broker.url, "the private ingress", events.body, headers)
    acked = time.perf_counter()
    if not expectation.done.wait(ARRIVAL_TIMEOUT):
        raise broker.failure(f"event {headers['ce-id']} accepted but not delivered "
                             f"within {ARRIVAL_TIMEOUT:.0f} s")
    arrived = subscriber.arrivals[headers["ce-id"]]
    return (acked - started) * 1000, (arrived - started) * 1000


def _direct(client: httpx.Client, url: str, who: str, events: Events) -> float:
    headers = events.headers()
    started = time.perf_counter()
    _post(client, url, who, events.body, headers)
    return (time.perf_counter() - started) * 1000


def latency(broker: PrivateBroker, subscriber: Subscriber, bare: Served, events: Events,
            count: int, *, warmup: int = WARMUP, chunk: int = CHUNK,
            ) -> tuple[dict[str, Latencies], Latencies]:
    """`count` sequential events per path, the paths taking turns in chunks."""
    samples: dict[str, list[float]] = {VIA_BROKER: [], DIRECT: [], DIRECT_BARE: []}
    acks: list[float] = []
    with httpx.Client(timeout=REQUEST_TIMEOUT) as to_broker, \
            httpx.Client(timeout=REQUEST_TIMEOUT) as to_subscriber, \
            httpx.Client(timeout=REQUEST_TIMEOUT) as to_bare:
        for _ in range(warmup):
            _through_broker(to_broker, broker, subscriber, events)
            _direct(to_subscriber, subscriber.url, "the subscriber", events)
            _direct(to_bare, bare.url, "bare", events)
        done = 0
        while done < count:
            batch = min(chunk, count - done)
            for _ in range(batch):
                acked, arrived = _through_broker(to_broker, broker, subscriber, events)
                acks.append(acked)
                samples[VIA_BROKER].append(arrived)
            for _ in range(batch):
                samples[DIRECT].append(_direct(to_subscriber, subscriber.url,
                                               "the subscriber", events))
            for _ in range(batch):
                samples[DIRECT_BARE].append(_direct(to_bare, bare.url, "bare", events))
            done += batch
    return {k: Latencies(v) for k, v in samples.items()}, Latencies(acks)


# -- 2. throughput ---------------------------------------------------------------------

class Loader:
    """`python -m bench.load`, set up and waiting for `go` (see that module)."""

    def __init__(self, url: str, body: bytes, headers: list[dict[str, str]],
                 concurrency: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.load"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self._say({"url": url, "body": base64.b64encode(body).decode("ascii"),
                   "headers": headers, "concurrency": concurrency})
        ready = self._hear()
        if not ready.get("ready"):
            raise BenchFailure(f"the load generator did not start: {ready.get('error')}")

    def _say(self, message: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((message if isinstance(message, str)
                                  else json.dumps(message)) + "\n")
        self.process.stdin.flush()

    def _hear(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise BenchFailure(f"the load generator exited ({self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def go(self) -> dict[str, Any]:
        """Post the burst; (`first`, `last`, `cpu_seconds`, `error`) once it is done."""
        self._say("go")
        return self._hear()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _burst(url: str, who: str, events: Events, count: int, concurrency: int,
           subscriber: Subscriber | None, processes: Mapping[str, int],
           on_timeout: PrivateBroker | None = None) -> Burst:
    headers = [events.headers() for _ in range(count)]
    ids = [h["ce-id"] for h in headers]
    expectation = subscriber.expect(ids) if subscriber is not None else None
    loader = Loader(url, events.body, headers, concurrency)
    try:
        before = cpu.sample(processes)
        posted = loader.go()
    finally:
        loader.close()
    if posted["error"] is not None:
        raise BenchFailure(f"{who}, under load: {posted['error']}")
    first, last_response = float(posted["first"]), float(posted["last"])
    end = last_response
    if subscriber is not None and expectation is not None:
        if not expectation.done.wait(BURST_DRAIN):
            missing = subscriber.missing(expectation)
            reason = (f"{missing} of {count} events accepted by {who} never reached the "
                      f"subscriber within {BURST_DRAIN:.0f} s")
            raise on_timeout.failure(reason) if on_timeout else BenchFailure(reason)
        end = max(subscriber.arrivals[i] for i in ids)
    after = cpu.sample(processes)
    spent = {**cpu.spent(before, after), "load generator": round(posted["cpu_seconds"], 4)}
    return Burst(count, end - first, last_response - first, spent)


def throughput(broker: PrivateBroker, subscriber: Subscriber, bare: Served, events: Events,
               count: int, concurrency: int, stack_processes: Mapping[str, int],
               ) -> dict[str, Burst]:
    with_ingress = {**stack_processes, "private ingress": broker.ingress.process.pid}
    with_bare = {**stack_processes, "bare function": bare.process.pid}
    return {
        DIRECT: _burst(subscriber.url, "the subscriber", events, count, concurrency,
                       subscriber, stack_processes),
        VIA_BROKER: _burst(broker.url, "the private ingress", events, count, concurrency,
                           subscriber, with_ingress, on_timeout=broker),
        DIRECT_BARE: _burst(bare.url, "bare", events, count, concurrency, None, with_bare),
    }


# -- the whole broker benchmark ----------------------------------------------------------

def run(layout: Layout, stack_env: Mapping[str, str], bare: Subject, events: Events,
        logs: Path, *, count: int, burst: int, concurrency: int) -> BrokerResult:
    """Start the subscriber, the private broker and the bare function; measure; stop all."""
    (logs / "bench-ingress.log").unlink(missing_ok=True)
    (logs / f"{bare.name}-broker.log").unlink(missing_ok=True)
    subscriber = Subscriber()
    try:
        bare_served = serve(bare.component(free_port()), logs / f"{bare.name}-broker.log")
        try:
            first_answer(bare_served, events)
            with _logging_to(logs / "bench-dispatcher.log"), \
                    private_broker(layout, stack_env, subscriber.url, logs / "bench-ingress.log",
                                   logs / "bench-dispatcher.log") as broker:
                latencies, acks = latency(broker, subscriber, bare_served, events, count)
                bursts = throughput(broker, subscriber, bare_served, events, burst,
                                    concurrency, cpu.stack_processes(layout))
        finally:
            stop(bare_served)
    finally:
        subscriber.close()
    return BrokerResult(latencies, acks, bursts, subscriber.duplicates)
