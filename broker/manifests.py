"""The wiring of the local broker, read from the Kustomize base a cluster gets (`knative/base/`).

`load(base, resolve)` follows `<base>/kustomization.yaml` (its `resources:`: files, multi-document
YAML, and directories with their own kustomization, recursively), validates every resource the way
Knative's webhooks would, and returns a frozen `Wiring`. A kind it does not know, or a field it
cannot honour, is a `ManifestError` naming the file, the resource and the field path; nothing is
skipped silently except the kinds in `IGNORED_KINDS`, which mean nothing to a local data plane.

Rules followed, and where they come from:

- Kustomize `namespace:` overrides the namespace of every resource under it, set or not, and an
  outer kustomization wins over an inner one (kubectl.docs.kubernetes.io, kustomization/namespace:
  "Will override the existing namespace if it is set on a resource"). A resource with no namespace
  anywhere is in `default`, as in Kubernetes. Refs without a namespace mean the referrer's.
- Delivery is Knative's Kafka broker, not the channel-based broker (whose Trigger delivery replaces
  the Broker's as a whole). eventing-kafka-broker, control-plane/pkg/core/config/utils.go:
  - `EgressConfigFromDelivery`: a delivery with none of `deadLetterSink`, `retry`, `timeout` counts
    as absent (a lone `backoffPolicy`/`backoffDelay` is ignored). `backoffPolicy` and
    `backoffDelay` are read only when `retry` is set; the policy then defaults to exponential
    and the delay to the controller's `BROKER_DEFAULT_BACKOFF_DELAY_MS`, "1000" in
    control-plane/config/eventing-kafka-broker/200-controller/500-controller.yaml. So a Trigger
    that sets `retry` without `backoffDelay` gets 1 s, not the Broker's delay.
  - `MergeEgressConfig(trigger, broker)`: field by field, the Trigger's value wins unless it is
    zero ("not set"): `deadLetterSink`, `retry`, `backoffDelay`, `timeout`. A Trigger's
    `retry: 0` therefore cannot switch off a Broker's retries. `backoffPolicy` is never merged:
    once the Trigger has any delivery, its policy (defaulted to exponential) wins.
  - No delivery on either side: no retries (`retry` 0, proto/contract.proto: "Setting retry to
    0 means don't retry"), no dead-letter sink; `timeout` absent (None) leaves the request
    timeout to the dispatcher, as the contract's "0 means absent, allowing the data plane to
    default it".
- `kafka.eventing.knative.dev/delivery.order`: `ordered` or `unordered`; absent is unordered (the
  contract's DeliveryOrder zero value); anything else is an error, as in the Trigger reconciler.
- KafkaSink `contentMode` defaults to structured (KafkaSinkSpec.SetDefaults). KafkaSource
  `initialOffset` defaults to latest (KafkaSource.SetDefaults); its `consumerGroup` defaults there
  to `knative-kafka-source-<random UUID>`, fixed once by the webhook. A file read at every start
  cannot keep a random name, so here it is `knative-kafka-source-<namespace>-<name>`.
- A Destination `uri` next to a `ref` is resolved against the ref's URL as RFC 3986 says (Knative
  uses url.ResolveReference), so `/path` replaces any path the local URL has; a `uri` alone must
  be absolute. A KafkaSink ref becomes its topic and a Broker ref its name; every other kind is
  asked of `resolve` (the local stack), and an unknown one is an error, never a guess.
- `DeliverySpec()` is "no delivery anywhere": no retries, and the 1 s backoff delay Knative's
  controller would fill in once `retry` is set.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

if TYPE_CHECKING:
    from broker.filters import Filter

Resolver = Callable[[str, str, str], str | None]  # (kind, name, namespace) -> URL, None if unknown

DEFAULT_NAMESPACE = "default"
DEFAULT_BACKOFF_DELAY = 1.0  # seconds: the Kafka controller's BROKER_DEFAULT_BACKOFF_DELAY_MS
BROKER_CLASS = "eventing.knative.dev/broker.class"
DELIVERY_ORDER = "kafka.eventing.knative.dev/delivery.order"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Kinds with no data-plane meaning on one laptop; every other unknown kind is an error.
IGNORED_KINDS: Mapping[str, str] = {
    "Namespace": "the local stack runs everything in one process tree",
    "Secret": "local secrets are the stack's dev secrets (.stack/env)",
    "NetworkPolicy": "everything listens on loopback",
    "ServiceAccount": "no pod identities locally",
    "Role": "no RBAC locally",
    "RoleBinding": "no RBAC locally",
    "ClusterRole": "no RBAC locally",
    "ClusterRoleBinding": "no RBAC locally",
    # Who may post to the Broker, by OIDC identity: a laptop has none; the local ingress
    # verifies bearer tokens itself and trusts loopback.
    "EventPolicy": "no OIDC sender identities locally",
}

# Annotations that change what a resource does and that the local broker cannot do.
UNHONOURED_ANNOTATIONS: Mapping[str, str] = {
    "kafka.eventing.knative.dev/external.topic": "a Broker on an external topic is not supported",
}


class ManifestError(Exception):
    """A manifest the local broker cannot honour; the message names the file and the field."""


# -- what the dispatcher and the sources read -------------------------------------------------

@dataclass(frozen=True)
class Destination:
    uri: str | None = None
    kafka_topic: str | None = None  # a KafkaSink: produce to this topic instead of POSTing
    broker: str | None = None       # a Broker: publish to its ingress
    describe: str = ""              # for logs and knativeerrordest, e.g. "Service parse-comment"


@dataclass(frozen=True)
class DeliverySpec:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = DEFAULT_BACKOFF_DELAY  # seconds
    timeout: float | None = None                  # seconds; None: the dispatcher's default
    dead_letter_sink: Destination | None = None


@dataclass(frozen=True)
class Trigger:
    name: str
    namespace: str
    broker: str
    filter: Filter
    subscriber: Destination
    delivery: DeliverySpec
    ordered: bool
    file: Path


@dataclass(frozen=True)
class Broker:
    name: str
    namespace: str
    partitions: int
    replication_factor: int
    bootstrap_servers: str | None
    delivery: DeliverySpec
    file: Path

    @property
    def topic(self) -> str:
        return f"knative-broker-{self.namespace}-{self.name}"


@dataclass(frozen=True)
class KafkaSource:
    name: str
    namespace: str
    bootstrap_servers: tuple[str, ...]
    topics: tuple[str, ...]
    consumer_group: str
    initial_offset: str  # "earliest" | "latest"
    sink: Destination
    file: Path


@dataclass(frozen=True)
class PingSource:
    name: str
    namespace: str
    schedule: str         # five cron fields
    timezone: str | None  # IANA name; None is UTC, as Knative's adapter
    data: bytes | None    # `data` encoded as UTF-8, or `dataBase64` decoded
    content_type: str | None
    sink: Destination
    file: Path


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class GitHubSource:
    name: str
    namespace: str
    event_types: tuple[str, ...]
    owner_and_repository: str
    access_token: SecretKeyRef
    secret_token: SecretKeyRef
    github_api_url: str | None
    sink: Destination
    file: Path


@dataclass(frozen=True)
class Reference:
    api_version: str
    kind: str
    name: str
    namespace: str


@dataclass(frozen=True)
class SinkBinding:
    name: str
    namespace: str
    subject: Reference  # the workload that gets K_SINK
    sink: Destination
    file: Path


@dataclass(frozen=True)
class KafkaSinkSpec:
    name: str
    namespace: str
    topic: str
    bootstrap_servers: tuple[str, ...]
    content_mode: str  # "binary" | "structured"
    num_partitions: int | None
    replication_factor: int | None
    file: Path


@dataclass(frozen=True)
class Wiring:
    brokers: tuple[Broker, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    kafka_sources: tuple[KafkaSource, ...] = ()
    ping_sources: tuple[PingSource, ...] = ()
    github_sources: tuple[GitHubSource, ...] = ()
    sink_bindings: tuple[SinkBinding, ...] = ()
    kafka_sinks: tuple[KafkaSinkSpec, ...] = ()

    def broker(self, name: str, namespace: str | None = None) -> Broker:
        found = [b for b in self.brokers
                 if b.name == name and namespace in (None, b.namespace)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} Brokers named {name!r}"
                           + (f" in namespace {namespace!r}" if namespace else ""))
        return found[0]

    def triggers_of(self, broker_name: str, namespace: str | None = None) -> tuple[Trigger, ...]:
        return tuple(t for t in self.triggers
                     if t.broker == broker_name and namespace in (None, t.namespace))


# -- the YAML edge: Knative's schemas, strict, unknown fields refused -------------------------

def _problem(message: str) -> PydanticCustomError:
    return PydanticCustomError("manifest", message)


_ISO_DURATION = re.compile(
    r"PT(?=\d)(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?")


def _seconds(value: object) -> float:
    found = _ISO_DURATION.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise _problem("must be an ISO 8601 duration like PT0.5S, PT2S or PT1M")
    hours, minutes, seconds = (float(found[part] or 0) for part in "hms")
    return hours * 3600 + minutes * 60 + seconds


# (lowest, highest, names): names count from `lowest`, as robfig/cron's standard parser does.
_CRON_FIELDS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN",
             "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    (0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_ITEM = re.compile(r"(?:\*|\?|(?P<low>\w+)(?:-(?P<high>\w+))?)(?:/(?P<step>\d+))?")


def _cron_value(word: str, lowest: int, highest: int, names: tuple[str, ...]) -> int | None:
    number = int(word) if word.isascii() and word.isdigit() else (
        names.index(word.upper()) + lowest if word.upper() in names else None)
    return number if number is not None and lowest <= number <= highest else None


def _cron_field_ok(text: str, lowest: int, highest: int, names: tuple[str, ...]) -> bool:
    for item in text.split(","):
        found = _CRON_ITEM.fullmatch(item)
        if found is None or (found["step"] is not None and int(found["step"]) == 0):
            return False
        if found["low"] is None:  # * or ?
            continue
        first = _cron_value(found["low"], lowest, highest, names)
        last = first if found["high"] is None else _cron_value(
            found["high"], lowest, highest, names)
        if first is None or last is None or first > last:
            return False
    return True


def _schedule(value: str) -> str:
    fields = value.split()
    if len(fields) != len(_CRON_FIELDS) or not all(
            _cron_field_ok(text, *spec) for text, spec in zip(fields, _CRON_FIELDS, strict=True)):
        raise _problem("must be a cron schedule of 5 fields: minute hour day-of-month month "
                       "day-of-week, e.g. '0 0 * * *'")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _problem("must be an IANA time zone like Europe/Berlin") from None
    return value


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _problem("must be base64") from None
    return value


_Seconds = Annotated[float, PlainValidator(_seconds)]
_Schedule = Annotated[str, AfterValidator(_schedule)]
_TimeZone = Annotated[str, AfterValidator(_timezone)]
_Base64 = Annotated[str, AfterValidator(_base64)]
_Name = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
_NonEmpty = Annotated[str, Field(min_length=1)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, alias_generator=to_camel)


class _Metadata(BaseModel):
    # labels, uid, generation…: nothing a local data plane reads
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    name: _Name
    namespace: _Name | None = None
    annotations: dict[str, str] = {}


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True, alias_generator=to_camel)

    api_version: str
    kind: str
    metadata: _Metadata


class _Ref(_Model):
    api_version: _NonEmpty
    kind: _NonEmpty
    name: _Name
    namespace: _Name | None = None


class _Destination(_Model):
    ref: _Ref | None = None
    uri: _NonEmpty | None = None


class _Delivery(_Model):
    dead_letter_sink: _Destination | None = None
    retry: int | None = Field(default=None, ge=0)
    backoff_policy: Literal["linear", "exponential"] | None = None
    backoff_delay: _Seconds | None = None
    timeout: _Seconds | None = None


class _Resource(_Model):
    api_version: str
    kind: str
    metadata: _Metadata


class _ConfigMap(_Resource):
    data: dict[str, str] = {}


class _BrokerSpec(_Model):
    config: _Ref | None = None
    delivery: _Delivery | None = None


class _Broker(_Resource):
    spec: _BrokerSpec = _BrokerSpec()


class _TriggerSpec(_Model):
    broker: _Name
    filter: object = None   # both filter forms belong to broker.filters.compile_filter
    filters: object = None
    subscriber: _Destination
    delivery: _Delivery | None = None


class _Trigger(_Resource):
    spec: _TriggerSpec


class _KafkaSourceSpec(_Model):
    bootstrap_servers: list[_NonEmpty] = Field(min_length=1)
    topics: list[_NonEmpty] = Field(min_length=1)
    consumer_group: _NonEmpty | None = None
    initial_offset: Literal["earliest", "latest"] = "latest"
    consumers: int | None = Field(default=None, ge=1)  # replicas of a cluster dispatcher
    sink: _Destination


class _KafkaSource(_Resource):
    spec: _KafkaSourceSpec


class _PingSourceSpec(_Model):
    schedule: _Schedule
    timezone: _TimeZone | None = None
    content_type: _NonEmpty | None = None
    data: str | None = None
    data_base64: _Base64 | None = None
    sink: _Destination


class _PingSource(_Resource):
    spec: _PingSourceSpec


class _SecretKeyRef(_Model):
    name: _Name
    key: _NonEmpty


class _SecretValue(_Model):
    secret_key_ref: _SecretKeyRef


class _GitHubSourceSpec(_Model):
    event_types: list[Annotated[str, Field(pattern=r"^[a-z_]+$")]] = Field(min_length=1)
    owner_and_repository: Annotated[str, Field(pattern=r"^[\w.-]+(/[\w.-]+)?$")]
    access_token: _SecretValue
    secret_token: _SecretValue
    github_api_url: _NonEmpty | None = Field(default=None, alias="githubAPIURL")
    # How the cluster registers the webhook and runs the adapter; locally GitHub calls the
    # broker's /github instead, so these change nothing.
    secure: bool | None = None
    service_account_name: str | None = None
    sink: _Destination


class _GitHubSource(_Resource):
    spec: _GitHubSourceSpec


class _Subject(_Model):
    api_version: _NonEmpty
    kind: _NonEmpty
    name: _Name | None = None
    namespace: _Name | None = None
    selector: dict[str, object] | None = None


class _SinkBindingSpec(_Model):
    subject: _Subject
    sink: _Destination


class _SinkBinding(_Resource):
    spec: _SinkBindingSpec


class _KafkaSinkSpec(_Model):
    topic: _NonEmpty
    bootstrap_servers: list[_NonEmpty] = Field(min_length=1)
    content_mode: Literal["binary", "structured"] = "structured"
    num_partitions: int | None = Field(default=None, ge=1)
    replication_factor: int | None = Field(default=None, ge=1)


class _KafkaSink(_Resource):
    spec: _KafkaSinkSpec


class _Kustomization(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, alias_generator=to_camel)

    api_version: str | None = None
    kind: Literal["Kustomization"] | None = None
    namespace: _Name | None = None
    resources: list[_NonEmpty] = []
    # Labels reach no data-plane decision; namePrefix, patches, generators… would, so they are
    # refused rather than ignored.
    labels: list[object] = []
    common_labels: dict[str, str] = {}


@dataclass(frozen=True)
class _Kind:
    api_version: str
    model: type[_Resource]


KINDS: Mapping[str, _Kind] = {
    "ConfigMap": _Kind("v1", _ConfigMap),
    "Broker": _Kind("eventing.knative.dev/v1", _Broker),
    "Trigger": _Kind("eventing.knative.dev/v1", _Trigger),
    "KafkaSink": _Kind("eventing.knative.dev/v1alpha1", _KafkaSink),
    "KafkaSource": _Kind("sources.knative.dev/v1beta1", _KafkaSource),
    "PingSource": _Kind("sources.knative.dev/v1", _PingSource),
    "GitHubSource": _Kind("sources.knative.dev/v1alpha1", _GitHubSource),
    "SinkBinding": _Kind("sources.knative.dev/v1", _SinkBinding),
}

# The Kafka broker's config keys (kafka-broker-config) the local broker reads.
_BROKER_CONFIG_KEYS = frozenset(
    {"bootstrap.servers", "default.topic.partitions", "default.topic.replication.factor"})
_TOPIC_CONFIG_PREFIX = "default.topic.config."  # topic settings of a real cluster: no local use


# -- error messages ---------------------------------------------------------------------------

def _shown(file: Path) -> str:
    absolute = file.absolute()
    relative = os.path.relpath(absolute)
    return str(file) if relative.startswith("..") else relative


def _field_path(location: Iterable[int | str]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int) or not re.fullmatch(r"\w+", part):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


_SAY: Mapping[str, Callable[[ErrorDetails], str]] = {
    "missing": lambda _: "is required",
    "extra_forbidden": lambda _: "is not a field the local broker knows; it cannot honour it",
    "literal_error": lambda e: "must be " + str(e.get("ctx", {}).get("expected", "")).replace(
        "'", ""),
}


def _said(error: ErrorDetails) -> str:
    say = _SAY.get(error["type"])
    return say(error) if say else error["msg"].replace("Input should be", "must be")


@dataclass(frozen=True)
class _Where:
    """A resource's place in the manifests, for messages."""

    file: Path
    kind: str
    name: str

    def error(self, path: str, problem: str) -> ManifestError:
        subject = f"{self.kind} {self.name}: " if self.kind else ""  # a kustomization has none
        return ManifestError(f"{_shown(self.file)}: {subject}{path}: {problem}")

    def invalid(self, error: ValidationError) -> ManifestError:
        return ManifestError("\n".join(
            str(self.error(_field_path(e["loc"]), _said(e))) for e in error.errors()))


