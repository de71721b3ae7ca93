"""The dispatcher over a real Kafka (tansu): retries, backoff, dead letters, replies,
ordering and the status rules of Knative's data plane (DESIGN §7)."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from broker.delivery import Outcome
from broker.dispatcher import Dispatcher, broker_topic
from broker.filters import Filter, compile_filter
from broker.manifests import DeliverySpec, Destination, Trigger
from tests.conftest import subscriber
from tests.subscriber import Answer, Received
from tests.tansu import wait_until


def delivery(**spec: Any) -> DeliverySpec:
    """Knative's delivery spec, with quick linear retries for tests."""
    return DeliverySpec(**{"backoff_policy": "linear", "backoff_delay": 0.05, "timeout": 2.0,
                           **spec})


def type_is(event_type: str | None = None) -> Filter:
    """A legacy attribute filter on the type (the filter language is tested elsewhere)."""
    return compile_filter({"filter": {"attributes": {"type": event_type}}} if event_type else {})


def trigger(name: str, subscriber: Destination, broker: str, spec: DeliverySpec | None = None,
            *, filter: Filter | None = None, ordered: bool = False) -> Trigger:
    return Trigger(name=name, namespace="tests", broker=broker, filter=filter or type_is(),
                   subscriber=subscriber, delivery=spec or delivery(), ordered=ordered,
                   file=Path(__file__))


@pytest.fixture
def broker() -> str:
    return f"b{uuid.uuid4().hex[:8]}"


@pytest.fixture
def producer(kafka: str) -> Iterator[KafkaProducer]:
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    yield producer
    producer.close()


def publish(producer: KafkaProducer, broker: str, *, type: str = "dev.tests.thing",
            data: dict[str, object] | None = None, key: str | None = None,
            **extensions: str) -> str:
    event_id = str(uuid.uuid4())
    headers = [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()),
               ("ce_source", b"/tests"), ("ce_type", type.encode()),
               ("content-type", b"application/json")]
    headers += [(f"ce_{k}", v.encode()) for k, v in extensions.items()]
    producer.send(broker_topic("tests", broker), value=json.dumps(data or {}).encode(),
                  key=key.encode() if key else None, headers=headers).get(timeout=5)
    return event_id


@pytest.fixture
def dispatch(kafka: str) -> Iterator[Any]:
    running: list[Dispatcher] = []

    def start(*triggers: Trigger, broker: str, partitions: int = 4,
              attempts: list[Any] | None = None) -> Dispatcher:
        def record(event_id: str, attempt: int, outcome: Outcome) -> None:
            if attempts is not None:
                attempts.append((event_id, attempt, outcome.status))
        dispatcher = Dispatcher(triggers, bootstrap=[kafka], namespace="tests", broker=broker,
                                partitions=partitions, on_attempt=record)
        dispatcher.start()
        running.append(dispatcher)
        wait_until(lambda: dispatcher.ready()[0], "the dispatcher joined", timeout=20)
        return dispatcher

    yield start
    for dispatcher in running:
        dispatcher.stop()


def test_given_subscriber_failing_twice_when_dispatched_then_tried_exactly_three_times(
        dispatch, producer, broker, subscribers):
    flaky = subscriber(subscribers, lambda r, seen: Answer(503 if seen <= 2 else 202))
    dead = subscriber(subscribers)
    dispatch(trigger("flaky", Destination(flaky.url), broker,
                     delivery(retry=5, dead_letter_sink=Destination(dead.url))), broker=broker)

    event_id = publish(producer, broker)

    wait_until(lambda: len(flaky.of(event_id)) == 3, "three attempts")
    time.sleep(0.3)  # nothing more may come
    assert len(flaky.of(event_id)) == 3
    assert dead.received == []


def test_given_subscriber_always_failing_when_dispatched_then_retry_plus_one_tries_backoff_and_dead_letter(  # noqa: E501
        dispatch, producer, broker, subscribers):
    failing = subscriber(subscribers, lambda r, seen: Answer(500, body=b"it broke"))
    dead = subscriber(subscribers)
    dispatch(trigger("failing", Destination(failing.url), broker,
                     delivery(retry=3, backoff_policy="linear", backoff_delay=0.1,
                              dead_letter_sink=Destination(dead.url))), broker=broker)

    event_id = publish(producer, broker, data={"n": 1})

    wait_until(lambda: dead.of(event_id), "the dead letter", timeout=15)
    tries = failing.of(event_id)
    assert len(tries) == 4
    gaps = [round(b.at - a.at, 2) for a, b in itertools.pairwise(tries)]
    # linear backoff: at least delay * n before retry n
    assert [gap >= want for gap, want in zip(gaps, [0.1, 0.2, 0.3], strict=True)] == [
        True, True, True], gaps
    (letter,) = dead.of(event_id)
    assert letter.headers["ce-knativeerrorcode"] == "500"
    assert letter.headers["ce-knativeerrordest"] == failing.url
    assert base64.b64decode(letter.headers["ce-knativeerrordata"]) == b"it broke"
    assert json.loads(letter.body) == {"n": 1}
    assert letter.headers["ce-type"] == "dev.tests.thing"


