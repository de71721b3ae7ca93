"""The local PingSource and KafkaSource (broker/sources.py) over a real Kafka (tansu), and
the stack's SinkBinding mapping (K_SINK only for bound functions)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from broker.manifests import (
    Broker,
    DeliverySpec,
    Destination,
    KafkaSinkSpec,
    KafkaSource,
    PingSource,
    Reference,
    SinkBinding,
    Wiring,
    load,
)
from broker.sources import ACCEPTED, Backoff, Pings, Sources
from stack import services
from stack.layout import Layout
from tests.subscriber import Answer, Received, Subscriber
from tests.tansu import ROOT, free_port, only, stored, wait_until

NAMESPACE = "tests"
FIXTURES = ROOT / "tests" / "data" / "manifests"
HERE = Path("test_sources.py")
CLUSTER_KAFKA = ("my-cluster-kafka-bootstrap.kafka:9092",)  # overridden by the test's Kafka


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def a_broker(name: str, partitions: int = 2) -> Broker:
    return Broker(name=name, namespace=NAMESPACE, partitions=partitions, replication_factor=1,
                  bootstrap_servers=None, delivery=DeliverySpec(), file=HERE)


def to_broker(name: str) -> Destination:
    return Destination(broker=name, describe=f"Broker {name}")


def to_uri(url: str) -> Destination:
    return Destination(uri=url, describe=url)


def a_ping_source(sink: Destination, *, name: str = "tick", schedule: str = "0 9 * * *",
                  timezone: str | None = None, data: bytes | None = b'{"n": 1}',
                  content_type: str | None = "application/json") -> PingSource:
    return PingSource(name=name, namespace=NAMESPACE, schedule=schedule, timezone=timezone,
                      data=data, content_type=content_type, sink=sink, file=HERE)


def a_kafka_source(name: str, topic: str, sink: Destination) -> KafkaSource:
    return KafkaSource(name=name, namespace=NAMESPACE, bootstrap_servers=CLUSTER_KAFKA,
                       topics=(topic,), consumer_group=f"knative-kafka-source-tests-{name}",
                       initial_offset="earliest", sink=sink, file=HERE)


def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False, request_timeout_ms=5000)
    try:
        return consumer.committed(TopicPartition(topic, partition))  # type: ignore[no-any-return]
    finally:
        consumer.close(autocommit=False)


FAST = Backoff(first=0.05, most=0.2)


@pytest.fixture(scope="module")
def producer(kafka: str) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    yield producer
    producer.close()


@pytest.fixture
def run(kafka: str) -> Iterator[Callable[..., Sources]]:
    running: list[Sources] = []

    def start(wiring: Wiring, *, started: datetime) -> Sources:
        sources = Sources(wiring, bootstrap=[kafka], started=started, backoff=FAST)
        sources.start()
        running.append(sources)
        return sources

    yield start
    for sources in running:
        sources.stop()


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    made = Subscriber()
    yield made
    made.close()


# -- PingSource: which ticks fire (no Kafka) ---------------------------------------------------

def test_given_a_schedule_when_now_is_not_a_scheduled_minute_then_nothing_is_due() -> None:
    pings = Pings([a_ping_source(to_uri("http://sink.test/"))], at("2025-03-03T09:00:30Z"))

    assert pings.due(at("2025-03-03T09:01:00Z")) == []
    assert pings.due(at("2025-03-03T09:30:00Z")) == []
    assert pings.due(at("2025-03-04T08:59:59Z")) == []


def test_given_missed_ticks_when_ticked_late_then_only_the_latest_fires_and_none_before_start(
        ) -> None:
    pings = Pings([a_ping_source(to_uri("http://sink.test/"), schedule="* * * * *")],
                  at("2025-03-03T09:00:30Z"))

    late = pings.due(at("2025-03-03T09:05:10Z"))  # 09:00 was before the start: never fires

    assert [event.attributes["time"] for _, event in late] == ["2025-03-03T09:05:00Z"]
    assert pings.due(at("2025-03-03T09:05:50Z")) == []


# -- PingSource over Kafka ---------------------------------------------------------------------

def test_given_a_ping_source_to_a_broker_when_ticked_at_a_scheduled_minute_then_one_event_in_its_topic(  # noqa: E501
        run: Callable[..., Sources], kafka: str) -> None:
    broker = unique("b")
    wiring = Wiring(brokers=(a_broker(broker),), ping_sources=(a_ping_source(to_broker(broker)),))
    sources = run(wiring, started=at("2025-03-03T08:59:30Z"))

    [emitted] = sources.tick(at("2025-03-03T09:00:00.250Z"))
    assert emitted.delivered.result(timeout=10) == ACCEPTED
    assert sources.tick(at("2025-03-03T09:00:40Z")) == []

    record = only(kafka, emitted.event.id, f"knative-broker-{NAMESPACE}-{broker}")
    uuid.UUID(emitted.event.id)  # a fresh UUID per tick
    assert record.headers["ce_specversion"] == b"1.0"
    assert record.headers["ce_type"] == b"dev.knative.sources.ping"
    assert record.headers["ce_source"] == b"/apis/v1/namespaces/tests/pingsources/tick"
    assert record.headers["ce_time"] == b"2025-03-03T09:00:00Z"
    assert record.headers["content-type"] == b"application/json"
    assert record.value == b'{"n": 1}'
    assert record.key is None


def test_given_a_timezone_and_data_base64_when_ticked_then_the_zone_decides_and_the_bytes_arrive(
        run: Callable[..., Sources], subscriber: Subscriber) -> None:
    # kinds/: daily-close is "5 0 * JAN-DEC mon-fri" in Europe/Berlin, dataBase64 aGVsbG8=,
    # and its sink is the Service accrue-payment, here the test's subscriber.
    kinds = load(FIXTURES / "kinds", lambda kind, name, namespace: subscriber.url)
    [close] = [p for p in kinds.ping_sources if p.name == "daily-close"]
    sources = run(replace(kinds, ping_sources=(close,), kafka_sources=()),
                  started=at("2025-03-02T22:00:00Z"))  # Sunday, 23:00 in Berlin

    [monday] = sources.tick(at("2025-03-02T23:05:00.100Z"))  # Monday 00:05 in Berlin
    assert monday.delivered.result(timeout=10) == ACCEPTED
    assert sources.tick(at("2025-03-03T00:05:30Z")) == []  # 00:05 in UTC: 01:05 in Berlin

    [got] = subscriber.received
    assert got.id == monday.event.id
    assert got.body == b"hello"
    assert "content-type" not in got.headers  # no contentType: Knative sets none either
    assert got.headers["ce-time"] == "2025-03-02T23:05:00Z"
    assert got.headers["ce-source"] == "/apis/v1/namespaces/kinds/pingsources/daily-close"
    assert got.headers["ce-type"] == "dev.knative.sources.ping"


def test_given_a_kafka_sink_when_a_ping_is_relayed_then_its_topic_holds_it_structured(
        run: Callable[..., Sources], kafka: str) -> None:
    topic = unique("audit-")
    sink = KafkaSinkSpec(name="audit", namespace=NAMESPACE, topic=topic,
                         bootstrap_servers=CLUSTER_KAFKA, content_mode="structured",
                         num_partitions=1, replication_factor=1, file=HERE)
    wiring = Wiring(kafka_sinks=(sink,), ping_sources=(a_ping_source(
        Destination(kafka_topic=topic, describe="KafkaSink audit")),))
    sources = run(wiring, started=at("2025-03-03T08:59:30Z"))

    [emitted] = sources.tick(at("2025-03-03T09:00:01Z"))
    assert emitted.delivered.result(timeout=10) == ACCEPTED

    consumer = KafkaConsumer(bootstrap_servers=kafka, auto_offset_reset="earliest",
                             enable_auto_commit=False, fetch_max_wait_ms=5)
    consumer.assign([TopicPartition(topic, 0)])
    records: list[Any] = []

    def read() -> bool:
        for batch in consumer.poll(timeout_ms=50).values():
            records.extend(batch)
        return bool(records)

    wait_until(read, "the record in the KafkaSink's topic")
    consumer.close()
    [record] = records
    assert dict(record.headers)["content-type"] == b"application/cloudevents+json"
    document = json.loads(record.value)
    assert document["id"] == emitted.event.id
    assert document["type"] == "dev.knative.sources.ping"
    assert document["data"] == {"n": 1}


# -- KafkaSource over Kafka: one running relay, its consumers joined once ----------------------

@dataclass(frozen=True)
class Relay:
    sources: Sources
    plain: Subscriber
    flaky: Subscriber
    broker: str
    topics: dict[str, str]                  # source name -> the topic it reads
    committed_while_failing: list[int | None]


@pytest.fixture(scope="module")
def relay(kafka: str) -> Iterator[Relay]:
    suffix = uuid.uuid4().hex[:8]
    broker = f"b{suffix}"
    names = ("to-uri", "to-broker", "flaky")
    topics = {name: f"records-{name}-{suffix}" for name in names}
    seen_committed: list[int | None] = []

    def fail_twice(request: Received, seen: int) -> Answer:
        if seen <= 2:
            seen_committed.append(committed(kafka, "knative-kafka-source-tests-flaky",
                                            topics["flaky"]))
            return Answer(503)
        return Answer(202)

    plain, flaky = Subscriber(), Subscriber(fail_twice)
    wiring = Wiring(brokers=(a_broker(broker),), kafka_sources=(
        a_kafka_source("to-uri", topics["to-uri"], to_uri(plain.url)),
        a_kafka_source("to-broker", topics["to-broker"], to_broker(broker)),
        a_kafka_source("flaky", topics["flaky"], to_uri(flaky.url)),
    ))
    sources = Sources(wiring, bootstrap=[kafka], backoff=FAST)
    sources.start()
    try:
        wait_until(lambda: sources.ready()[0], "every kafka source joined", timeout=15)
        yield Relay(sources, plain, flaky, broker, topics, seen_committed)
    finally:
        sources.stop()
        plain.close()
        flaky.close()


def test_given_a_plain_record_when_relayed_to_a_uri_then_the_sink_gets_a_kafka_event(
        relay: Relay, producer: KafkaProducer) -> None:
    topic, value = relay.topics["to-uri"], b"\x00raw \xffbytes"
    sent = producer.send(topic, key=b"order-7", value=value, headers=[
        ("X-Trace_Id", b"abc-1"), ("retries", b"2"),
        ("Content-Type", b"Application/Octet-Stream")]).get(timeout=5)
    event_id = f"partition:{sent.partition}/offset:{sent.offset}"

    wait_until(lambda: relay.plain.of(event_id), "the sink got the record")

    [got] = relay.plain.of(event_id)
    headers = got.headers
    assert headers["ce-type"] == "dev.knative.kafka.event"
    assert headers["ce-source"] == f"/apis/v1/namespaces/tests/kafkasources/to-uri#{topic}"
    assert headers["ce-subject"] == f"partition:{sent.partition}#{sent.offset}"
    assert headers["ce-key"] == headers["ce-partitionkey"] == "order-7"
    assert headers["ce-kafkaheaderxtraceid"] == "abc-1"
    assert headers["ce-kafkaheaderretries"] == "2"
    assert headers["content-type"] == "application/octet-stream"
    assert not any(h.startswith("ce-kafkaheadercontent") for h in headers)
    sent_at = datetime.fromisoformat(headers["ce-time"])
    assert abs(sent_at - datetime.now(UTC)) < timedelta(minutes=1)  # the record's timestamp
    assert got.body == value


def test_given_a_plain_record_when_relayed_to_a_broker_then_its_topic_stores_it_keyed(
        relay: Relay, producer: KafkaProducer, kafka: str) -> None:
    sent = producer.send(relay.topics["to-broker"], key=b"k-1", value=b'{"a": 1}',
                         headers=[("content-type", b"application/json")]).get(timeout=5)
    event_id = f"partition:{sent.partition}/offset:{sent.offset}"
    topic = f"knative-broker-{NAMESPACE}-{relay.broker}"

    wait_until(lambda: stored(kafka, event_id, topic), "the event in the broker topic")

    record = only(kafka, event_id, topic)
    assert record.key == b"k-1"  # partitionkey, as the ingress stores it
    assert record.headers["ce_type"] == b"dev.knative.kafka.event"
    assert record.headers["ce_key"] == b"k-1"
    assert record.headers["content-type"] == b"application/json"
    assert record.value == b'{"a": 1}'


BINARY = "binary"
STRUCTURED = "structured"


def a_cloudevent_record(mode: str, event_id: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    attributes = {"specversion": "1.0", "id": event_id, "source": "/tests/origin",
                  "type": "dev.tests.thing", "time": "2025-03-03T09:00:00Z", "color": "blue"}
    if mode == BINARY:
        return b'{"a": 1}', [*((f"ce_{k}", v.encode()) for k, v in attributes.items()),
                             ("content-type", b"application/json"), ("x-other", b"1")]
    document = {**attributes, "datacontenttype": "application/json", "data": {"a": 1}}
    return json.dumps(document).encode(), [("content-type", b"application/cloudevents+json")]


@pytest.mark.parametrize("mode", [BINARY, STRUCTURED])
def test_given_a_record_that_already_is_a_cloudevent_when_relayed_then_it_passes_unchanged(
        relay: Relay, producer: KafkaProducer, mode: str) -> None:
    event_id = str(uuid.uuid4())
    value, headers = a_cloudevent_record(mode, event_id)
    producer.send(relay.topics["to-uri"], key=b"k", value=value, headers=headers).get(timeout=5)

    wait_until(lambda: relay.plain.of(event_id), "the sink got the event")

    [got] = relay.plain.of(event_id)
    assert got.headers["ce-type"] == "dev.tests.thing"
    assert got.headers["ce-source"] == "/tests/origin"
    assert got.headers["ce-time"] == "2025-03-03T09:00:00Z"
    assert got.headers["ce-color"] == "blue"
    assert got.headers["content-type"] == "application/json"
    assert not any(h.startswith("ce-kafkaheader") for h in got.headers)
    assert "ce-key" not in got.headers  # the record key is no attribute of the event
    assert "ce-partitionkey" not in got.headers
    assert json.loads(got.body) == {"a": 1}


def test_given_a_sink_failing_twice_when_relayed_then_delivered_once_accepted_and_committed_after(
        relay: Relay, producer: KafkaProducer, kafka: str) -> None:
    topic = relay.topics["flaky"]
    sent = producer.send(topic, value=b"x").get(timeout=5)
    event_id = f"partition:{sent.partition}/offset:{sent.offset}"
    group = "knative-kafka-source-tests-flaky"

    wait_until(lambda: committed(kafka, group, topic, sent.partition) == sent.offset + 1,
               "the offset committed", timeout=10)

    assert len(relay.flaky.of(event_id)) == 3
    assert len(relay.committed_while_failing) == 2
    assert all(c is None or c <= sent.offset for c in relay.committed_while_failing)
    time.sleep(0.2)  # nothing more may come
    assert len(relay.flaky.of(event_id)) == 3


# -- the process ---------------------------------------------------------------------------------

KAFKA_SOURCE_YAML = """\
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata:
  name: relay