# -- reading files: kustomizations and YAML documents -----------------------------------------

@dataclass(frozen=True)
class _Document:
    file: Path
    index: int                 # position in a multi-document file, for unnamed documents
    body: Mapping[str, Any]
    namespace: str | None      # set by a kustomization's `namespace:`


def _kustomization_file(directory: Path) -> Path | None:
    return next((directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()), None)


def _yaml_documents(file: Path) -> list[_Document]:
    try:
        bodies = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"{_shown(file)}: {error}") from None
    documents = []
    for index, body in enumerate(bodies):
        if body is None:  # an empty document, e.g. after a trailing `---`
            continue
        if not isinstance(body, dict):
            raise ManifestError(f"{_shown(file)}: document {index + 1}: must be a mapping")
        documents.append(_Document(file, index, body, None))
    return documents


def _collect(directory: Path, visiting: tuple[Path, ...]) -> list[_Document]:
    file = _kustomization_file(directory)
    if file is None:
        raise ManifestError(f"{_shown(directory)}: no kustomization.yaml")
    where = _Where(file, "", "")
    found = _yaml_documents(file)
    if len(found) > 1:
        raise where.error("---", "a kustomization is one document")
    try:
        kustomization = _Kustomization.model_validate(found[0].body if found else {})
    except ValidationError as error:
        raise where.invalid(error) from None
    documents: list[_Document] = []
    for index, entry in enumerate(kustomization.resources):
        target, path = directory / entry, f"resources[{index}]"
        if "://" in entry or entry.startswith(("github.com/", "git@")):
            raise where.error(path, f"remote resources cannot be read locally: {entry}")
        if target.is_dir():
            if target.resolve() in visiting:
                raise where.error(path, f"includes itself: {entry}")
            documents += _collect(target, (*visiting, target.resolve()))
        elif target.is_file():
            documents += _yaml_documents(target)
        else:
            raise where.error(path, f"no such file or directory: {entry}")
    if kustomization.namespace:
        documents = [replace(d, namespace=kustomization.namespace) for d in documents]
    return documents