@pytest.mark.parametrize("status", [400, 401, 403, 413, 422])
def test_given_final_4xx_when_dispatched_then_not_retried_and_dead_lettered(
        dispatch, producer, broker, subscribers, status):
    refusing = subscriber(subscribers, lambda r, seen: Answer(status))
    dead = subscriber(subscribers)
    dispatch(trigger("refusing", Destination(refusing.url), broker,
                     delivery(retry=3, dead_letter_sink=Destination(dead.url))), broker=broker)

    event_id = publish(producer, broker)

    wait_until(lambda: dead.of(event_id), "the dead letter")
    assert len(refusing.of(event_id)) == 1
    assert dead.of(event_id)[0].headers["ce-knativeerrorcode"] == str(status)


@pytest.mark.parametrize("status", [404, 408, 409, 429])
def test_given_retryable_4xx_when_dispatched_then_retried(
        dispatch, producer, broker, subscribers, status):
    sub = subscriber(subscribers, lambda r, seen: Answer(status if seen == 1 else 202))
    dispatch(trigger("retryable", Destination(sub.url), broker, delivery(retry=2)),
             broker=broker)

    event_id = publish(producer, broker)

    wait_until(lambda: len(sub.of(event_id)) == 2, "the retry")


def test_given_slow_subscriber_when_timeout_passes_then_it_counts_as_a_failure(
        dispatch, producer, broker, subscribers):
    slow = subscriber(subscribers, lambda r, seen: Answer(202, delay=1.0 if seen == 1 else 0))
    attempts: list[Any] = []
    dispatch(trigger("slow", Destination(slow.url), broker, delivery(retry=1, timeout=0.2)),
             broker=broker, attempts=attempts)

    event_id = publish(producer, broker)

    wait_until(lambda: len([a for a in attempts if a[0] == event_id]) == 2, "two attempts")
    assert [status for (eid, _, status) in attempts if eid == event_id] == [None, 202]


def test_given_reply_when_subscriber_answers_200_then_reply_reaches_its_own_trigger(
        dispatch, producer, broker, subscribers):
    replied = {"ce-specversion": "1.0", "ce-id": "reply-1", "ce-source": "/tests/replier",
               "ce-type": "dev.tests.replied", "content-type": "application/json"}
    replier = subscriber(subscribers, lambda r, seen: Answer(
        200, headers={**replied, "ce-id": f"reply-of-{r.id}"}, body=b'{"ok": true}'))
    downstream = subscriber(subscribers)
    dispatch(trigger("replier", Destination(replier.url), broker,
                     filter=type_is("dev.tests.thing")),
             trigger("downstream", Destination(downstream.url), broker,
                     filter=type_is("dev.tests.replied")), broker=broker)

    event_id = publish(producer, broker)

    wait_until(lambda: downstream.of(f"reply-of-{event_id}"), "the reply downstream")
    (got,) = downstream.of(f"reply-of-{event_id}")
    assert got.headers["ce-source"] == "/tests/replier"
    assert json.loads(got.body) == {"ok": True}
    assert replier.of(event_id)[0].headers["prefer"] == "reply"


def test_given_filter_when_event_does_not_match_then_not_delivered(
        dispatch, producer, broker, subscribers):
    sub = subscriber(subscribers)
    dispatch(trigger("picky", Destination(sub.url), broker, filter=type_is("dev.tests.other")),
             broker=broker)

    skipped = publish(producer, broker, type="dev.tests.thing")
    wanted = publish(producer, broker, type="dev.tests.other")

    wait_until(lambda: sub.of(wanted), "the matching event")
    assert sub.of(skipped) == []


def test_given_ordered_trigger_when_one_event_fails_then_later_events_wait_for_it(
        dispatch, producer, broker, subscribers):
    first_tries: dict[str, int] = {}

    def script(request: Received, seen: int) -> Answer:
        number = json.loads(request.body)["n"]
        if number == 3 and seen <= 2:
            return Answer(503)
        first_tries.setdefault(request.id, number)
        return Answer(202)

    ordered = subscriber(subscribers, script)
    dispatch(trigger("ordered", Destination(ordered.url), broker,
                     delivery(retry=5, backoff_delay=0.05), ordered=True),
             broker=broker, partitions=1)

    ids = [publish(producer, broker, data={"n": n}) for n in range(1, 11)]

    wait_until(lambda: len(first_tries) == 10, "all ten delivered", timeout=15)
    assert list(first_tries.values()) == list(range(1, 11))
    received = [json.loads(r.body)["n"] for r in ordered.received if r.id in ids]
    assert received == [1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10]  # nothing overtook event 3


