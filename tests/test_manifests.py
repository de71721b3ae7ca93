"""broker.manifests: the local broker's wiring, read from the same Kustomize base a cluster gets.

The real `knative/base` first, then fixtures under tests/data/manifests/: delivery precedence
(`precedence/`), one of every kind (`kinds/`), and one directory per error (`errors/<case>/`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.manifests import (
    DeliverySpec,
    Destination,
    ManifestError,
    Reference,
    SecretKeyRef,
    Trigger,
    Wiring,
    load,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "knative" / "base"
FIXTURES = ROOT / "tests" / "data" / "manifests"
FUNCTIONS = ("parse-comment", "link-identity", "lease-key", "sign-tx", "verify-tx", "todo-crud",
             "accrue-payment")
DEAD_LETTERS = Destination(kafka_topic="knative-dead-letters-eventworks",
                           describe="KafkaSink eventworks-dead-letters")


# Knative Services of knative/base that are not functions: the batch reader, the
# PingSource's sink (the local stack exports it as FUNCTION_BATCH_READER_URL).
SERVICES = ("batch-reader",)


def function_url(kind: str, name: str, namespace: str) -> str | None:
    """What the local stack answers: a URL for each function's Knative Service, and for
    the other Services it serves (`SERVICES`)."""
    known = kind == "Service" and name in (*FUNCTIONS, *SERVICES, "dead-letter-function")
    return f"http://127.0.0.1:9/{name}" if known else None


def event(type_: str, **attributes: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": "1", "source": "/eventworks/tests", "type": type_,
            **attributes}


@pytest.fixture(scope="module")
def base() -> Wiring:
    return load(BASE, function_url)


@pytest.fixture(scope="module")
def precedence() -> Wiring:
    return load(FIXTURES / "precedence", function_url)


@pytest.fixture(scope="module")
def kinds() -> Wiring:
    return load(FIXTURES / "kinds", function_url)


def trigger_named(wiring: Wiring, name: str) -> Trigger:
    [found] = [t for t in wiring.triggers if t.name == name]
    return found


# -- the real knative/base ---------------------------------------------------------------------

def test_given_the_base_when_loaded_then_the_kafka_broker_has_its_config_and_delivery(
        base: Wiring) -> None:
    broker = base.broker("default")

    assert (broker.namespace, broker.topic) == ("eventworks", "knative-broker-eventworks-default")
    assert (broker.partitions, broker.replication_factor) == (4, 3)
    assert broker.bootstrap_servers == "my-cluster-kafka-bootstrap.kafka:9092"
    assert broker.delivery == DeliverySpec(retry=5, backoff_policy="exponential",
                                           backoff_delay=0.5, timeout=30.0,
                                           dead_letter_sink=DEAD_LETTERS)
    assert broker.file == BASE / "broker.yaml"


def test_given_the_base_when_loaded_then_the_dead_letter_sink_is_the_kafka_sinks_topic(
        base: Wiring) -> None:
    [sink] = base.kafka_sinks

    assert (sink.name, sink.topic, sink.content_mode) == (
        "eventworks-dead-letters", "knative-dead-letters-eventworks", "binary")
    assert sink.bootstrap_servers == ("my-cluster-kafka-bootstrap.kafka:9092",)
    assert base.broker("default").delivery.dead_letter_sink == Destination(
        kafka_topic=sink.topic, describe="KafkaSink eventworks-dead-letters")


def test_given_the_base_when_loaded_then_parse_comment_gets_ordered_issue_comments(
        base: Wiring) -> None:
    trigger = trigger_named(base, "parse-comment-issue-comment")

    assert trigger.subscriber == Destination(uri="http://127.0.0.1:9/parse-comment",
                                             describe="Service parse-comment")
    assert trigger.ordered is True
    assert trigger.delivery == base.broker("default").delivery  # it sets none of its own
    assert trigger.filter.match(event("dev.knative.source.github.issue_comment")).matched
    assert not trigger.filter.match(event("dev.knative.source.github.issues")).matched


def test_given_the_base_when_loaded_then_every_trigger_is_on_the_default_broker_and_a_function(
        base: Wiring) -> None:
    assert base.triggers
    assert base.triggers_of("default", "eventworks") == base.triggers
    for trigger in base.triggers:
        assert trigger.subscriber.uri in {f"http://127.0.0.1:9/{f}" for f in FUNCTIONS}


@pytest.mark.parametrize(("name", "event_type", "subscriber"), [
    ("sign-tx-requests", "dev.eventworks.tx.sign.requested", "sign-tx"),
    ("sign-tx-payouts", "dev.eventworks.payout.requested", "sign-tx"),
    ("verify-tx-signed", "dev.eventworks.tx.signed", "verify-tx"),
    ("verify-tx-pledges", "dev.eventworks.bounty.signed", "verify-tx"),
])
def test_given_the_base_when_loaded_then_the_signing_pipeline_is_unordered_with_retries(
        base: Wiring, name: str, event_type: str, subscriber: str) -> None:
    trigger = trigger_named(base, name)

    assert trigger.subscriber == Destination(uri=f"http://127.0.0.1:9/{subscriber}",
                                             describe=f"Service {subscriber}")
    assert trigger.ordered is False
    # Its own retries for sign-tx's 503 (no free key); the Broker's timeout and DLS.
    assert trigger.delivery == DeliverySpec(retry=10, backoff_policy="exponential",
                                            backoff_delay=0.2, timeout=30.0,
                                            dead_letter_sink=DEAD_LETTERS)
    assert trigger.filter.match(event(event_type)).matched
    assert not trigger.filter.match(event("dev.eventworks.tx.verified")).matched


def test_given_the_base_when_loaded_then_the_batch_reader_is_pinged_every_minute(
        base: Wiring) -> None:
    [ping] = [p for p in base.ping_sources if p.name == "batch-reader"]

    assert ping.schedule == "* * * * *"
    assert ping.namespace == "eventworks"
    assert ping.sink == Destination(uri="http://127.0.0.1:9/batch-reader",
                                    describe="Service batch-reader")


def test_given_the_base_when_loaded_then_github_webhooks_come_through_the_gateway(
        base: Wiring) -> None:
    # GitHubSource (SHA-1) is an optional component; the base's receiver is the gateway's
    # SHA-256 POST /github, whose SinkBinding binds it to the Broker.
    [gateway] = [b for b in base.sink_bindings if b.name == "gateway"]

    assert base.github_sources == ()
    assert (gateway.subject.kind, gateway.subject.name) == ("Service", "gateway")
    assert gateway.sink == Destination(broker="default", describe="Broker default")


# -- delivery: Trigger over Broker, as Knative's Kafka broker merges them -----------------------

BROKER_DLS = Destination(uri="http://dead-letters.test/broker",
                         describe="http://dead-letters.test/broker")


@pytest.mark.parametrize(("trigger", "expected"), [
    pytest.param("inherits", DeliverySpec(5, "linear", 2.0, 10.0, BROKER_DLS),
                 id="no delivery: the Broker's"),
    pytest.param("only-retry", DeliverySpec(2, "exponential", 1.0, 10.0, BROKER_DLS),
                 id="retry alone: its own policy and delay defaults, the Broker's timeout and DLS"),
    pytest.param("only-dead-letter-sink", DeliverySpec(
        5, "exponential", 2.0, 10.0,
        Destination(uri="http://127.0.0.1:9/dead-letter-function",
                    describe="Service dead-letter-function")),
        id="DLS alone: the Broker's retry and delay, but never its policy"),
    pytest.param("retry-zero", DeliverySpec(5, "exponential", 1.0, 10.0, BROKER_DLS),
                 id="retry 0 is 'not set': the Broker's retries stay"),
    pytest.param("only-backoff", DeliverySpec(5, "linear", 2.0, 10.0, BROKER_DLS),
                 id="backoff without retry, DLS or timeout: ignored as a whole"),
    pytest.param("everything", DeliverySpec(
        1, "exponential", 0.25, 60.0,
        Destination(uri="http://dead-letters.test/trigger",
                    describe="http://dead-letters.test/trigger")),
        id="all set: all the Trigger's"),
    pytest.param("on-plain-broker", DeliverySpec(0, "exponential", 1.0, None, None),
                 id="nothing anywhere: no retries, no DLS, the dispatcher's timeout"),
    pytest.param("on-plain-broker-with-retry", DeliverySpec(3, "linear", 1.0, None, None),
                 id="retry on a Broker without delivery: the controller's 1 s delay"),
])
def test_given_trigger_and_broker_delivery_when_loaded_then_they_merge_as_knative_does(
        precedence: Wiring, trigger: str, expected: DeliverySpec) -> None:
    assert trigger_named(precedence, trigger).delivery == expected


def test_given_a_broker_with_delivery_when_loaded_then_its_own_spec_is_kept(
        precedence: Wiring) -> None:
    assert precedence.broker("configured").delivery == DeliverySpec(
        5, "linear", 2.0, 10.0, BROKER_DLS)
    assert precedence.broker("default").delivery == DeliverySpec()


@pytest.mark.parametrize(("trigger", "ordered"), [
    ("ordered", True), ("unordered", False), ("on-plain-broker", False)])
def test_given_a_delivery_order_annotation_when_loaded_then_ordered_follows_it_unordered_default(
        precedence: Wiring, trigger: str, ordered: bool) -> None:
    assert trigger_named(precedence, trigger).ordered is ordered


# -- one of every kind ------------------------------------------------------------------------

@pytest.mark.parametrize(("trigger", "subscriber"), [
    ("to-service", Destination(uri="http://127.0.0.1:9/todo-crud", describe="Service todo-crud")),
    ("to-service-path", Destination(uri="http://127.0.0.1:9/close/daily",
                                    describe="Service accrue-payment /close/daily")),
    ("to-kafka-sink", Destination(kafka_topic="audit-events", describe="KafkaSink audit")),
    ("to-broker", Destination(broker="default", describe="Broker default")),
    ("to-uri", Destination(uri="https://hooks.example.test/events",
                           describe="https://hooks.example.test/events")),
])
def test_given_a_subscriber_of_each_shape_when_loaded_then_it_resolves_to_a_destination(
        kinds: Wiring, trigger: str, subscriber: Destination) -> None:
    assert trigger_named(kinds, trigger).subscriber == subscriber


def test_given_both_filter_forms_when_loaded_then_they_are_compiled_and_match(
        kinds: Wiring) -> None:
    legacy = trigger_named(kinds, "to-service").filter
    new = trigger_named(kinds, "to-service-path").filter
    balance = event("dev.eventworks.accounting.balance", source="/eventworks/accrue-payment")

    assert legacy.match(event("dev.eventworks.todo.task.created")).matched
    assert not legacy.match(event("dev.eventworks.todo.task.deleted")).matched
    assert new.match(balance).matched
    assert not new.match({**balance, "source": "/elsewhere"}).matched
    assert trigger_named(kinds, "to-uri").filter.match(event("anything")).matched


def test_given_kafka_sinks_when_loaded_then_structured_is_the_default_content_mode(
        kinds: Wiring) -> None:
    audit, binary = kinds.kafka_sinks

    assert (audit.topic, audit.content_mode, audit.num_partitions, audit.replication_factor) == (
        "audit-events", "structured", 3, 1)
    assert audit.bootstrap_servers == ("kafka-a.test:9092", "kafka-b.test:9092")
    assert (binary.content_mode, binary.num_partitions) == ("binary", None)


def test_given_kafka_sources_when_loaded_then_group_and_offset_are_kept_or_defaulted(
        kinds: Wiring) -> None:
    orders, defaults = kinds.kafka_sources

    assert (orders.topics, orders.consumer_group, orders.initial_offset) == (
        ("orders", "refunds"), "orders-relay", "earliest")
    assert orders.sink == Destination(broker="default", describe="Broker default")
    assert (defaults.consumer_group, defaults.initial_offset) == (
        "knative-kafka-source-kinds-defaults", "latest")
    assert defaults.sink.uri == "http://consumer.test/"


def test_given_ping_sources_when_loaded_then_text_and_base64_data_become_bytes(
        kinds: Wiring) -> None:
    tick, close = kinds.ping_sources

    assert (tick.schedule, tick.timezone, tick.data, tick.content_type) == (
        "*/1 * * * *", None, b'{"batch": 50}', "application/json")
    assert (close.schedule, close.timezone, close.data, close.content_type) == (
        "5 0 * JAN-DEC mon-fri", "Europe/Berlin", b"hello", None)
    assert close.sink == Destination(uri="http://127.0.0.1:9/accrue-payment",
                                     describe="Service accrue-payment")


def test_given_a_github_source_when_loaded_then_its_api_url_and_secrets_are_kept(
        kinds: Wiring) -> None:
    [github] = kinds.github_sources

    assert github.github_api_url == "http://127.0.0.1:9/github-api"
    assert github.event_types == ("issue_comment", "pull_request")
    assert github.secret_token == SecretKeyRef("github-secret", "secretToken")


def test_given_a_sink_binding_by_name_when_loaded_then_its_subject_gets_the_sink(
        kinds: Wiring) -> None:
    [binding] = kinds.sink_bindings

    assert binding.subject == Reference("serving.knative.dev/v1", "Service", "sign-tx", "kinds")
    assert binding.sink == Destination(broker="default", describe="Broker default")


def test_given_nested_kustomizations_when_loaded_then_the_outer_namespace_wins(
        kinds: Wiring) -> None:
    nested = trigger_named(kinds, "nested")

    assert nested.namespace == "kinds"  # not `inner` (its kustomization), not `written-here`
    assert nested.file == FIXTURES / "kinds" / "nested" / "trigger.yaml"
    assert {t.namespace for t in kinds.triggers} == {"kinds"}


def test_given_ignored_kinds_when_loaded_then_they_add_nothing_to_the_wiring(
        kinds: Wiring) -> None:
    assert [b.name for b in kinds.brokers] == ["default"]
    assert len(kinds.triggers) == 6
    assert kinds.triggers_of("default") == kinds.triggers
    assert kinds.triggers_of("elsewhere") == ()


def test_given_a_resolver_when_loaded_then_it_is_asked_with_kind_name_and_namespace() -> None:
    asked: list[tuple[str, str, str]] = []

    def recording(kind: str, name: str, namespace: str) -> str | None:
        asked.append((kind, name, namespace))
        return function_url(kind, name, namespace)

    load(FIXTURES / "kinds", recording)

    assert ("Service", "todo-crud", "kinds") in asked
    assert {kind for kind, _, _ in asked} == {"Service"}  # KafkaSink and Broker: resolved here


def test_given_an_unknown_broker_name_when_asked_then_key_error(kinds: Wiring) -> None:
    with pytest.raises(KeyError):
        kinds.broker("elsewhere")


# -- what cannot be honoured is an error naming the file and the field ---------------------------

@pytest.mark.parametrize(("case", "file", "field", "problem"), [
    ("unknown-kind", "workloads.yaml", "Deployment batch-reader: kind",
     "not a kind the local broker knows"),
    ("bad-backoff-policy", "triggers.yaml", "Trigger impatient: spec.delivery.backoffPolicy",
     "must be linear or exponential"),
    ("bad-duration", "brokers.yaml", "Broker seconds: spec.delivery.backoffDelay",
     "must be an ISO 8601 duration"),
    ("bad-timeout", "triggers.yaml", "Trigger days: spec.delivery.timeout",
     "must be an ISO 8601 duration"),
    ("negative-retry", "triggers.yaml", "Trigger negative: spec.delivery.retry",
     "greater than or equal to 0"),
    ("unresolvable-ref", "triggers.yaml", "Trigger lost: spec.subscriber.ref",
     "no Service named 'nowhere'"),
    ("unresolvable-dead-letter-sink", "brokers.yaml",
     "Broker lossy: spec.delivery.deadLetterSink.ref", "no KafkaSink named 'missing-sink'"),
    ("relative-uri", "triggers.yaml", "Trigger relative: spec.subscriber.uri",
     "must be an absolute URI"),
    ("broker-class", "brokers.yaml",
     "Broker channel-based: metadata.annotations[eventing.knative.dev/broker.class]",
     "must be Kafka"),
    ("sink-binding-selector", "bindings.yaml", "SinkBinding everyone: spec.subject.selector",
     "not supported locally"),
    ("bad-cesql", "triggers.yaml", "Trigger half-written: spec.filters[1].cesql",
     "invalid CESQL"),
    ("bad-delivery-order", "triggers.yaml",
     "Trigger sorted: metadata.annotations[kafka.eventing.knative.dev/delivery.order]",
     "must be ordered or unordered"),
    ("unknown-field", "triggers.yaml", "Trigger capped: spec.delivery.retryAfterMax",
     "cannot honour it"),
    ("wrong-api-version", "triggers.yaml", "Trigger old: apiVersion",
     "must be eventing.knative.dev/v1"),
    ("no-such-broker", "triggers.yaml", "Trigger orphan: spec.broker",
     "no Broker named 'elsewhere'"),
    ("bad-cron", "pings.yaml", "PingSource too-short: spec.schedule",
     "must be a cron schedule of 5 fields"),
    ("duplicate-name", "triggers.yaml", "Trigger twice: metadata.name", "is already used"),
    ("missing-file", "kustomization.yaml", "resources[1]", "no such file or directory"),
    ("kustomize-patches", "kustomization.yaml", "namePrefix", "cannot honour it"),
])
def test_given_a_manifest_it_cannot_honour_when_loaded_then_the_error_names_file_and_field(
        case: str, file: str, field: str, problem: str) -> None:
    with pytest.raises(ManifestError) as raised:
        load(FIXTURES / "errors" / case, function_url)

    message = str(raised.value)
    assert f"errors/{case}/{file}: {field}: " in message
    assert problem in message
