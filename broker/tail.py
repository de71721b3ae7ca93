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

from kafka import KafkaConsumer, TopicPartition

from broker.delivery import Event


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
    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False,
                             fetch_max_wait_ms=50)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            print(f"no topic {topic} yet", file=sys.stderr)
            return 1
        consumer.assign(partitions)
        if "--from-start" in argv:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        shown = 0
        while limit is None or shown < limit:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    event = Event(tuple(record.headers or ()), record.value or b"", record.key)
                    print(json.dumps(as_json(event, tp.partition, record.offset)), file=out,
                          flush=True)
                    shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