# -- validation of each resource --------------------------------------------------------------

@dataclass(frozen=True)
class _Parsed:
    where: _Where
    namespace: str
    model: _Resource
    body: Mapping[str, Any]  # the YAML as written, for broker.filters


def _parse(document: _Document) -> _Parsed | None:
    kind = document.body.get("kind")
    if kind in IGNORED_KINDS:
        return None
    unnamed = _Where(document.file, str(kind or "resource"), f"(document {document.index + 1})")
    try:
        envelope = _Envelope.model_validate(document.body)
    except ValidationError as error:
        raise unnamed.invalid(error) from None
    where = _Where(document.file, envelope.kind, envelope.metadata.name)
    known = KINDS.get(envelope.kind)
    if known is None:
        raise where.error("kind", f"{envelope.kind} ({envelope.api_version}) is not a kind the "
                                  "local broker knows; it cannot honour it")
    if envelope.api_version != known.api_version:
        raise where.error("apiVersion", f"must be {known.api_version} for {envelope.kind}")
    try:
        model = known.model.model_validate(document.body)
    except ValidationError as error:
        raise where.invalid(error) from None
    for annotation, why in UNHONOURED_ANNOTATIONS.items():
        if annotation in model.metadata.annotations:
            raise where.error(f"metadata.annotations[{annotation}]", why)
    namespace = document.namespace or model.metadata.namespace or DEFAULT_NAMESPACE
    return _Parsed(where, namespace, model, document.body)


