"""Watch a topic as it grows: read from a starting point onwards, incrementally.

`tests.tansu.records` reads a whole topic on every call, which is the right tool for
"is this one record there"; a test or benchmark that waits for hundreds of events
(the signing pipeline) reads each record once with this instead. kafka-python, as the
other tests: an independent client of what the broker wrote with librdkafka.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition


@dataclass(frozen=True)
class Seen:
    type: str
    id: str
    data: Any        # the JSON value, or None when it is not JSON
    at: float        # time.perf_counter() when this process read it


class Watch:
    """Every record of `topic` from the current end (`from_end`) or its start on.
    No consumer group: nothing to join, nothing committed."""

    def __init__(self, bootstrap: str, topic: str, *, from_end: bool = True) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                      fetch_max_wait_ms=5, auto_offset_reset="earliest",
                                      request_timeout_ms=5000)
        deadline = time.monotonic() + 10
        found = self.consumer.partitions_for_topic(topic)
        while not found and time.monotonic() < deadline:
            time.sleep(0.1)
            found = self.consumer.partitions_for_topic(topic)
        if not found:
            self.consumer.close()
            raise AssertionError(f"the topic {topic} does not exist")
        partitions = [TopicPartition(topic, p) for p in sorted(found)]
        self.consumer.assign(partitions)
        if from_end:
            self.consumer.seek_to_end(*partitions)
        else:
            self.consumer.seek_to_beginning(*partitions)
        for tp in partitions:  # resolve the positions now, before anything is produced
            self.consumer.position(tp)

    def poll(self, timeout_ms: int = 100) -> list[Seen]:
        seen = []
        for batch in self.consumer.poll(timeout_ms=timeout_ms).values():
            at = time.perf_counter()
            for record in batch:
                headers = dict(record.headers)
                try:
                    data = json.loads(record.value) if record.value else None
                except ValueError:
                    data = None
                seen.append(Seen(headers.get("ce_type", b"").decode(),
                                 headers.get("ce_id", b"").decode(), data, at))
        return seen

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Pipeline:
    """What became of a set of transaction requests, from the events in the topic."""

    wanted: frozenset[str]
    signed: dict[str, list[Any]]
    verified: dict[str, list[Any]]
    rejected: dict[str, list[Any]]
    last_at: float = 0.0  # when the last request got its first verdict

    @classmethod
    def of(cls, request_ids: Iterable[str]) -> Pipeline:
        return cls(frozenset(request_ids), {}, {}, {})

    def add(self, events: Iterable[Seen]) -> None:
        kinds = {"dev.eventworks.tx.signed": self.signed,
                 "dev.eventworks.tx.verified": self.verified,
                 "dev.eventworks.tx.rejected": self.rejected}
        for event in events:
            into = kinds.get(event.type)
            if into is None or not isinstance(event.data, dict):
                continue
            request_id = event.data.get("request_id")
            if request_id not in self.wanted:
                continue
            first_verdict = event.type != "dev.eventworks.tx.signed" and not (
                request_id in self.verified or request_id in self.rejected)
            into.setdefault(request_id, []).append(event.data)
            if first_verdict:
                self.last_at = max(self.last_at, event.at)

    @property
    def decided(self) -> int:
        return len(self.verified.keys() | self.rejected.keys())

    @property
    def done(self) -> bool:
        return self.decided == len(self.wanted)
