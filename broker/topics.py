"""Kafka plumbing shared by the ingress and the dispatcher: topics and producers."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import TopicAlreadyExistsError

log = logging.getLogger("broker.topics")


def ensure_topic(bootstrap: Sequence[str], topic: str, partitions: int, *,
                 client_id: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=list(bootstrap), client_id=client_id,
                             request_timeout_ms=5000, bootstrap_timeout_ms=3000)
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}})
        log.info("topic created", extra={"topic": topic, "partitions": partitions})
    except TopicAlreadyExistsError:
        log.info("topic exists", extra={"topic": topic})
    finally:
        admin.close()


def producer(bootstrap: Sequence[str], *, client_id: str, timeout_ms: int,
             max_event_bytes: int) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=list(bootstrap),
        client_id=client_id,
        acks="all",
        linger_ms=0,  # batches form anyway while requests are in flight
        # A dead Kafka must give an error in seconds, not the 2-minute default.
        request_timeout_ms=timeout_ms // 2,
        delivery_timeout_ms=timeout_ms,
        max_block_ms=timeout_ms // 2,
        bootstrap_timeout_ms=3000,
        reconnect_backoff_max_ms=1000,
        # The body limit is MAX_EVENT_BYTES; headers and framing come on top.
        max_request_size=max_event_bytes + 64 * 1024,
    )