M = TypeVar("M", bound=_Resource)


def _of(parsed: Sequence[_Parsed], model: type[M]) -> list[tuple[_Parsed, M]]:
    return [(p, p.model) for p in parsed if isinstance(p.model, model)]


# -- destinations -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Targets:
    """What a Destination's ref can name."""

    resolve: Resolver
    kafka_sinks: Mapping[tuple[str, str], KafkaSinkSpec]
    brokers: frozenset[tuple[str, str]]


def _to_kafka_sink(targets: _Targets, ref: _Ref, namespace: str) -> Destination | None:
    sink = targets.kafka_sinks.get((namespace, ref.name))
    return None if sink is None else Destination(
        kafka_topic=sink.topic, describe=f"KafkaSink {ref.name}")


def _to_broker(targets: _Targets, ref: _Ref, namespace: str) -> Destination | None:
    known = (namespace, ref.name) in targets.brokers
    return Destination(broker=ref.name, describe=f"Broker {ref.name}") if known else None


def _to_resolved(targets: _Targets, ref: _Ref, namespace: str) -> Destination | None:
    uri = targets.resolve(ref.kind, ref.name, namespace)
    return None if uri is None else Destination(uri=uri, describe=f"{ref.kind} {ref.name}")


# Kinds the manifests themselves define; anything else (a Knative Service…) the stack resolves.
_REF_KINDS: Mapping[str, Callable[[_Targets, _Ref, str], Destination | None]] = {
    "KafkaSink": _to_kafka_sink,
    "Broker": _to_broker,
}


