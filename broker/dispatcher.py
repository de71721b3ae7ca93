"""The dispatcher: delivers the broker topic to every Trigger's subscriber.

One Kafka consumer group per Trigger (`knative-trigger-<namespace>-<name>`), as
Knative's Kafka broker has. For each record: the Trigger's filter decides; a
match is POSTed to the subscriber in binary mode with `Prefer: reply`, retried
by the Trigger's delivery spec, and dead-lettered with `knativeerror*`
extensions when it fails for good; a reply event is published to the broker
topic. An offset is committed only once the record and every record before it
in its partition are delivered, dead-lettered or filtered out: a dispatcher
killed at any moment redelivers what was not finished and loses nothing.

Ordering (annotation `kafka.eventing.knative.dev/delivery.order`): `ordered`
delivers one record at a time per partition, retries included; `unordered`
delivers up to `max_in_flight` records at once.

Retry state survives a restart or a rebalance: each failed attempt is written
(before the backoff) to a ledger topic, keyed by trigger, partition and offset,
so the next owner of the partition goes on counting instead of starting over —
an event with `retry: 3` is tried 4 times, then dead-lettered, whoever tries it.
(tansu does not keep offset-commit metadata, which would otherwise hold it.)
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from broker import delivery, topics
from broker.admission import sent_time
from broker.connections import Connections
from broker.delivery import Event, Outcome
from broker.ingress import to_record

log = logging.getLogger("broker.dispatcher")

COMMIT_EVERY = 0.02            # seconds: commits are batched, never delayed longer
PUBLISH_TIMEOUT = 5.0          # seconds to wait for Kafka to acknowledge a reply
DEAD_LETTER_MAX_BACKOFF = 30.0  # a dead-letter sink that fails is retried forever, slowly
DEFAULT_TIMEOUT = 30.0         # seconds per attempt when the delivery spec sets none
# An idle Trigger consumer pauses its partitions after this long without records and
# waits for the doorbell (see `Doorbell`); it looks once a second anyway.
DOZE_AFTER = 0.25
DOZE_LOOK_EVERY = 1.0
DOZE_LOOK_FOR = 0.03   # a look without a ring: a few fetches, then doze again


class Match(Protocol):
    @property
    def matched(self) -> bool: ...


class Filter(Protocol):
    def match(self, event: Mapping[str, str], /) -> Match: ...


class DestinationLike(Protocol):
    @property
    def uri(self) -> str | None: ...
    @property
    def kafka_topic(self) -> str | None: ...
    @property
    def broker(self) -> str | None: ...
    @property
    def describe(self) -> str: ...


class DeliveryLike(Protocol):
    @property
    def retry(self) -> int: ...
    @property
    def backoff_policy(self) -> str: ...
    @property
    def backoff_delay(self) -> float: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def dead_letter_sink(self) -> DestinationLike | None: ...


class TriggerLike(Protocol):
    """What the dispatcher reads of a Trigger (broker.manifests.Trigger); read-only."""

    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def broker(self) -> str: ...
    @property
    def filter(self) -> Filter: ...
    @property
    def subscriber(self) -> DestinationLike: ...
    @property
    def delivery(self) -> DeliveryLike: ...
    @property
    def ordered(self) -> bool: ...


def broker_topic(namespace: str, broker: str) -> str:
    return f"knative-broker-{namespace}-{broker}"


def group_id(trigger: TriggerLike) -> str:
    return f"knative-trigger-{trigger.namespace}-{trigger.name}"


# -- where events go besides subscribers: Kafka topics ----------------------------------

@dataclass(frozen=True)
class Record:
    """A consumed Kafka record, as plain values (librdkafka's Message is all optionals)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, message: Message) -> Record:
        partition, offset = message.partition(), message.offset()
        if partition is None or offset is None:  # set on every record a consumer returns
            raise ValueError("a Kafka record without partition or offset")
        raw = message.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = tuple((name, value.encode() if isinstance(value, str) else value or b"")
                        for name, value in pairs)
        return cls(partition, offset, message.key(), message.value(), headers)

    @property
    def event(self) -> Event:
        return Event(self.headers, self.value or b"", self.key)


class Publisher:
    """Writes events to Kafka topics (replies, KafkaSink dead letters, the retry ledger)
    and waits for Kafka's acknowledgement: a reply is only 'published' once stored."""

    def __init__(self, writer: topics.Writer) -> None:
        self._writer = writer

    def event(self, topic: str, event: Event) -> None:
        self._writer.store(topic, event.value, key=event.key, headers=event.headers,
                           timeout=PUBLISH_TIMEOUT)

    def raw(self, topic: str, key: bytes, value: bytes | None) -> None:
        self._writer.store(topic, value, key=key, timeout=PUBLISH_TIMEOUT)


def reply_event(outcome: Outcome) -> Event:
    """A subscriber's reply as the broker topic stores it (the ingress's own mapping)."""
    assert outcome.reply is not None
    headers = {k.lower(): v for k, v in outcome.headers.items()}
    record = to_record(outcome.reply, outcome.reply_body, binary=outcome.reply_binary,
                       sent_time=sent_time(headers, outcome.reply_body, outcome.reply_binary))
    return Event(tuple(record.headers), record.value, record.key)


class RetryLedger:
    """Attempts already spent on unfinished records, kept in a Kafka topic so that a
    restarted or rebalanced dispatcher goes on counting (see the module docstring)."""

    def __init__(self, publisher: Publisher, bootstrap: list[str], topic: str) -> None:
        self._publisher = publisher
        self._bootstrap = bootstrap
        self.topic = topic

    @staticmethod
    def _key(trigger: str, partition: int, offset: int) -> bytes:
        return f"{trigger}\x00{partition}\x00{offset}".encode()

    def record(self, trigger: str, partition: int, offset: int, attempts: int) -> None:
        self._publisher.raw(self.topic, self._key(trigger, partition, offset),
                            str(attempts).encode())

    def forget(self, trigger: str, partition: int, offset: int) -> None:
        self._publisher.raw(self.topic, self._key(trigger, partition, offset), None)

    def load(self, trigger: str) -> dict[tuple[int, int], int]:
        """Every (partition, offset) → attempts this trigger has spent, read to the end."""
        spent: dict[tuple[int, int], int] = {}
        for record in records_to_end(self._bootstrap, self.topic,
                                     client_id="eventworks-retry-ledger", timeout=10):
            name, partition, offset = (record.key or b"").decode().split("\x00")
            if name != trigger:
                continue
            where = (int(partition), int(offset))
            if record.value is None:
                spent.pop(where, None)
            else:
                spent[where] = int(record.value)
        return spent


def records_to_end(bootstrap: list[str], topic: str, *, client_id: str,
                   timeout: float) -> list[Record]:
    """Every record of `topic` from its start to the end it had when asked, in order per
    partition (none when the topic does not exist); reads at most `timeout` seconds."""
    consumer = Consumer({**topics.config(bootstrap, client_id),
                         "group.id": f"{client_id}-reader",  # assigned: never joins
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    found: list[Record] = []
    try:
        listed = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if listed is None or listed.error is not None:
            return []
        end = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
               for p in listed.partitions}
        todo = {p for p, last in end.items() if last > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.1):
                if message.error() is not None:
                    continue
                record = Record.of(message)
                found.append(record)
                if record.offset + 1 >= end[record.partition]:
                    todo.discard(record.partition)
        return found
    finally:
        consumer.close()


# -- one record, start to finish (runs on a worker thread) ------------------------------

@dataclass(frozen=True)
class Finished:
    partition: int
    offset: int
    generation: int
    how: str              # delivered | dead-lettered | dropped | abandoned
    attempts: int


class Courier:
    """Delivers one record for one Trigger: attempts, backoff, reply, dead letter."""

    def __init__(self, trigger: TriggerLike, *, client: Connections, publisher: Publisher,
                 ledger: RetryLedger, stopping: threading.Event,
                 on_attempt: Callable[[str, int, Outcome], None] | None = None) -> None:
        self.trigger = trigger
        self.client = client
        self.publisher = publisher
        self.ledger = ledger
        self.stopping = stopping
        self.on_attempt = on_attempt
        self.reply_topic = broker_topic(trigger.namespace, trigger.broker)
        if trigger.subscriber.uri is None:
            raise ValueError(f"trigger {trigger.name}: the subscriber has no URL")
        self.url = trigger.subscriber.uri
        self.timeout = trigger.delivery.timeout or DEFAULT_TIMEOUT

    def deliver(self, event: Event, partition: int, offset: int, spent: int) -> tuple[str, int]:
        spec = self.trigger.delivery
        attempts = spent
        while True:
            attempts += 1
            outcome = self._attempt(event)
            if self.on_attempt is not None:
                self.on_attempt(event.id, attempts, outcome)
            if outcome.ok:
                return "delivered", attempts
            if not outcome.retryable or attempts > spec.retry:
                log.warning("delivery failed for good", extra={
                    "trigger": self.trigger.name, "event_id": event.id, "attempts": attempts,
                    "status": outcome.status, "reason": outcome.reason})
                return self._dead_letter(event, outcome), attempts
            self.ledger.record(self.trigger.name, partition, offset, attempts)
            wait = delivery.backoff(spec.backoff_policy, spec.backoff_delay, attempts)
            if self.stopping.wait(wait):
                return "abandoned", attempts

    def _attempt(self, event: Event) -> Outcome:
        outcome = delivery.send(self.client, self.url, event, self.timeout)
        if outcome.ok and outcome.reply is not None:
            try:
                self.publisher.event(self.reply_topic, reply_event(outcome))
            except Exception as exc:  # Kafka refused or timed out: deliver again later
                return Outcome(status=None, reason=f"the reply was not published: {exc!r}")
        return outcome

    def _dead_letter(self, event: Event, outcome: Outcome) -> str:
        sink = self.trigger.delivery.dead_letter_sink
        if sink is None:
            log.error("event dropped: no dead-letter sink", extra={
                "trigger": self.trigger.name, "event_id": event.id})
            return "dropped"
        letter = event.with_extensions(delivery.dead_letter_extensions(self.url, outcome))
        tries = 0
        while True:
            if self._send_to(sink, letter):
                return "dead-lettered"
            tries += 1
            wait = min(DEAD_LETTER_MAX_BACKOFF,
                       delivery.backoff("exponential", self.trigger.delivery.backoff_delay
                                        or 0.2, tries))
            if self.stopping.wait(wait):
                return "abandoned"

    def _send_to(self, sink: DestinationLike, event: Event) -> bool:
        try:
            if sink.kafka_topic is not None:
                self.publisher.event(sink.kafka_topic, event)
                return True
            if sink.broker is not None:
                self.publisher.event(broker_topic(self.trigger.namespace, sink.broker), event)
                return True
        except Exception as exc:
            log.warning("dead letter not stored", extra={"sink": sink.describe,
                                                         "error": repr(exc)})
            return False
        assert sink.uri is not None
        return delivery.send(self.client, sink.uri, event, self.timeout).ok


# -- the doorbell: one fetcher for the idle ones -------------------------------------------

class Doorbell(threading.Thread):
    """Watches the broker topic for new records so that idle Trigger consumers need not.

    tansu holds every fetch for `fetch.wait.max.ms` even when data waits, so a consumer
    fetches with 5 ms waits to keep deliveries fast: 200 fetches a second, per consumer,
    even when nothing happens. With one consumer per Trigger that was most of an idle
    stack's CPU. An idle Trigger consumer pauses its partitions instead (`pause` loses
    nothing: the offsets it has not committed stay where they are) and waits here; this
    one consumer, reading from the end of the topic, rings when any record arrives.
    A missed ring costs latency, never an event: dozing consumers also look every second.

    It rings a Trigger only for records its filter matches. Ringing every Trigger for
    every record woke all twelve consumers of the stack whenever one flow was busy: the
    signing pipeline (three Triggers) ran with thirteen consumers polling tansu, whose
    fetches were half the pipeline's CPU. A consumer woken for nothing only filtered the
    records out; it now catches up on them when it looks (every second), which commits
    their offsets later and delivers nothing later.
    """

    def __init__(self, *, bootstrap: list[str], topic: str, partitions: int,
                 stopping: threading.Event,
                 filters: Mapping[str, Filter] | None = None) -> None:
        super().__init__(name="doorbell", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.stopping = stopping
        # Trigger name → its filter; None rings every Trigger for every record.
        self.filters = dict(filters) if filters is not None else None
        self.rings = 0
        # Trigger name → partition → the offset after the last record seen that it matches
        # (with no filters, under the name "", every record).
        self.latest: dict[str, dict[int, int]] = {}
        self._rung: dict[str, tuple[int, float]] = {}  # Trigger name → (rings, when)
        self._everyone = 0  # rings for every Trigger: `ring()` with no records (at stop)
        self._rang = threading.Condition()

    def run(self) -> None:
        consumer = Consumer({
            **topics.config(self.bootstrap, "eventworks-doorbell"),
            "group.id": "eventworks-doorbell",  # assigned, never joins or commits
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        })
        try:
            consumer.assign([TopicPartition(self.topic, p, OFFSET_END)
                             for p in range(self.partitions)])
            while not self.stopping.is_set():
                latest = self._matched(arrivals(consumer, wait=0.1))
                if latest:
                    self.ring(latest)
        except Exception:
            log.exception("the doorbell failed; idle consumers look every second")
        finally:
            consumer.close()

    def _matched(self, messages: list[Message]) -> dict[str, dict[int, int]]:
        """Trigger name → partition → the offset after the last of `messages` it matches.
        Only the headers are read (the broker topic is in binary mode): no data decoded."""
        found: dict[str, dict[int, int]] = {}
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if message.error() is not None or partition is None or offset is None:
                continue
            if self.filters is None:
                names: Iterable[str] = ("",)
            else:
                attributes = Record.of(message).event.attributes
                names = [name for name, f in self.filters.items()
                         if f.match(attributes).matched]
            for name in names:
                found.setdefault(name, {})[partition] = offset + 1
        return found

    def ring(self, latest: Mapping[str, Mapping[int, int]] | None = None) -> None:
        """Wake the Triggers `latest` names (every one when None: at stop)."""
        with self._rang:
            now = time.monotonic()
            for name, offsets in (latest or {}).items():
                mine = self.latest.setdefault(name, {})
                for partition, offset in offsets.items():
                    mine[partition] = max(offset, mine.get(partition, 0))
                self._rung[name] = (self._rung.get(name, (0, 0.0))[0] + 1, now)
            if latest is None:
                self._everyone += 1
            self.rings += 1
            self._rang.notify_all()

    def _key(self, trigger: str) -> str:
        return trigger if self.filters is not None else ""

    def rings_of(self, trigger: str) -> int:
        """How often it rang for this Trigger, counting the rings for every Trigger.
        (`_rang`'s lock is reentrant: `wait` asks this while holding it.)"""
        with self._rang:
            return self._rung.get(self._key(trigger), (0, 0.0))[0] + self._everyone

    def last_ring_of(self, trigger: str) -> float:
        with self._rang:
            return self._rung.get(self._key(trigger), (0, 0.0))[1]

    def latest_of(self, trigger: str) -> Mapping[int, int]:
        with self._rang:
            return dict(self.latest.get(self._key(trigger), {}))

    def wait(self, trigger: str, seen: int, timeout: float) -> int:
        """Wait until it rang for `trigger` after `seen` of its rings (or `timeout`);
        returns its rings so far."""
        with self._rang:
            self._rang.wait_for(
                lambda: self.rings_of(trigger) != seen or self.stopping.is_set(), timeout)
            return self.rings_of(trigger)


# -- one Trigger's consumer (its own thread) ---------------------------------------------

def arrivals(consumer: Consumer, *, wait: float, most: int = 500) -> list[Message]:
    """What has arrived: wait up to `wait` for the first record, then take what else is
    there without waiting. (librdkafka's consume(n, t) waits for all n or the whole t:
    every delivery would wait out the timeout.)"""
    first = consumer.poll(wait)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)]


@dataclass
class _Partition:
    generation: int
    pending: collections.deque[Record] = field(default_factory=collections.deque)
    in_flight: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    next_offset: int | None = None   # the lowest offset not finished yet
    committed: int | None = None
    seen: int = 0                    # the offset after the last record received


class TriggerConsumer(threading.Thread):
    def __init__(self, trigger: TriggerLike, *, bootstrap: list[str], courier: Courier,
                 ledger: RetryLedger, workers: Any, max_in_flight: int,
                 session_timeout_ms: int = 1500, doorbell: Doorbell | None = None) -> None:
        super().__init__(name=f"trigger-{trigger.name}", daemon=True)
        self.doorbell = doorbell
        self.dozing = False
        self._busy_at = time.monotonic()
        self.trigger = trigger
        self.bootstrap = bootstrap
        self.courier = courier
        self.ledger = ledger
        self.workers = workers
        self.max_in_flight = 1 if trigger.ordered else max_in_flight
        self.session_timeout_ms = session_timeout_ms
        self.topic = broker_topic(trigger.namespace, trigger.broker)
        self.joined = threading.Event()
        self.stopping = courier.stopping
        self.results: queue.SimpleQueue[Finished] = queue.SimpleQueue()
        self.partitions: dict[int, _Partition] = {}
        self.spent: dict[tuple[int, int], int] = {}
        self._generation = 0
        self._consumer: Consumer | None = None
        self._last_commit = 0.0
        self._paused: set[int] = set()
        self._rings_seen = 0
        self.error: BaseException | None = None

    # rebalance callbacks: librdkafka calls them inside consume(), on this thread
    def _revoked(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._commit(sync=True)
        for tp in revoked:
            self.partitions.pop(tp.partition, None)
            self._paused.discard(tp.partition)

    def _assigned(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        # New partitions start unpaused, and may hold a backlog: be awake for them.
        self.dozing = False
        self._busy_at = time.monotonic()
        self._generation += 1
        self.spent = self.ledger.load(self.trigger.name)
        for tp in assigned:
            self.partitions[tp.partition] = _Partition(generation=self._generation)
        self.joined.set()
        log.info("partitions assigned", extra={
            "trigger": self.trigger.name, "partitions": sorted(tp.partition for tp in assigned)})

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by Dispatcher.ready
            self.error = exc
            log.exception("trigger consumer failed", extra={"trigger": self.trigger.name})

    def _run(self) -> None:
        consumer = Consumer({
            **topics.config(self.bootstrap, group_id(self.trigger)),
            "group.id": group_id(self.trigger),
            "enable.auto.commit": False,
            # The local topic is new with every stack (tansu keeps it in memory): read it
            # from its start so that nothing published before the group joined is missed.
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 5,  # tansu holds a fetch this long even when data waits
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.session_timeout_ms // 3),
        })
        self._consumer = consumer
        consumer.subscribe([self.topic], on_assign=self._assigned, on_revoke=self._revoked)
        try:
            while not self.stopping.is_set():
                wait = 0.02
                if self.dozing:
                    self._doze(consumer)
                    wait = 0.0  # still poll: rebalances and errors arrive through it
                arrived = arrivals(consumer, wait=wait)
                for message in arrived:
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("consume error", extra={
                                "trigger": self.trigger.name, "error": str(error)})
                        continue
                    record = Record.of(message)
                    state = self.partitions.get(record.partition)
                    if state is not None:
                        state.pending.append(record)
                        state.seen = record.offset + 1
                self._drain()
                # Busy while it delivers: records its filter drops keep nobody awake.
                if self._dispatch():
                    self._busy_at = time.monotonic()
                self._settle()
                self._commit(sync=False)
                self._backpressure(consumer)
                self._maybe_doze(consumer)
            deadline = time.monotonic() + 5
            while self._in_flight() and time.monotonic() < deadline:
                self._drain(block=0.05)
                self._settle()
            self._commit(sync=True)
        finally:
            consumer.close()

    def _in_flight(self) -> int:
        return sum(len(p.in_flight) for p in self.partitions.values())

    def _assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self.partitions]

    def _maybe_doze(self, consumer: Consumer) -> None:
        """Pause when nothing matched, rang, waits or flies for DOZE_AFTER, and this
        consumer has fetched past every record the doorbell saw for it: what comes after
        rings the doorbell. Records its filter drops do not keep it awake (they wait,
        uncommitted, for its next look or ring)."""
        bell = self.doorbell
        if bell is None or self.dozing or not self.partitions or self._paused:
            return
        if self._in_flight() or any(p.pending for p in self.partitions.values()):
            self._busy_at = time.monotonic()
            return
        name = self.trigger.name
        quiet_since = max(self._busy_at, bell.last_ring_of(name))
        if time.monotonic() - quiet_since < DOZE_AFTER:
            return
        # The rings first, then the offsets: a ring in between wakes it at once.
        rings = bell.rings_of(name)
        latest = bell.latest_of(name)
        if any(state.seen < latest.get(partition, 0)
               for partition, state in self.partitions.items()):
            return  # the doorbell saw records for it this consumer has not: only slow
        self._commit(sync=False)
        consumer.pause(self._assignment())
        self.dozing = True
        self._rings_seen = rings

    def _doze(self, consumer: Consumer) -> None:
        bell = self.doorbell
        assert bell is not None
        rings = bell.wait(self.trigger.name, self._rings_seen, DOZE_LOOK_EVERY)
        now = time.monotonic()
        rang = rings != self._rings_seen
        if not rang and now - self._busy_at < DOZE_LOOK_EVERY:
            return  # a short wait (stopping, a spurious wake-up): doze on
        self.dozing = False
        # Woken by a ring: awake until quiet again. A periodic look: only a few fetches.
        self._busy_at = now if rang else now - DOZE_AFTER + DOZE_LOOK_FOR
        self._wake(consumer)

    def _wake(self, consumer: Consumer) -> None:
        """Resume, and seek to where each partition stands: librdkafka fetches a resumed
        partition only after a backoff (~0.4 s on tansu); a seek fetches at once. A
        partition that never delivered a record has no position: its committed offset,
        or else its beginning, is where `auto.offset.reset` would have started."""
        assignment = self._assignment()
        consumer.resume(assignment)
        try:
            positions = consumer.position(assignment)
            unknown = [tp for tp in positions if tp.offset < 0]
            committed = {tp.partition: tp.offset
                         for tp in (consumer.committed(unknown, timeout=5) if unknown else [])}
            for tp in positions:
                offset = tp.offset if tp.offset >= 0 else committed.get(tp.partition, -1)
                consumer.seek(TopicPartition(self.topic, tp.partition,
                                             offset if offset >= 0 else OFFSET_BEGINNING))
        except KafkaException as exc:
            # Kafka slow or away: resumed all the same, only the first fetch comes later.
            log.warning("no seek after waking", extra={"trigger": self.trigger.name,
                                                       "error": str(exc)})

    def _dispatch(self) -> int:
        """Start what may start; returns how many deliveries it started."""
        started = 0
        if self.trigger.ordered:
            for partition, state in self.partitions.items():
                while state.pending and not state.in_flight:
                    started += self._take(partition, state)
            return started
        budget = self.max_in_flight - self._in_flight()
        for partition, state in self.partitions.items():
            while state.pending and budget > 0:
                taken = self._take(partition, state)
                budget -= taken
                started += taken
        return started

    def _take(self, partition: int, state: _Partition) -> int:
        """Start the partition's next record: 1 when it went to a worker, 0 when filtered out."""
        record: Record = state.pending.popleft()
        offset = record.offset
        if state.next_offset is None:
            state.next_offset = offset
        event = record.event
        if not self.trigger.filter.match(event.attributes).matched:
            state.finished.add(offset)
            return 0
        state.in_flight.add(offset)
        spent = self.spent.get((partition, offset), 0)
        self.workers.submit(self._work, partition, offset, state.generation, event, spent)
        return 1

    def _work(self, partition: int, offset: int, generation: int, event: Event,
              spent: int) -> None:
        try:
            how, attempts = self.courier.deliver(event, partition, offset, spent)
        except Exception:
            log.exception("delivery crashed", extra={"trigger": self.trigger.name,
                                                     "event_id": event.id})
            how, attempts = "abandoned", spent
        if how != "abandoned" and attempts > 1:
            try:
                self.ledger.forget(self.trigger.name, partition, offset)
            except Exception as exc:
                log.warning("retry ledger not cleared", extra={"error": repr(exc)})
        self.results.put(Finished(partition, offset, generation, how, attempts))

    def _drain(self, block: float = 0.0) -> None:
        while True:
            try:
                done = self.results.get(timeout=block) if block else self.results.get_nowait()
            except queue.Empty:
                return
            block = 0.0
            state = self.partitions.get(done.partition)
            if state is None or state.generation != done.generation:
                continue  # the partition moved on: its new owner delivers it again
            state.in_flight.discard(done.offset)
            if done.how == "abandoned":
                # Stopping: leave it unfinished so that it is delivered again after a restart.
                continue
            state.finished.add(done.offset)
            self.spent.pop((done.partition, done.offset), None)

    def _settle(self) -> None:
        for state in self.partitions.values():
            while state.next_offset is not None and state.next_offset in state.finished:
                state.finished.discard(state.next_offset)
                state.next_offset += 1

    def _commit(self, *, sync: bool) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        now = time.monotonic()
        if not sync and now - self._last_commit < COMMIT_EVERY:
            return
        offsets = [TopicPartition(self.topic, partition, state.next_offset)
                   for partition, state in self.partitions.items()
                   if state.next_offset is not None and state.next_offset != state.committed]
        if not offsets:
            return
        self._last_commit = now
        if sync:
            consumer.commit(offsets=offsets, asynchronous=False)
        else:
            consumer.commit(offsets=offsets, asynchronous=True)
        for tp in offsets:
            self.partitions[tp.partition].committed = tp.offset

    def _backpressure(self, consumer: Consumer) -> None:
        for partition, state in self.partitions.items():
            if len(state.pending) > 1000 and partition not in self._paused:
                consumer.pause([TopicPartition(self.topic, partition)])
                self._paused.add(partition)
            elif len(state.pending) < 100 and partition in self._paused:
                consumer.resume([TopicPartition(self.topic, partition)])
                self._paused.discard(partition)


# -- the process ---------------------------------------------------------------------------

class Dispatcher:
    """Every Trigger of one broker, each with its consumer thread, sharing the workers."""

    def __init__(self, triggers: Iterable[TriggerLike], *, bootstrap: list[str],
                 namespace: str, broker: str, partitions: int = 4, max_in_flight: int = 32,
                 session_timeout_ms: int = 1500,
                 on_attempt: Callable[[str, int, Outcome], None] | None = None) -> None:
        self.triggers = tuple(triggers)
        self.bootstrap = bootstrap
        self.topic = broker_topic(namespace, broker)
        self.partitions = partitions
        self.max_in_flight = max_in_flight
        self.session_timeout_ms = session_timeout_ms
        self.on_attempt = on_attempt
        self.stopping = threading.Event()
        self.consumers: list[TriggerConsumer] = []
        self._writer: topics.Writer | None = None
        self._client: Connections | None = None
        self._workers: Any = None
        self.doorbell: Doorbell | None = None

    def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        ledger_topic = f"{self.topic}-retries"
        topics.ensure_topic(self.bootstrap, self.topic, self.partitions,
                            client_id="eventworks-dispatcher-admin")
        topics.ensure_topic(self.bootstrap, ledger_topic, 1,
                            client_id="eventworks-dispatcher-admin")
        self._writer = topics.Writer(self.bootstrap, client_id="eventworks-dispatcher",
                                     timeout_ms=5000, max_event_bytes=1024 * 1024)
        publisher = Publisher(self._writer)
        ledger = RetryLedger(publisher, self.bootstrap, ledger_topic)
        self._client = Connections()
        slots = sum(self.partitions if t.ordered else self.max_in_flight
                    for t in self.triggers)
        self._workers = ThreadPoolExecutor(max_workers=max(1, slots),
                                           thread_name_prefix="delivery")
        self.doorbell = Doorbell(bootstrap=self.bootstrap, topic=self.topic,
                                 partitions=self.partitions, stopping=self.stopping,
                                 filters={t.name: t.filter for t in self.triggers})
        self.doorbell.start()
        for trigger in self.triggers:
            courier = Courier(trigger, client=self._client, publisher=publisher, ledger=ledger,
                              stopping=self.stopping, on_attempt=self.on_attempt)
            consumer = TriggerConsumer(trigger, bootstrap=self.bootstrap, courier=courier,
                                       ledger=ledger, workers=self._workers,
                                       max_in_flight=self.max_in_flight,
                                       session_timeout_ms=self.session_timeout_ms,
                                       doorbell=self.doorbell)
            consumer.start()
            self.consumers.append(consumer)

    def ready(self) -> tuple[bool, str]:
        failed = [c.trigger.name for c in self.consumers if c.error is not None]
        if failed:
            return False, f"trigger consumers failed: {', '.join(failed)}"
        waiting = [c.trigger.name for c in self.consumers if not c.joined.is_set()]
        if waiting:
            return False, f"joining: {', '.join(waiting)}"
        return True, f"{len(self.consumers)} triggers"

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for consumer in self.consumers:
            consumer.join(max(0.1, deadline - time.monotonic()))
        if self.doorbell is not None:
            self.doorbell.ring()  # wakes dozing consumers that are still waiting
            self.doorbell.join(max(0.1, deadline - time.monotonic()))
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()
        if self._writer is not None:
            self._writer.close(2)