spec:
  bootstrapServers:
    - my-cluster-kafka-bootstrap.kafka:9092
  topics:
    - {topic}
  initialOffset: earliest
  sink:
    uri: {sink}
"""


def test_given_a_kafka_source_manifest_when_the_process_runs_then_ready_and_records_reach_the_sink(
        kafka: str, producer: KafkaProducer, subscriber: Subscriber, tmp_path: Path) -> None:
    topic = unique("process-")
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - sources.yaml\n")
    (tmp_path / "sources.yaml").write_text(KAFKA_SOURCE_YAML.format(topic=topic,
                                                                   sink=subscriber.url))
    port = free_port()
    env = {**os.environ, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "KAFKA_BOOTSTRAP_SERVERS": kafka,
           "KNATIVE_BASE": str(tmp_path), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "sources.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "broker", "sources"], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert process.poll() is None, f"the sources exited:\n{log.read_text()}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/readiness",
                             timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, "the sources are ready", timeout=15)
        sent = producer.send(topic, value=b"hello").get(timeout=5)
        event_id = f"partition:{sent.partition}/offset:{sent.offset}"
        wait_until(lambda: subscriber.of(event_id), "the sink got the record")
        assert subscriber.of(event_id)[0].headers["ce-source"] == (
            f"/apis/v1/namespaces/default/kafkasources/relay#{topic}")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    assert code == 0, log.read_text()


# -- SinkBinding in the stack ----------------------------------------------------------------------

def test_given_sink_bindings_when_the_stack_maps_them_then_only_bound_functions_get_k_sink(
        tmp_path: Path) -> None:
    # kinds/: SinkBinding batch-reader binds the Service sign-tx to the Broker default.
    kinds = load(FIXTURES / "kinds", lambda kind, name, namespace: f"http://{name}.test/")
    to_uri_binding = SinkBinding(
        name="to-uri", namespace="kinds",
        subject=Reference("serving.knative.dev/v1", "Service", "todo-crud", "kinds"),
        sink=to_uri("http://elsewhere.test/events"), file=HERE)
    broker_url = "http://127.0.0.1:1/eventworks/default"
    names = ["parse-comment", "sign-tx", "todo-crud"]

    sinks = services.sink_urls((*kinds.sink_bindings, to_uri_binding), names, broker_url)

    assert sinks == {"sign-tx": broker_url, "todo-crud": "http://elsewhere.test/events"}
    layout = Layout(root=ROOT, state=tmp_path)
    env = {"SIGNING_PAGE_URL": "http://s.test/", "GITHUB_API_URL": "http://g.test",
           "ETCD_ENDPOINTS": "http://e.test", "DATABASE_URL": "postgresql://u@db.test/x"}
    made = {name: services.function(layout, name, 1, env, embedded_db=False,
                                    k_sink=sinks.get(name)) for name in names}
    assert {name: c.env.get("K_SINK") for name, c in made.items()} == {
        "parse-comment": None, "sign-tx": broker_url,
        "todo-crud": "http://elsewhere.test/events"}