def _destination(targets: _Targets, given: _Destination, namespace: str, where: _Where,
                 path: str) -> Destination:
    if given.ref is None:
        if given.uri is None:
            raise where.error(path, "needs a ref or a uri")
        if not urlsplit(given.uri).scheme:
            raise where.error(f"{path}.uri", "must be an absolute URI when there is no ref")
        return Destination(uri=given.uri, describe=given.uri)
    ref, ref_namespace = given.ref, given.ref.namespace or namespace
    found = _REF_KINDS.get(ref.kind, _to_resolved)(targets, ref, ref_namespace)
    if found is None:
        raise where.error(f"{path}.ref",
                          f"no {ref.kind} named '{ref.name}' in namespace '{ref_namespace}'")
    if given.uri is None:
        return found
    if found.uri is None:
        raise where.error(f"{path}.uri", f"cannot be joined to a {ref.kind}, which has no URL")
    joined = urljoin(found.uri, given.uri)
    return replace(found, uri=joined, describe=f"{found.describe} {given.uri}")


# -- delivery ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Egress:
    """One side's delivery as the Kafka broker's contract holds it: 0 means "not set"."""

    dead_letter_sink: Destination | None
    retry: int
    backoff_policy: str
    backoff_delay: float
    timeout: float


def _egress(given: _Delivery | None, dead_letter_sink: Destination | None) -> _Egress | None:
    if given is None or (dead_letter_sink is None and given.retry is None
                         and given.timeout is None):
        return None
    retrying = given.retry is not None  # backoff settings are read only alongside retry
    delay = DEFAULT_BACKOFF_DELAY if given.backoff_delay is None else given.backoff_delay
    return _Egress(
        dead_letter_sink=dead_letter_sink,
        retry=given.retry or 0,
        backoff_policy=(given.backoff_policy or "exponential") if retrying else "exponential",
        backoff_delay=delay if retrying else 0.0,
        timeout=given.timeout or 0.0,
    )


