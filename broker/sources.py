"""`python -m broker sources`: Knative's PingSource and KafkaSource adapters, locally.

Every PingSource and KafkaSource of the Kustomize base a cluster gets (KNATIVE_BASE) runs
here and delivers to its sink:

- a Broker: the event is produced to the broker topic `knative-broker-<namespace>-<name>`
  exactly as the ingress stores it (binary content mode: `ce_*` headers, `content-type`,
  the `partitionkey` extension as the record key), with acks=all;
- a KafkaSink: produced to its topic in the sink's `contentMode` (structured unless it says
  binary, as Knative's KafkaSink receiver writes);
- a `uri`, or a Service ref resolved to a local function (FUNCTION_<NAME>_URL): POSTed in
  binary content mode.

A sink that fails is tried again with an exponential backoff capped at `Backoff.most`, until
it accepts. Nothing is dropped silently: a final 4xx (400, 401, 403, 413…; the statuses
DESIGN §7 does not retry) ends the event with an error log, and so does the process being
told to stop, which logs every event it gives up ("event not delivered").

Kafka: KAFKA_BOOTSTRAP_SERVERS overrides the bootstrap servers of every source and every
sink. The manifests name the cluster's Kafka (e.g. `my-cluster-kafka-bootstrap.kafka:9092`),
which no laptop has, so locally every source reads from, and every sink writes to, the
stack's Kafka. Topics that a source reads or a sink writes are created when missing, since
tansu starts empty: a Broker's with its partitions, a KafkaSink's with `numPartitions`, a
KafkaSource's with one partition (in a cluster they exist already).

PingSource, as knative/eventing's adapter (pkg/adapter/mtping) does it:

- `schedule` is five cron fields (robfig/cron's standard parser; `?` means `*`) read in
  `timezone` (an IANA name; UTC when unset), as the adapter's `CRON_TZ=<timezone>` prefix.
- Each tick emits `type` dev.knative.sources.ping, `source`
  /apis/v1/namespaces/<namespace>/pingsources/<name>, a fresh UUID `id`, and as data
  `data` (the bytes as written) or `dataBase64` decoded. `datacontenttype` is
  `contentType` when it is set and there is data; Knative sets no default, so neither
  does this.
- `time` is the tick's scheduled time. Knative's SDK client stamps the send time, the tick
  plus up to 0.5 s of deliberate jitter; the scheduled time is what that stands for, and
  it can be tested.
- Missed ticks are not replayed: only ticks after the process started fire. A clock loop
  that wakes late (a suspended laptop) fires each PingSource once, for its latest due
  tick, as robfig/cron runs a late entry once.
- Deliberate differences: `data` with contentType application/json is sent as written,
  while Knative re-marshals it (compacted, keys sorted). Across DST changes the schedule
  follows Debian cron (cronsim): a fixed-time tick inside a skipped hour fires at the
  transition (robfig/cron skips it), one inside a repeated hour fires once.

KafkaSource, as Knative's Kafka data plane does it (eventing-kafka-broker's
InvalidCloudEventInterceptor):

- One consumer group `consumerGroup` over `topics`; `initialOffset` applies when the group
  has no committed offset.
- A record that already is a CloudEvent passes unchanged. That means structured mode
  (`content-type: application/cloudevents…`) or binary mode (a `ce_specversion` header).
  A record that claims to be one but does not parse is treated as a plain record, as
  Knative does.
- Any other record becomes `type` dev.knative.kafka.event, `source`
  /apis/v1/namespaces/<namespace>/kafkasources/<name>#<topic>, `id`
  partition:<p>/offset:<o>, `subject` partition:<p>#<o>, and `time` the record's
  timestamp. The record key, read as UTF-8 text (Knative's default key type, string),
  becomes both the `key` and the `partitionkey` extension. Knative's data plane sets
  both, so a Broker sink keeps the record's partitioning. Every header becomes a
  `kafkaheader<name>` extension, with the name lower-cased and everything but a-z and
  0-9 removed. The exception is `content-type`, which becomes `datacontenttype`
  (lower-cased). The data is the value, byte for byte.
- At least once: a source delivers its records one at a time, in order. A record's offset
  is committed, synchronously, only after its sink accepted it or refused it for good.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import httpx
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, from_structured
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from cronsim import CronSim, CronSimError
from pydantic import Field

from broker import health, topics
from broker.admission import FIRST, JSON_MEDIA_TYPE, sent_time
from broker.delivery import Event, Outcome
from broker.dispatcher import DEFAULT_TIMEOUT, Publisher, arrivals
from broker.dispatcher_process import function_resolver
from broker.ingress import to_record
from broker.manifests import Destination, KafkaSource, ManifestError, PingSource, Wiring, load
from eventing import logs
from eventing.settings import EnvSettings

log = logging.getLogger("broker.sources")

ROOT = Path(__file__).resolve().parent.parent

PING_TYPE = "dev.knative.sources.ping"
KAFKA_TYPE = "dev.knative.kafka.event"
STRUCTURED = "application/cloudevents+json"
SOURCE_TOPIC_PARTITIONS = 1   # a KafkaSource topic created locally; a cluster's exists already
PRODUCE_TIMEOUT_MS = 5000

# What became of one event at its sink.
ACCEPTED = "accepted"    # a 2xx, or Kafka acknowledged it
REFUSED = "refused"      # a final 4xx: retrying cannot help; logged as dropped
ABANDONED = "abandoned"  # the process is stopping; logged as not delivered


# -- events in the broker topic's record form ---------------------------------------------

def rfc3339(at: datetime) -> str:
    text = at.astimezone(UTC).isoformat(timespec="milliseconds" if at.microsecond else "seconds")
    return text.removesuffix("+00:00") + "Z"


def _event(attributes: Mapping[str, str], data: bytes) -> Event:
    """The ingress's record layout: required attributes first, the rest sorted,
    datacontenttype as `content-type`, the partitionkey extension as the key."""
    order = [*(n for n in FIRST if n in attributes), *sorted(set(attributes) - set(FIRST))]
    headers = tuple(("content-type" if n == "datacontenttype" else f"ce_{n}",
                     attributes[n].encode()) for n in order)
    key = attributes.get("partitionkey")
    return Event(headers, data, None if key is None else key.encode())


def _data_member(value: bytes, content_type: str | None) -> dict[str, object]:
    # The JSON event format: JSON data embedded, text as a string, anything else base64.
    media = (content_type or "application/json").split(";")[0].strip().lower()
    try:
        if JSON_MEDIA_TYPE.match(media):
            return {"data": json.loads(value)}
        if media.startswith("text/"):
            return {"data": value.decode()}
    except ValueError:  # not what its content type says: carried as bytes, unchanged
        pass
    return {"data_base64": base64.b64encode(value).decode()}


def structured(event: Event) -> Event:
    """`event` in structured content mode, as a KafkaSink with that contentMode writes it."""
    document: dict[str, object] = dict(event.attributes)
    if event.value:
        document.update(_data_member(event.value, event.attributes.get("datacontenttype")))
    return Event((("content-type", STRUCTURED.encode()),),
                 json.dumps(document, ensure_ascii=False).encode(), event.key)


# -- PingSource -----------------------------------------------------------------------------

def ping_event(source: PingSource, at: datetime, event_id: str) -> Event:
    attributes = {
        "specversion": "1.0",
        "id": event_id,
        "source": f"/apis/v1/namespaces/{source.namespace}/pingsources/{source.name}",
        "type": PING_TYPE,
        "time": rfc3339(at),
    }
    if source.data is not None and source.content_type is not None:
        attributes["datacontenttype"] = source.content_type
    return _event(attributes, source.data or b"")


class Schedule:
    """One PingSource's cron schedule, and the instant up to which it has been checked."""

    def __init__(self, source: PingSource, started: datetime) -> None:
        self.source = source
        self.zone = ZoneInfo(source.timezone or "UTC")
        # robfig/cron's `?` is `*`; cronsim knows only `*`.
        self.expression = source.schedule.replace("?", "*")
        self.checked = started  # ticks at or before it never fire: no replay
        try:
            CronSim(self.expression, started.astimezone(self.zone))
            self.possible = True
        except CronSimError:  # e.g. "0 0 30 2 *": valid fields, no such day; never fires
            self.possible = False
            log.warning("ping source never fires: no date matches its schedule",
                        extra={"source": source.name, "schedule": source.schedule})

    def due(self, now: datetime) -> tuple[datetime | None, int]:
        """The latest scheduled time in (checked, now], and how many earlier ones it skips."""
        latest: datetime | None = None
        skipped = 0
        if self.possible and now > self.checked:
            for at in CronSim(self.expression, self.checked.astimezone(self.zone)):
                # in UTC: aware times of one zone compare by wall clock, blind to DST's fold
                if at.astimezone(UTC) > now:
                    break
                if latest is not None:
                    skipped += 1
                latest = at.astimezone(UTC)
            self.checked = now
        return latest, skipped


