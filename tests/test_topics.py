"""The broker's Kafka writer (broker/topics.py) against the session's Kafka: a producer
that failed for good is replaced, so a broker or dispatcher that Kafka fenced (found by the
chaos run: every later publish failed, and the dispatcher delivered nothing until it was
killed) stores again at its next record."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError

from broker import topics

pytestmark = pytest.mark.stack


@pytest.fixture
def writer(stack_env: dict[str, str]) -> Iterator[tuple[topics.Writer, str]]:
    bootstrap = [stack_env["KAFKA_BOOTSTRAP_SERVERS"]]
    topic = f"test-writer-{uuid.uuid4().hex[:8]}"
    topics.ensure_topic(bootstrap, topic, 1, client_id="test-writer-admin")
    made = topics.Writer(bootstrap, client_id="test-writer", timeout_ms=5000,
                         max_event_bytes=1024)
    yield made, topic
    made.close()


def test_given_a_fenced_producer_when_the_next_record_comes_then_a_new_producer_stores_it(
        writer: tuple[topics.Writer, str]) -> None:
    kafka, topic = writer
    assert kafka.store(topic, b"before", timeout=10).offset == 0
    failed: Future[topics.Stored] = Future()
    # What librdkafka reports on a record once Kafka fenced the idempotent producer: the
    # code, without the fatal flag (as the chaos run's dispatcher logged it).
    kafka._report(failed, KafkaError(KafkaError.PRODUCER_FENCED, "There is a newer producer "
                                     "with the same transactionalId which fences the current "
                                     "one"), None)
    with pytest.raises(topics.NotStored):
        failed.result(0)

    assert kafka.store(topic, b"after", timeout=10).offset == 1
    assert kafka.renewals == 1


def test_given_a_fatal_error_when_the_next_record_comes_then_a_new_producer_stores_it(
        writer: tuple[topics.Writer, str]) -> None:
    kafka, topic = writer
    failed: Future[topics.Stored] = Future()
    kafka._report(failed, KafkaError(KafkaError._FATAL, "fatal", fatal=True), None)

    assert kafka.store(topic, b"after", timeout=10).offset == 0
    assert kafka.renewals == 1


def test_given_a_passing_failure_when_the_next_record_comes_then_the_producer_is_kept(
        writer: tuple[topics.Writer, str]) -> None:
    kafka, topic = writer
    failed: Future[topics.Stored] = Future()
    kafka._report(failed, KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"), None)
    with pytest.raises(topics.NotStored):
        failed.result(0)

    assert kafka.store(topic, b"after", timeout=10).offset == 0
    assert kafka.renewals == 0