def _merged(trigger: _Egress | None, broker: _Egress | None) -> _Egress | None:
    if trigger is None:
        return broker
    if broker is None:
        return trigger
    return _Egress(
        dead_letter_sink=trigger.dead_letter_sink or broker.dead_letter_sink,
        retry=trigger.retry or broker.retry,
        backoff_policy=trigger.backoff_policy,  # Knative takes the Trigger's, even defaulted
        backoff_delay=trigger.backoff_delay or broker.backoff_delay,
        timeout=trigger.timeout or broker.timeout,
    )


def _delivery_spec(egress: _Egress | None) -> DeliverySpec:
    if egress is None:
        return DeliverySpec()
    return DeliverySpec(
        retry=egress.retry,
        backoff_policy=egress.backoff_policy,
        # without retries the delay is never used; the default keeps equal specs equal
        backoff_delay=egress.backoff_delay if egress.retry else DEFAULT_BACKOFF_DELAY,
        timeout=egress.timeout or None,
        dead_letter_sink=egress.dead_letter_sink,
    )


def _own_egress(targets: _Targets, given: _Delivery | None, namespace: str,
                where: _Where) -> _Egress | None:
    sink = None
    if given is not None and given.dead_letter_sink is not None:
        sink = _destination(targets, given.dead_letter_sink, namespace, where,
                            "spec.delivery.deadLetterSink")
    return _egress(given, sink)


# -- building the wiring ----------------------------------------------------------------------

class _FieldProblem(Exception):
    """A problem already phrased as "field.path: what is wrong"."""


def _compile_filter(spec: Mapping[str, object]) -> Filter:
    # Imported here, not at the top, so that this module loads while broker.filters is written.
    from broker import filters
    try:
        return filters.compile_filter(spec)
    except filters.FilterError as error:
        raise _FieldProblem(str(error)) from error


