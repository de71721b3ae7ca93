"""The broker ingress against a real Kafka-protocol broker (tansu).

The module starts its own tansu and its own `python -m broker` (the real entry
point) on free loopback ports. Once the session fixture `stack_env` (conftest.py)
is settled, the happy-path tests can run against the stack's broker instead;
the Kafka-down test keeps its own pair either way, since it kills Kafka.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cloudevents.core.v1.event import CloudEvent

from broker.ingress import to_record
from eventing.errors import InvalidEvent
from tests.factory import cloudevent
from tests.tansu import (
    PRODUCE_TIMEOUT_MS,
    Ingress,
    only,
    start_ingress,
    start_tansu,
    stored,
)


@pytest.fixture(scope="module")
def ingress(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingress]:
    running = start_ingress(kafka, tmp_path_factory.mktemp("broker") / "broker.log")
    try:
        yield running
    finally:
        running.stop()



# -- through the real process and a real Kafka -------------------------------------------

def test_given_a_binary_event_when_posted_then_202_and_kafka_holds_it_in_binary_mode(
        kafka: str, ingress: Ingress) -> None:
    event = cloudevent("dev.eventworks.tests.binary", {"n": 1}, subject="owner/repo#12",
                       traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                       myext="ext value")
    headers = {**event.headers, "ce-time": "2024-05-01T12:30:00.250Z"}
    body = b'{ "n" : 1,  "text": "caf\xc3\xa9" }'  # odd spacing: stored byte for byte

    response = httpx.post(ingress.url, content=body, headers=headers)

    assert response.status_code == 202, response.text
    assert response.content == b""
    record = only(kafka, event.id)
    assert record.value == body
    assert record.key is None
    assert record.headers["ce_specversion"] == b"1.0"
    assert record.headers["ce_source"] == b"/tests/factory"
    assert record.headers["ce_type"] == b"dev.eventworks.tests.binary"
    assert record.headers["ce_subject"] == b"owner/repo#12"
    assert record.headers["ce_time"] == b"2024-05-01T12:30:00.250000Z"
    assert record.headers["ce_traceparent"].startswith(b"00-0af7651916cd43dd")
    assert record.headers["ce_myext"] == b"ext value"
    assert record.headers["content-type"] == b"application/json"
    assert "ce_datacontenttype" not in record.headers


def test_given_a_structured_event_when_posted_then_it_is_stored_in_binary_mode(
        kafka: str, ingress: Ingress) -> None:
    event_id = str(uuid.uuid4())
    document = {"specversion": "1.0", "id": event_id, "source": "/tests/structured",
                "type": "dev.eventworks.tests.structured", "subject": "task-1",
                "datacontenttype": "application/json", "count": 3,
                "data": {"amount": "0.5", "list": [1, True, None], "name": "café"}}

    response = httpx.post(ingress.url, content=json.dumps(document),
                          headers={"content-type": "application/cloudevents+json"})

    assert response.status_code == 202, response.text
    record = only(kafka, event_id)
    assert json.loads(record.value) == document["data"]
    assert record.headers["content-type"] == b"application/json"
    assert record.headers["ce_type"] == b"dev.eventworks.tests.structured"
    assert record.headers["ce_subject"] == b"task-1"
    assert record.headers["ce_count"] == b"3"
    # the sender set no time, and a broker does not invent one
    assert "ce_time" not in record.headers
    assert not any(name in record.headers for name in ("ce_data", "ce_datacontenttype"))


def test_given_a_structured_event_with_data_base64_when_posted_then_the_value_is_the_bytes(
        kafka: str, ingress: Ingress) -> None:
    event_id = str(uuid.uuid4())
    raw = bytes(range(256))
    document = {"specversion": "1.0", "id": event_id, "source": "/tests/base64",
                "type": "dev.eventworks.tests.bytes", "datacontenttype": "application/octet-stream",
                "time": "2024-05-01T14:30:00+02:00",
                "data_base64": base64.b64encode(raw).decode()}

    response = httpx.post(ingress.url, content=json.dumps(document),
                          headers={"content-type": "application/cloudevents+json; charset=utf-8"})

    assert response.status_code == 202, response.text
    record = only(kafka, event_id)
    assert record.value == raw
    assert record.headers["content-type"] == b"application/octet-stream"
    assert record.headers["ce_time"] == b"2024-05-01T14:30:00+02:00"


def test_given_a_partitionkey_when_posted_then_it_is_the_record_key(
        kafka: str, ingress: Ingress) -> None:
    first = cloudevent("dev.eventworks.tests.keyed", {"n": 1}, partitionkey="owner/repo#12")
    second = cloudevent("dev.eventworks.tests.keyed", {"n": 2}, partitionkey="owner/repo#12")

    for event in (first, second):
        response = httpx.post(ingress.url, content=event.body, headers=dict(event.headers))
        assert response.status_code == 202, response.text

    one, two = only(kafka, first.id), only(kafka, second.id)
    assert one.key == two.key == b"owner/repo#12"
    assert one.partition == two.partition  # same key, same partition: ordered


def test_given_client_supplied_auth_context_when_posted_then_it_is_not_stored(
        kafka: str, ingress: Ingress) -> None:
    event = cloudevent("dev.eventworks.tests.auth", {"n": 1}, authtype="user", authid="mallory")

    response = httpx.post(ingress.url, content=event.body, headers=dict(event.headers))

    assert response.status_code == 202, response.text
    record = only(kafka, event.id)
    assert record.headers["ce_authtype"] == b"unauthenticated"  # the ingress's, not mallory's
    assert "ce_authid" not in record.headers


def test_given_an_event_without_source_when_posted_then_400_problem_and_nothing_stored(
        kafka: str, ingress: Ingress) -> None:
    event = cloudevent("dev.eventworks.tests.invalid", {"n": 1})
    headers = {k: v for k, v in event.headers.items() if k != "ce-source"}

    response = httpx.post(ingress.url, content=event.body, headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert problem["field"] == "header ce-source"
    assert stored(kafka, event.id) == []


def test_given_a_body_that_is_no_cloudevent_when_posted_then_400_problem(
        ingress: Ingress) -> None:
    response = httpx.post(ingress.url, content=b"{}",
                          headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["type"] == "urn:eventworks:problem:invalid-event"


def test_given_another_path_when_posted_then_404_problem(ingress: Ingress) -> None:
    event = cloudevent("dev.eventworks.tests.lost", {"n": 1})

    response = httpx.post(f"{ingress.base}/other/broker", content=event.body,
                          headers=dict(event.headers))

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "path"


def test_given_a_get_when_sent_to_the_broker_then_405_with_allow(ingress: Ingress) -> None:
    response = httpx.get(ingress.url)

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["status"] == 405


def test_given_a_running_broker_when_probed_then_live_and_ready(ingress: Ingress) -> None:
    assert httpx.get(f"{ingress.base}/health/liveness").status_code == 200
    assert httpx.get(f"{ingress.base}/health/readiness").status_code == 200


def test_given_kafka_killed_when_an_event_is_posted_then_503_problem_with_retry_after(
        tmp_path: Path) -> None:
    tansu = start_tansu()
    ingress = start_ingress(tansu.bootstrap, tmp_path / "broker.log")
    try:
        event = cloudevent("dev.eventworks.tests.down", {"n": 1})
        assert httpx.post(ingress.url, content=event.body,
                          headers=dict(event.headers)).status_code == 202
        tansu.kill()

        started = time.monotonic()
        response = httpx.post(ingress.url, content=event.body, headers=dict(event.headers),
                              timeout=30)
        waited = time.monotonic() - started

        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["status"] == 503
        assert waited < PRODUCE_TIMEOUT_MS / 1000 + 3, f"took {waited:.1f} s"
        assert httpx.get(f"{ingress.base}/health/readiness").status_code == 503
        assert httpx.get(f"{ingress.base}/health/liveness").status_code == 200
    finally:
        code = ingress.stop()
        tansu.kill()
    assert code == 0, ingress.log.read_text()


# -- the record mapping, in-process ------------------------------------------------------

def test_given_text_data_in_structured_mode_when_mapped_then_the_value_is_the_text() -> None:
    event = CloudEvent({"id": "1", "source": "/s", "type": "t", "specversion": "1.0",
                        "datacontenttype": "text/plain"}, "plain text")

    record = to_record(event, b"", binary=False, sent_time=False)

    assert record.value == b"plain text"
    assert ("content-type", b"text/plain") in record.headers


def test_given_a_json_string_in_structured_mode_when_mapped_then_the_value_stays_json() -> None:
    event = CloudEvent({"id": "1", "source": "/s", "type": "t", "specversion": "1.0"}, "hello")

    record = to_record(event, b"", binary=False, sent_time=False)

    assert record.value == b'"hello"'
    assert ("content-type", b"application/json") in record.headers


def test_given_typed_extensions_when_mapped_then_headers_use_canonical_strings() -> None:
    event = CloudEvent({"id": "1", "source": "/s", "type": "t", "specversion": "1.0",
                        "time": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                        "flag": True, "count": 7}, None)

    record = to_record(event, b"", binary=True)

    headers = dict(record.headers)
    assert headers["ce_flag"] == b"true"
    assert headers["ce_count"] == b"7"
    assert headers["ce_time"] == b"2024-01-02T03:04:05Z"
    assert [name for name, _ in record.headers][:4] == [
        "ce_specversion", "ce_id", "ce_source", "ce_type"]


def test_given_a_float_extension_when_mapped_then_the_event_is_invalid() -> None:
    event = CloudEvent({"id": "1", "source": "/s", "type": "t", "specversion": "1.0",
                        "ratio": 0.5}, None)

    with pytest.raises(InvalidEvent) as raised:
        to_record(event, b"", binary=True)

    assert raised.value.field == "ratio"
