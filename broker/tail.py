"""`./taskw events`: the broker topic as JSON lines, one event a line, as they arrive.

Reads without a consumer group (nothing is committed, no Trigger is disturbed),
from the start of the topic with `--from-start`, else from its end.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from broker import topics
from broker.delivery import Event
from broker.dispatcher import Record, arrivals


def as_json(event: Event, partition: int, offset: int) -> dict[str, Any]:
    document: dict[str, Any] = dict(event.attributes)
    try:
        document["data"] = json.loads(event.value) if event.value else None
    except ValueError:
        document["data"] = event.value.decode("utf-8", errors="replace")
    document["kafka"] = {"partition": partition, "offset": offset,
                         "key": event.key.decode("utf-8", "replace") if event.key else None}
    return document


def main(argv: list[str], env: Mapping[str, str] = os.environ, out: TextIO = sys.stdout,
         limit: int | None = None) -> int:
    topic = f"knative-broker-{env.get('BROKER_NAMESPACE', 'eventworks')}-" \
            f"{env.get('BROKER_NAME', 'default')}"
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("KAFKA_BOOTSTRAP_SERVERS is not set: start the stack (./taskw start)",
              file=sys.stderr)
        return 2
    consumer = Consumer({**topics.config(bootstrap.split(","), "eventworks-tail"),
                         # assign() needs no group, but librdkafka wants a group.id; it
                         # never joins and never commits.
                         "group.id": "eventworks-tail", "enable.auto.commit": False})
    try:
        listed = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if listed is None or listed.error is not None or not listed.partitions:
            print(f"no topic {topic} yet", file=sys.stderr)
            return 1
        start = OFFSET_BEGINNING if "--from-start" in argv else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(listed.partitions)])
        shown = 0
        while limit is None or shown < limit:
            for message in arrivals(consumer, wait=0.5, most=100):
                if message.error() is not None:
                    continue
                record = Record.of(message)
                print(json.dumps(as_json(record.event, record.partition, record.offset)),
                      file=out, flush=True)
                shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