def test_given_unordered_trigger_when_subscriber_is_slow_then_deliveries_overlap(
        dispatch, producer, broker, subscribers):
    lock = threading.Lock()
    busy = {"now": 0, "most": 0}

    def script(request: Received, seen: int) -> Answer:
        with lock:
            busy["now"] += 1
            busy["most"] = max(busy["most"], busy["now"])
        time.sleep(0.2)
        with lock:
            busy["now"] -= 1
        return Answer(202)

    slow = subscriber(subscribers, script)
    dispatch(trigger("parallel", Destination(slow.url), broker), broker=broker, partitions=1)

    ids = [publish(producer, broker) for _ in range(8)]

    wait_until(lambda: all(slow.of(i) for i in ids), "all eight", timeout=10)
    assert busy["most"] > 1  # one partition, yet several deliveries at once


def test_given_dead_letter_sink_is_a_kafka_topic_when_dead_lettered_then_record_has_extensions(
        dispatch, producer, broker, subscribers, kafka):
    from tests.tansu import only, stored

    refusing = subscriber(subscribers, lambda r, seen: Answer(400, body=b"nope"))
    topic = f"dead-{broker}"
    dispatch(trigger("to-kafka", Destination(refusing.url), broker,
                     delivery(dead_letter_sink=Destination(kafka_topic=topic))), broker=broker)

    event_id = publish(producer, broker)

    wait_until(lambda: refusing.of(event_id), "the attempt")
    wait_until(lambda: stored(kafka, event_id, topic), "the dead letter in Kafka")
    record = only(kafka, event_id, topic)
    assert record.headers["ce_knativeerrorcode"] == b"400"
    assert base64.b64decode(record.headers["ce_knativeerrordata"]) == b"nope"


# -- idle consumers doze; the doorbell wakes them ---------------------------------------------
def test_given_idle_triggers_when_an_event_arrives_then_the_doorbell_wakes_the_dozing_consumers(
        dispatch, producer, broker, subscribers, monkeypatch):
    import broker.dispatcher as dispatcher_module

    # No periodic look: only the doorbell can wake a dozing consumer in this test.
    monkeypatch.setattr(dispatcher_module, "DOZE_LOOK_EVERY", 3600.0)
    first, second = subscriber(subscribers), subscriber(subscribers)
    dispatcher = dispatch(trigger("first", Destination(first.url), broker),
                          trigger("second", Destination(second.url), broker, ordered=True),
                          broker=broker)
    wait_until(lambda: all(c.dozing for c in dispatcher.consumers), "every consumer dozing")

    event_id = publish(producer, broker)

    wait_until(lambda: first.of(event_id) and second.of(event_id), "both deliveries")
    assert dispatcher.doorbell is not None
    assert dispatcher.doorbell.rings >= 1
    wait_until(lambda: all(c.dozing for c in dispatcher.consumers), "dozing again")


def test_given_a_doorbell_that_never_rings_when_an_event_arrives_then_a_periodic_look_delivers_it(
        dispatch, producer, broker, subscribers, monkeypatch):
    import broker.dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "DOZE_LOOK_EVERY", 0.2)
    monkeypatch.setattr(dispatcher_module.Doorbell, "ring", lambda self, latest=None: None)
    sink = subscriber(subscribers)
    dispatcher = dispatch(trigger("deaf", Destination(sink.url), broker), broker=broker)
    wait_until(lambda: all(c.dozing for c in dispatcher.consumers), "the consumer dozing")

    event_id = publish(producer, broker)

    wait_until(lambda: sink.of(event_id), "the delivery")
    assert dispatcher.doorbell is not None
    assert dispatcher.doorbell.rings == 0


def test_given_dozing_triggers_of_other_types_when_events_arrive_then_only_their_trigger_wakes(
        dispatch, producer, broker, subscribers, monkeypatch):
    import broker.dispatcher as dispatcher_module

    # No periodic look: only a ring can wake a dozing consumer in this test.
    monkeypatch.setattr(dispatcher_module, "DOZE_LOOK_EVERY", 3600.0)
    busy, quiet = subscriber(subscribers), subscriber(subscribers)
    dispatcher = dispatch(
        trigger("busy", Destination(busy.url), broker, filter=type_is("dev.tests.busy")),
        trigger("quiet", Destination(quiet.url), broker, filter=type_is("dev.tests.quiet"),
                ordered=True),
        broker=broker)
    wait_until(lambda: all(c.dozing for c in dispatcher.consumers), "every consumer dozing")
    quiet_consumer = next(c for c in dispatcher.consumers if c.trigger.name == "quiet")
    fetched = {p: s.seen for p, s in quiet_consumer.partitions.items()}

    busy_ids = [publish(producer, broker, type="dev.tests.busy") for _ in range(20)]

    wait_until(lambda: all(busy.of(i) for i in busy_ids), "the busy trigger's deliveries")
    time.sleep(0.3)
    assert quiet_consumer.dozing
    assert {p: s.seen for p, s in quiet_consumer.partitions.items()} == fetched

    # Woken for its own event, it reads past the others' and delivers only its own.
    quiet_id = publish(producer, broker, type="dev.tests.quiet")
    wait_until(lambda: quiet.of(quiet_id), "the quiet trigger's delivery")
    assert not any(quiet.of(i) for i in busy_ids)
    wait_until(lambda: all(c.dozing for c in dispatcher.consumers), "dozing again")