class Pings:
    """Every PingSource's schedule; `due(now)` says which events `now` brings.

    The clock loop calls it about once a minute with the real time; tests call it with the
    instants they choose, so no test waits for a real minute.
    """

    def __init__(self, sources: Iterable[PingSource], started: datetime,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.schedules = [Schedule(s, started) for s in sources]
        self.new_id = new_id
        self._lock = threading.Lock()  # the clock loop and a caller may tick at once

    def due(self, now: datetime) -> list[tuple[PingSource, Event]]:
        found = []
        with self._lock:
            for schedule in self.schedules:
                at, skipped = schedule.due(now)
                if at is None:
                    continue
                if skipped:
                    log.warning("ping ticks missed while the clock stood still; firing the "
                                "latest only", extra={"source": schedule.source.name,
                                                      "missed": skipped})
                found.append((schedule.source, ping_event(schedule.source, at, self.new_id())))
        return found


# -- KafkaSource ----------------------------------------------------------------------------

class RecordLike(Protocol):
    """What is read of a Kafka record (kafka-python's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes | None]] | None: ...


def _header_name(name: str) -> str:
    return "kafkaheader" + re.sub(r"[^a-z0-9]", "", name.lower())


def _passed_on(headers: Mapping[str, bytes], value: bytes) -> Event | None:
    """The record as the ingress would store it, when it already is a CloudEvent."""
    content_type = headers.get("content-type", b"").decode("utf-8", "replace").strip().lower()
    is_structured = content_type.startswith("application/cloudevents")
    if not is_structured and "ce_specversion" not in headers:
        return None
    # No key: the SDK would turn it into a partitionkey the event did not have.
    message = KafkaMessage(headers=dict(headers), key=None, value=value)
    try:
        if is_structured:
            event = from_structured(message, JSONFormat())
            has_time = sent_time({}, value, binary=False)
        else:
            event = from_binary(message, JSONFormat())
            has_time = "ce_time" in headers
        record = to_record(event, value, binary=not is_structured, sent_time=has_time)
    except Exception as exc:  # the SDK raises several kinds for a bad event
        log.info("record is not a valid CloudEvent; wrapping it", extra={"error": repr(exc)})
        return None
    return Event(tuple(record.headers), record.value, record.key)


def _wrapped(source: KafkaSource, record: RecordLike,
             headers: Sequence[tuple[str, bytes]]) -> Event:
    where = (record.partition, record.offset)
    attributes = {
        "specversion": "1.0",
        "id": "partition:{}/offset:{}".format(*where),
        "source": f"/apis/v1/namespaces/{source.namespace}/kafkasources/{source.name}"
                  f"#{record.topic}",
        "type": KAFKA_TYPE,
        "subject": "partition:{}#{}".format(*where),
    }
    if record.timestamp is not None and record.timestamp >= 0:
        attributes["time"] = rfc3339(datetime.fromtimestamp(0, UTC)
                                     + timedelta(milliseconds=record.timestamp))
    if record.key is not None:
        attributes["key"] = attributes["partitionkey"] = record.key.decode("utf-8", "replace")
    for name, raw in headers:
        text = raw.decode("utf-8", "replace")
        if name.lower() == "content-type":
            attributes["datacontenttype"] = text.lower()
        else:
            attributes[_header_name(name)] = text
    return _event(attributes, record.value or b"")


def record_event(source: KafkaSource, record: RecordLike) -> Event:
    """The CloudEvent a KafkaSource sends for `record` (see the module docstring)."""
    headers = [(name, raw or b"") for name, raw in record.headers or ()]
    lowered = {name.lower(): raw for name, raw in headers}
    passed = _passed_on(lowered, record.value or b"")
    return passed if passed is not None else _wrapped(source, record, headers)


# -- sinks ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """A sink, resolved once at start."""

    describe: str
    url: str | None = None      # POST here
    topic: str | None = None    # or produce here
    structured: bool = False    # a KafkaSink whose contentMode is structured
    partitions: int = 1         # for creating the topic when it is missing


def _to_uri(destination: Destination, namespace: str, wiring: Wiring) -> Target:
    return Target(destination.describe, url=destination.uri)


def _to_kafka_sink(destination: Destination, namespace: str, wiring: Wiring) -> Target:
    sink = next((s for s in wiring.kafka_sinks if s.topic == destination.kafka_topic), None)
    return Target(destination.describe, topic=destination.kafka_topic,
                  structured=sink is None or sink.content_mode == "structured",
                  partitions=(sink.num_partitions if sink else None) or 1)


def _to_broker(destination: Destination, namespace: str, wiring: Wiring) -> Target:
    # A Destination keeps the Broker's name only; a ref names one in the source's namespace.
    assert destination.broker is not None
    broker = wiring.broker(destination.broker, namespace)
    return Target(destination.describe, topic=broker.topic, partitions=broker.partitions)


# Which Destination field is set decides where events go.
_TARGETS: Mapping[str, Callable[[Destination, str, Wiring], Target]] = {
    "uri": _to_uri,
    "kafka_topic": _to_kafka_sink,
    "broker": _to_broker,
}


def target(destination: Destination, namespace: str, wiring: Wiring) -> Target:
    for field_name, make in _TARGETS.items():
        if getattr(destination, field_name) is not None:
            return make(destination, namespace, wiring)
    raise ManifestError(f"{destination.describe or 'a sink'}: no uri, topic or broker")


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: exponential from `first`, never longer than `most`."""

    first: float = 0.1
    most: float = 10.0  # a sink that comes back is reached again within this

    def delay(self, retry: int) -> float:
        # the exponent stops growing long after `most` is reached: 2**1024 is no float
        return float(min(self.most, self.first * 2 ** min(retry - 1, 64)))


def post(client: httpx.Client, url: str, event: Event, timeout: float) -> Outcome:
    """One binary-mode POST. No `Prefer: reply`: a source has nowhere to put a reply."""
    headers = {k: v for k, v in event.http_headers().items() if k != "prefer"}
    try:
        response = client.post(url, content=event.value, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return Outcome(status=None, reason=f"{type(exc).__name__}: {exc}")
    return Outcome(status=response.status_code, body=response.content[:1024])


class Courier:
    """Gets one event accepted by one sink, retrying (see the module docstring)."""

    def __init__(self, *, client: httpx.Client, publisher: Publisher, stopping: threading.Event,
                 backoff: Backoff, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.client = client
        self.publisher = publisher
        self.stopping = stopping
        self.backoff = backoff
        self.timeout = timeout

    def _attempt(self, sink: Target, event: Event) -> Outcome:
        try:
            if sink.url is not None:
                return post(self.client, sink.url, event, self.timeout)
            assert sink.topic is not None
            self.publisher.event(sink.topic, structured(event) if sink.structured else event)
        except Exception as exc:  # Kafka refused or timed out, or a client closed at stop
            return Outcome(status=None, reason=repr(exc))
        return Outcome(status=202)

    def deliver(self, sink: Target, event: Event, origin: str) -> str:
        about = {"source": origin, "sink": sink.describe, "event_id": event.id}
        attempts = 0
        while not self.stopping.is_set():
            attempts += 1
            outcome = self._attempt(sink, event)
            if outcome.ok:
                return ACCEPTED
            if not outcome.retryable:
                log.error("event dropped: the sink refused it", extra={
                    **about, "status": outcome.status, "attempts": attempts})
                return REFUSED
            log.warning("sink failed; trying again", extra={
                **about, "status": outcome.status, "reason": outcome.reason,
                "attempts": attempts})
            if self.stopping.wait(self.backoff.delay(attempts)):
                break
        log.error("event not delivered: stopping", extra={**about, "attempts": attempts})
        return ABANDONED


@dataclass(frozen=True)
class ConsumedRecord:
    """A consumed record as plain values (librdkafka's Message is all optionals)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, message: Message) -> ConsumedRecord:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise ValueError("a Kafka record without topic, partition or offset")
        kind, stamp = message.timestamp()
        raw = message.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = [(name, value.encode() if isinstance(value, str) else value or b"")
                   for name, value in pairs]
        return cls(topic, partition, offset, stamp if kind != 0 else None,  # 0: no timestamp
                   message.key(), message.value(), headers)


class KafkaSourceConsumer(threading.Thread):
    """One KafkaSource: its consumer group, its records delivered in order, one at a time."""

    def __init__(self, source: KafkaSource, *, bootstrap: Sequence[str], sink: Target,
                 courier: Courier, session_timeout_ms: int) -> None:
        super().__init__(name=f"kafka-source-{source.name}", daemon=True)
        self.source = source
        self.bootstrap = list(bootstrap)
        self.sink = sink
        self.courier = courier
        self.stopping = courier.stopping
        self.session_timeout_ms = session_timeout_ms
        self.origin = f"KafkaSource {source.namespace}/{source.name}"
        self.joined = threading.Event()
        self.error: BaseException | None = None

    # librdkafka calls this inside consume(), on this thread. Offsets are committed as
    # records finish, so a revocation has nothing left to commit.
    def _assigned(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self.joined.set()
        log.info("partitions assigned", extra={
            "source": self.source.name,
            "partitions": sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)})

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by Sources.ready
            self.error = exc
            log.exception("kafka source failed", extra={"source": self.source.name})

    def _run(self) -> None:
        consumer = Consumer({
            **topics.config(self.bootstrap,
                            f"kafka-source-{self.source.namespace}-{self.source.name}"),
            "group.id": self.source.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": self.source.initial_offset,
            "fetch.wait.max.ms": 5,  # tansu holds a fetch this long even when data waits
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.session_timeout_ms // 3),
        })
        consumer.subscribe(list(self.source.topics), on_assign=self._assigned)
        try:
            while not self.stopping.is_set():
                for message in arrivals(consumer, wait=0.05, most=100):
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("consume error", extra={
                                "source": self.source.name, "error": str(error)})
                        continue
                    if not self._deliver(consumer, ConsumedRecord.of(message)):
                        return  # stopping
        finally:
            consumer.close()

    def _deliver(self, consumer: Consumer, record: ConsumedRecord) -> bool:
        """Deliver and commit one record; False when stopping."""
        event = record_event(self.source, record)
        if self.courier.deliver(self.sink, event, self.origin) == ABANDONED:
            return False  # not committed: delivered again after a restart
        try:
            consumer.commit(offsets=[TopicPartition(record.topic, record.partition,
                                                    record.offset + 1)], asynchronous=False)
        except KafkaException as exc:
            # Going on loses nothing: commits are cumulative, so the next record's covers
            # this one; and if the partition moved to another member, that one starts at
            # the last committed offset and delivers it again.
            log.warning("offset not committed", extra={
                "source": self.source.name, "event_id": event.id, "error": repr(exc)})
        return True


# -- all sources of the manifests -----------------------------------------------------------

@dataclass(frozen=True)
class Emitted:
    """A ping event on its way to its sink; `delivered` ends as ACCEPTED, REFUSED or
    ABANDONED."""

    source: PingSource
    event: Event
    delivered: Future[str]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Sources:
    """Every PingSource and KafkaSource of a wiring, with what they share: one producer,
    one HTTP client, one courier. `start()` connects; `tick(now)` fires the ping sources
    due; `run_pings(clock)` ticks every minute until `stop()`."""

    def __init__(self, wiring: Wiring, *, bootstrap: Sequence[str],
                 started: datetime | None = None, backoff: Backoff | None = None,
                 session_timeout_ms: int = 1500,
                 local_broker: tuple[str, str] | None = None) -> None:
        self.wiring = wiring
        self.bootstrap = list(bootstrap)
        self.pings = Pings(wiring.ping_sources, started or utc_now())
        self.backoff = backoff or Backoff()
        self.session_timeout_ms = session_timeout_ms
        self.stopping = threading.Event()
        every: list[PingSource | KafkaSource] = [*wiring.ping_sources, *wiring.kafka_sources]
        self.sinks = {s: target(s.sink, s.namespace, wiring) for s in every}
        self.local_broker = local_broker
        self.consumers: list[KafkaSourceConsumer] = []
        self._ping_workers: dict[PingSource, ThreadPoolExecutor] = {}
        self._writer: topics.Writer | None = None
        self._client: httpx.Client | None = None
        self._courier: Courier | None = None

    def _ensure_topics(self) -> None:
        wanted = {t.topic: t.partitions for t in self.sinks.values() if t.topic is not None}
        for source in self.wiring.kafka_sources:
            wanted.update({topic: SOURCE_TOPIC_PARTITIONS for topic in source.topics})
        for topic, partitions in sorted(wanted.items()):
            topics.ensure_topic(self.bootstrap, topic, partitions,
                                client_id="eventworks-sources-admin")

    def _warn_unread_brokers(self) -> None:
        if self.local_broker is None:
            return
        local = "knative-broker-{}-{}".format(*self.local_broker)
        for sink in self.sinks.values():
            if sink.topic is not None and sink.topic.startswith("knative-broker-") \
                    and sink.topic != local:
                log.warning("a sink is a Broker that no local dispatcher serves",
                            extra={"sink": sink.describe, "topic": sink.topic})

    def start(self) -> None:
        self._warn_unread_brokers()
        self._ensure_topics()
        self._writer = topics.Writer(self.bootstrap, client_id="eventworks-sources",
                                     timeout_ms=PRODUCE_TIMEOUT_MS,
                                     max_event_bytes=1024 * 1024)
        self._client = httpx.Client()
        courier = Courier(client=self._client, publisher=Publisher(self._writer),
                          stopping=self.stopping, backoff=self.backoff)
        self._courier = courier
        # One worker per PingSource: ticks of one source go in order, and a sink that is
        # down holds back only its own source.
        self._ping_workers = {
            s: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ping-{s.name}")
            for s in self.wiring.ping_sources}
        for source in self.wiring.kafka_sources:
            consumer = KafkaSourceConsumer(
                source, bootstrap=self.bootstrap, sink=self.sinks[source],
                courier=courier, session_timeout_ms=self.session_timeout_ms)
            consumer.start()
            self.consumers.append(consumer)

    def tick(self, now: datetime) -> list[Emitted]:
        """Fire every PingSource due by `now`; deliveries go on in the background."""
        assert self._courier is not None, "start() first"
        emitted: list[Emitted] = []
        if self.stopping.is_set():  # the workers are shut down
            return emitted
        for source, event in self.pings.due(now):
            delivered = self._ping_workers[source].submit(
                self._courier.deliver, self.sinks[source], event,
                f"PingSource {source.namespace}/{source.name}")
            emitted.append(Emitted(source, event, delivered))
        return emitted

    def run_pings(self, clock: Callable[[], datetime] = utc_now) -> None:
        """Tick just after every minute starts, until stop()."""
        while True:
            now = clock()
            try:
                self.tick(now)
            except Exception:  # one bad tick must not stop the clock of every source
                log.exception("ping tick failed")
            past = now.second + now.microsecond / 1e6
            if self.stopping.wait(60.0 - past + 0.005):
                return

    def ready(self) -> tuple[bool, str]:
        failed = [c.source.name for c in self.consumers if c.error is not None]
        if failed:
            return False, f"kafka sources failed: {', '.join(failed)}"
        waiting = [c.source.name for c in self.consumers if not c.joined.is_set()]
        if waiting:
            return False, f"joining: {', '.join(waiting)}"
        return True, (f"{len(self.consumers)} kafka sources, "
                      f"{len(self.wiring.ping_sources)} ping sources")

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()  # every retry wait ends; what is not delivered is logged
        for consumer in self.consumers:
            consumer.join(timeout / max(1, len(self.consumers)))
        for workers in self._ping_workers.values():
            workers.shutdown(wait=False)  # queued ticks see `stopping` and log themselves
        if self._client is not None:
            self._client.close()
        if self._writer is not None:
            self._writer.close(2)


# -- the process ----------------------------------------------------------------------------

class SourcesSettings(EnvSettings):
    listen_address: str = Field(default="127.0.0.1:8083", alias="LISTEN_ADDRESS",
                                pattern=r"^\S+:\d{1,5}$")
    # Overrides the bootstrap servers of every source and sink (see the module docstring).
    kafka_bootstrap_servers: str = Field(alias="KAFKA_BOOTSTRAP_SERVERS",
                                         pattern=r"^\S+:\d{1,5}(,\S+:\d{1,5})*$")
    knative_base: Path = Field(default=ROOT / "knative" / "base", alias="KNATIVE_BASE")
    # The Broker the stack's ingress and dispatcher serve: a sink on another one is logged.
    namespace: str = Field(default="eventworks", alias="BROKER_NAMESPACE")
    name: str = Field(default="default", alias="BROKER_NAME")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL",
                           pattern="^(DEBUG|INFO|WARNING|ERROR)$")


def main(env: Mapping[str, str]) -> int:
    settings = logs.started("sources", SourcesSettings, env)
    if settings is None:
        return 2
    try:
        wiring = load(settings.knative_base, function_resolver(env))
        sources = Sources(wiring, bootstrap=[
            s.strip() for s in settings.kafka_bootstrap_servers.split(",")],
            local_broker=(settings.namespace, settings.name))
    except (ManifestError, KeyError) as exc:
        log.error("sources not started: the manifests cannot be honoured",
                  extra={"error": str(exc)})
        return 2

    def start() -> None:
        sources.start()
        threading.Thread(target=sources.run_pings, name="ping-clock", daemon=True).start()
        log.info("sources started", extra={
            "ping_sources": [s.name for s in wiring.ping_sources],
            "kafka_sources": [s.name for s in wiring.kafka_sources]})

    def stop() -> None:
        log.info("sources stopping")
        sources.stop()

    try:
        health.run(settings.listen_address, sources.ready, start, stop)
    except Exception as exc:
        log.error("sources stopped: they could not start", extra={"error": repr(exc)})
        return 1
    return 0