def _positive(config: _Parsed, data: Mapping[str, str], key: str) -> int:
    text = data.get(key)
    if text is None:
        raise config.where.error(f"data[{key}]", "is required by a Kafka Broker")
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise config.where.error(f"data[{key}]", f"must be a positive integer, not {text!r}")
    return int(text)


def _broker(parsed: _Parsed, model: _Broker, targets: _Targets,
            configs: Mapping[tuple[str, str], tuple[_Parsed, _ConfigMap]],
            ) -> tuple[Broker, _Egress | None]:
    where, namespace = parsed.where, parsed.namespace
    broker_class = model.metadata.annotations.get(BROKER_CLASS)
    if broker_class != "Kafka":
        raise where.error(f"metadata.annotations[{BROKER_CLASS}]",
                          f"must be Kafka (the local broker is Knative's Kafka broker), "
                          f"not {broker_class!r}")
    ref = model.spec.config
    if ref is None:
        raise where.error("spec.config", "is required: the cluster's default Broker config is "
                                         "not in the manifests")
    if ref.kind != "ConfigMap":
        raise where.error("spec.config.kind", "must be ConfigMap")
    found = configs.get((ref.namespace or namespace, ref.name))
    if found is None:
        raise where.error("spec.config", f"no ConfigMap named '{ref.name}' in namespace "
                                         f"'{ref.namespace or namespace}'")
    config, data = found[0], found[1].data
    for key in data:
        if key not in _BROKER_CONFIG_KEYS and not key.startswith(_TOPIC_CONFIG_PREFIX):
            raise config.where.error(f"data[{key}]", "is not a Kafka Broker setting the local "
                                                     "broker can honour")
    egress = _own_egress(targets, model.spec.delivery, namespace, where)
    return Broker(
        name=model.metadata.name,
        namespace=namespace,
        partitions=_positive(config, data, "default.topic.partitions"),
        replication_factor=_positive(config, data, "default.topic.replication.factor"),
        bootstrap_servers=data.get("bootstrap.servers"),
        delivery=_delivery_spec(egress),
        file=where.file,
    ), egress


_DELIVERY_ORDERS: Mapping[str, bool] = {"ordered": True, "unordered": False}


def _trigger(parsed: _Parsed, model: _Trigger, targets: _Targets,
             broker_egress: Mapping[tuple[str, str], _Egress | None]) -> Trigger:
    where, namespace, spec = parsed.where, parsed.namespace, model.spec
    if (namespace, spec.broker) not in broker_egress:
        raise where.error("spec.broker",
                          f"no Broker named '{spec.broker}' in namespace '{namespace}'")
    order = model.metadata.annotations.get(DELIVERY_ORDER, "unordered")
    if order not in _DELIVERY_ORDERS:
        raise where.error(f"metadata.annotations[{DELIVERY_ORDER}]",
                          f"must be ordered or unordered, not {order!r}")
    try:
        compiled = _compile_filter(parsed.body["spec"])
    except _FieldProblem as problem:
        raise ManifestError(f"{_shown(where.file)}: Trigger {where.name}: {problem}") from None
    own = _own_egress(targets, spec.delivery, namespace, where)
    return Trigger(
        name=model.metadata.name,
        namespace=namespace,
        broker=spec.broker,
        filter=compiled,
        subscriber=_destination(targets, spec.subscriber, namespace, where, "spec.subscriber"),
        delivery=_delivery_spec(_merged(own, broker_egress[(namespace, spec.broker)])),
        ordered=_DELIVERY_ORDERS[order],
        file=where.file,
    )


def _kafka_sink(parsed: _Parsed, model: _KafkaSink) -> KafkaSinkSpec:
    spec = model.spec
    return KafkaSinkSpec(
        name=model.metadata.name,
        namespace=parsed.namespace,
        topic=spec.topic,
        bootstrap_servers=tuple(spec.bootstrap_servers),
        content_mode=spec.content_mode,
        num_partitions=spec.num_partitions,
        replication_factor=spec.replication_factor,
        file=parsed.where.file,
    )


def _kafka_source(parsed: _Parsed, model: _KafkaSource, targets: _Targets) -> KafkaSource:
    spec, name, namespace = model.spec, model.metadata.name, parsed.namespace
    return KafkaSource(
        name=name,
        namespace=namespace,
        bootstrap_servers=tuple(spec.bootstrap_servers),
        topics=tuple(spec.topics),
        consumer_group=spec.consumer_group or f"knative-kafka-source-{namespace}-{name}",
        initial_offset=spec.initial_offset,
        sink=_destination(targets, spec.sink, namespace, parsed.where, "spec.sink"),
        file=parsed.where.file,
    )


