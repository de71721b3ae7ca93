"""Kafka plumbing of the local broker: topics, and a writer that says when Kafka has an event.

The broker talks to Kafka through confluent-kafka (librdkafka, shipped inside its
wheel): on tansu it produces with acks=all in about 0.25 ms where kafka-python, in
pure Python, takes 1.3 ms and more CPU than everything else in the broker together
(bench/: the broker's events/s). Tests read topics back with kafka-python, a second,
independent client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

log = logging.getLogger("broker.topics")


class TooLarge(Exception):
    """Kafka will never take this record: it is over the size limit."""


class NotStored(Exception):
    """Kafka did not acknowledge the record (down, timed out, refused): try again."""


@dataclass(frozen=True)
class Stored:
    topic: str
    partition: int
    offset: int


def config(bootstrap: Sequence[str], client_id: str) -> dict[str, Any]:
    return {"bootstrap.servers": ",".join(bootstrap), "client.id": client_id,
            # librdkafka logs to stderr by itself; its connection chatter is not ours to show.
            "log_level": 3}


def ensure_topic(bootstrap: Sequence[str], topic: str, partitions: int, *,
                 client_id: str, timeout: float = 10.0) -> None:
    admin = AdminClient(config(bootstrap, client_id))
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)],
                                  operation_timeout=timeout, request_timeout=timeout)
    try:
        futures[topic].result(timeout)
        log.info("topic created", extra={"topic": topic, "partitions": partitions})
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
        log.info("topic exists", extra={"topic": topic})


# Errors after which a producer never stores again: librdkafka flags some fatal, and reports
# a fence on the record itself without the flag.
FOR_GOOD = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                      KafkaError._FENCED, KafkaError._FATAL})


def failed_for_good(error: KafkaError) -> bool:
    return bool(error.fatal()) or error.code() in FOR_GOOD


class Writer:
    """Produces with acks=all; `send` returns a Future resolved once Kafka acknowledged
    the record (or failed to). A thread of its own serves librdkafka's delivery reports,
    so callers in threads (`future.result()`) and in asyncio (`asyncio.wrap_future`)
    are both served."""

    def __init__(self, bootstrap: Sequence[str], *, client_id: str, timeout_ms: int,
                 max_event_bytes: int) -> None:
        self._settings = {
            **config(bootstrap, client_id),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 0,
            # One produce request in flight at a time: under load the next batch fills while
            # the broker works, with no linger added when traffic is light (tansu pays per
            # request, not per record).
            "max.in.flight.requests.per.connection": 1,
            # A dead Kafka must give an error in seconds, not librdkafka's 5-minute default.
            "message.timeout.ms": timeout_ms,
            "socket.timeout.ms": max(1000, timeout_ms // 2),
            # The body limit is MAX_EVENT_BYTES; headers and framing come on top.
            "message.max.bytes": max_event_bytes + 64 * 1024,
        }
        self._producer = Producer(self._settings)
        self._swap = threading.Lock()
        self._failed = threading.Event()  # the producer hit a fatal error: replace it
        self.renewals = 0
        self._closed = threading.Event()
        self._reports = threading.Thread(target=self._serve_reports, name=f"{client_id}-acks",
                                         daemon=True)
        self._reports.start()

    def _serve_reports(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def _report(self, future: Future[Stored], error: KafkaError | None, message: Any) -> None:
        if error is None:
            future.set_result(Stored(message.topic(), message.partition(), message.offset()))
            return
        if failed_for_good(error):
            # An idempotent producer that Kafka fenced (seen after SIGKILLed restarts in the
            # chaos run) fails every later record: without a new one, a dispatcher runs on
            # and delivers nothing, for good.
            self._failed.set()
        kind = TooLarge if error.code() == KafkaError.MSG_SIZE_TOO_LARGE else NotStored
        future.set_exception(kind(error.str()))

    def _renew(self) -> None:
        """A new producer for one that failed for good; what the old one held fails (its
        senders try again, as for any record Kafka did not acknowledge)."""
        with self._swap:
            if not self._failed.is_set():
                return
            old, self._producer = self._producer, Producer(self._settings)
            self._failed.clear()
            self.renewals += 1
        log.warning("producer failed for good; a new one takes over",
                    extra={"renewals": self.renewals})
        old.purge()
        old.poll(0)

    def send(self, topic: str, value: bytes | None, *, key: bytes | None = None,
             headers: Sequence[tuple[str, bytes]] = ()) -> Future[Stored]:
        future: Future[Stored] = Future()
        if self._failed.is_set():
            self._renew()
        try:
            self._producer.produce(topic, value=value, key=key, headers=list(headers),
                                   on_delivery=lambda error, message: self._report(
                                       future, error, message))
        except BufferError as exc:
            future.set_exception(NotStored(f"the producer queue is full: {exc}"))
        except KafkaException as exc:
            error = exc.args[0]
            if failed_for_good(error):
                self._failed.set()
            kind = TooLarge if error.code() == KafkaError.MSG_SIZE_TOO_LARGE else NotStored
            future.set_exception(kind(error.str()))
        return future

    def store(self, topic: str, value: bytes | None, *, key: bytes | None = None,
              headers: Sequence[tuple[str, bytes]] = (), timeout: float = 5.0) -> Stored:
        """`send` and wait for the acknowledgement (from a thread, never the event loop)."""
        try:
            return self.send(topic, value, key=key, headers=headers).result(timeout)
        except TimeoutError as exc:
            raise NotStored(f"no acknowledgement within {timeout} s") from exc

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what was accepted, then stop (idempotent)."""
        if self._closed.is_set():
            return
        left = self._producer.flush(timeout)
        if left:
            log.warning("records not delivered at close", extra={"records": left})
        self._closed.set()
        self._reports.join(1.0)
