"""The dispatcher as a process (`python -m broker dispatcher`), killed with SIGKILL:
at least once, nothing lost, and retry counts that survive the restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaProducer

from broker.dispatcher import broker_topic
from tests.subscriber import Answer, Subscriber
from tests.tansu import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
WIRING = ROOT / "tests" / "data" / "manifests" / "dispatcher-process"


class DispatcherProcess:
    def __init__(self, kafka: str, broker: str, recorder: str, dead: str, log: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "KAFKA_BOOTSTRAP_SERVERS": kafka,
                    "LISTEN_ADDRESS": f"127.0.0.1:{self.port}", "KNATIVE_BASE": str(WIRING),
                    "BROKER_NAMESPACE": "proc", "BROKER_NAME": broker,
                    "FUNCTION_RECORDER_URL": recorder, "FUNCTION_DEADLETTERS_URL": dead}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "broker", "dispatcher"],
                                            cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT)
        wait_until(self.ready, "the dispatcher joined its consumer group", timeout=30)

    def ready(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health/readiness",
                             timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def processes() -> Iterator[list[DispatcherProcess]]:
    made: list[DispatcherProcess] = []
    yield made
    for process in made:
        process.stop()


def publish(kafka: str, broker: str, count: int) -> list[str]:
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    ids = []
    try:
        for number in range(count):
            event_id = str(uuid.uuid4())
            producer.send(broker_topic("proc", broker), value=json.dumps({"n": number}).encode(),
                          headers=[("ce_specversion", b"1.0"), ("ce_id", event_id.encode()),
                                   ("ce_source", b"/tests"), ("ce_type", b"dev.tests.thing"),
                                   ("content-type", b"application/json")]).get(timeout=5)
            ids.append(event_id)
    finally:
        producer.close()
    return ids


def test_given_dispatcher_killed_mid_delivery_when_restarted_then_every_event_arrives(
        kafka, subscribers, processes, tmp_path):
    recorder = Subscriber(lambda request, seen: Answer(202, delay=0.3))
    dead = Subscriber()
    subscribers += [recorder, dead]
    dispatcher = DispatcherProcess(kafka, "slow", recorder.url, dead.url, tmp_path / "d.log")
    processes.append(dispatcher)
    dispatcher.start()
    ids = publish(kafka, "slow", 10)

    wait_until(lambda: len(set(recorder.ids())) >= 3, "a few deliveries", timeout=15)
    dispatcher.kill()  # mid-delivery: one is in flight, most are not committed
    seen_before = set(recorder.ids())
    assert seen_before < set(ids)
    dispatcher.start()

    wait_until(lambda: set(ids) <= set(recorder.ids()), "every event after the restart",
               timeout=30)
    assert dead.received == []
    # Ordered: the first arrivals of the ten events keep their partition order.
    first = list(dict.fromkeys(i for i in recorder.ids() if i in ids))
    assert first == ids


def test_given_retry_3_when_dispatcher_is_killed_between_attempts_then_4_tries_in_all(
        kafka, subscribers, processes, tmp_path):
    recorder = Subscriber(lambda request, seen: Answer(500, body=b"down"))
    dead = Subscriber()
    subscribers += [recorder, dead]
    dispatcher = DispatcherProcess(kafka, "failing", recorder.url, dead.url, tmp_path / "d.log")
    processes.append(dispatcher)
    dispatcher.start()
    (event_id,) = publish(kafka, "failing", 1)

    wait_until(lambda: len(recorder.of(event_id)) == 2, "two attempts", timeout=15)
    time.sleep(0.5)  # inside the 2 s backoff before retry 2: the ledger has the count
    dispatcher.kill()
    dispatcher.start()

    wait_until(lambda: dead.of(event_id), "the dead letter", timeout=30)
    assert len(recorder.of(event_id)) == 4
    assert dead.of(event_id)[0].headers["ce-knativeerrorcode"] == "500"