def _ping_source(parsed: _Parsed, model: _PingSource, targets: _Targets) -> PingSource:
    spec = model.spec
    if spec.data is not None and spec.data_base64 is not None:
        raise parsed.where.error("spec.dataBase64", "cannot be set together with spec.data")
    data = (spec.data.encode() if spec.data is not None
            else None if spec.data_base64 is None else base64.b64decode(spec.data_base64))
    return PingSource(
        name=model.metadata.name,
        namespace=parsed.namespace,
        schedule=spec.schedule,
        timezone=spec.timezone,
        data=data,
        content_type=spec.content_type,
        sink=_destination(targets, spec.sink, parsed.namespace, parsed.where, "spec.sink"),
        file=parsed.where.file,
    )


def _github_source(parsed: _Parsed, model: _GitHubSource, targets: _Targets) -> GitHubSource:
    spec = model.spec

    def secret(value: _SecretValue) -> SecretKeyRef:
        return SecretKeyRef(value.secret_key_ref.name, value.secret_key_ref.key)

    return GitHubSource(
        name=model.metadata.name,
        namespace=parsed.namespace,
        event_types=tuple(spec.event_types),
        owner_and_repository=spec.owner_and_repository,
        access_token=secret(spec.access_token),
        secret_token=secret(spec.secret_token),
        github_api_url=spec.github_api_url,
        sink=_destination(targets, spec.sink, parsed.namespace, parsed.where, "spec.sink"),
        file=parsed.where.file,
    )


def _sink_binding(parsed: _Parsed, model: _SinkBinding, targets: _Targets) -> SinkBinding:
    subject, where = model.spec.subject, parsed.where
    if subject.selector is not None:
        raise where.error("spec.subject.selector",
                          "a label selector is not supported locally; name the subject")
    if subject.name is None:
        raise where.error("spec.subject.name", "is required")
    return SinkBinding(
        name=model.metadata.name,
        namespace=parsed.namespace,
        subject=Reference(subject.api_version, subject.kind, subject.name,
                          subject.namespace or parsed.namespace),
        sink=_destination(targets, model.spec.sink, parsed.namespace, where, "spec.sink"),
        file=where.file,
    )


def _unique(parsed: Sequence[_Parsed]) -> None:
    seen: dict[tuple[str, str, str], _Where] = {}
    for p in parsed:
        key = (p.where.kind, p.namespace, p.where.name)
        if key in seen:
            raise p.where.error("metadata.name", f"is already used by the {p.where.kind} in "
                                                 f"{_shown(seen[key].file)}")
        seen[key] = p.where


def load(base: Path, resolve: Resolver) -> Wiring:
    """Read the Kustomize base at `base`; raise ManifestError for anything not honoured."""
    parsed = [p for p in map(_parse, _collect(base, (base.resolve(),))) if p is not None]
    _unique(parsed)
    kafka_sinks = [_kafka_sink(p, m) for p, m in _of(parsed, _KafkaSink)]
    targets = _Targets(
        resolve=resolve,
        kafka_sinks={(s.namespace, s.name): s for s in kafka_sinks},
        brokers=frozenset((p.namespace, m.metadata.name) for p, m in _of(parsed, _Broker)),
    )
    configs = {(p.namespace, m.metadata.name): (p, m) for p, m in _of(parsed, _ConfigMap)}
    brokers = [_broker(p, m, targets, configs) for p, m in _of(parsed, _Broker)]
    egress = {(b.namespace, b.name): e for b, e in brokers}
    return Wiring(
        brokers=tuple(b for b, _ in brokers),
        triggers=tuple(_trigger(p, m, targets, egress) for p, m in _of(parsed, _Trigger)),
        kafka_sources=tuple(_kafka_source(p, m, targets) for p, m in _of(parsed, _KafkaSource)),
        ping_sources=tuple(_ping_source(p, m, targets) for p, m in _of(parsed, _PingSource)),
        github_sources=tuple(
            _github_source(p, m, targets) for p, m in _of(parsed, _GitHubSource)),
        sink_bindings=tuple(_sink_binding(p, m, targets) for p, m in _of(parsed, _SinkBinding)),
        kafka_sinks=tuple(kafka_sinks),
    )

