"""func.yaml of every function, checked as `kn func deploy` would read it, and more.

- It validates against func's own JSON schema (shared/reference/func_yaml-schema.json).
- What a cluster needs is there: the namespace, scale bounds with a concurrency target and
  limit, CPU and memory requests and limits, and the health endpoints func-python serves.
- Every `run.envs` value is a literal, or `{{ secret:<name>:<key> }}` naming a Secret
  template of knative/secrets/ that has that key, or `{{ configmap:<name>:<key> }}` naming
  a ConfigMap of the deployed manifests that has that key: a typo fails here, not in a
  pod that never becomes ready.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

NAMESPACE = "eventworks"
HEALTH = {"liveness": "/health/liveness", "readiness": "/health/readiness"}
# func's template syntax for an env value taken from a Secret or a ConfigMap key.
_REFERENCE = re.compile(r"\{\{\s*(secret|configmap):([a-z0-9.-]+):([-._a-zA-Z0-9]+)\s*\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{.*\}\}")


@dataclass(frozen=True)
class EnvRef:
    env: str
    kind: str  # "secret" | "configmap"
    name: str
    key: str


def schema_path(root: Path) -> Path:
    """shared/ lies beside the repository (a developer's checkout and CI's clone alike)."""
    return root.parent / "shared" / "reference" / "func_yaml-schema.json"


@cache
def _validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


class _Loader(yaml.SafeLoader):
    """YAML as func (Go) reads func.yaml: `created` is a string to it, not a timestamp."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def read(func_yaml: Path) -> dict[str, Any]:
    loaded = yaml.load(func_yaml.read_text(), Loader=_Loader)  # noqa: S506 - a SafeLoader
    if not isinstance(loaded, dict):
        raise ValueError(f"{func_yaml}: not a YAML mapping")
    return loaded


def env_refs(func: Mapping[str, Any]) -> tuple[list[EnvRef], list[str]]:
    """The Secret and ConfigMap references of run.envs, and the values func cannot read."""
    refs: list[EnvRef] = []
    bad: list[str] = []
    for env in (func.get("run") or {}).get("envs") or []:
        value = str(env.get("value", ""))
        found = _REFERENCE.fullmatch(value.strip())
        if found is not None:
            refs.append(EnvRef(env.get("name", ""), found[1], found[2], found[3]))
        elif _ANY_TEMPLATE.search(value):
            bad.append(f"run.envs {env.get('name')}: {value!r} is not "
                       "{{ secret:<name>:<key> }} or {{ configmap:<name>:<key> }}")
    return refs, bad


def _policy(name: str, func: Mapping[str, Any]) -> list[str]:
    problems = []
    deploy = func.get("deploy") or {}
    options = deploy.get("options") or {}
    scale = options.get("scale") or {}
    resources = options.get("resources") or {}
    if func.get("name") != name:
        problems.append(f"name is {func.get('name')!r}, not {name!r}")
    if deploy.get("namespace") != NAMESPACE:
        problems.append(f"deploy.namespace must be {NAMESPACE!r}")
    for field in ("min", "max", "target"):
        if field not in scale:
            problems.append(f"deploy.options.scale.{field} is missing")
    if scale.get("metric") != "concurrency":
        problems.append("deploy.options.scale.metric must be 'concurrency' (a concurrency target)")
    if "min" in scale and "max" in scale and not 0 <= scale["min"] <= scale["max"] > 0:
        problems.append("deploy.options.scale needs 0 <= min <= max and max > 0")
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for part, given in (("requests", requests), ("limits", limits)):
        for field in ("cpu", "memory"):
            if field not in given:
                problems.append(f"deploy.options.resources.{part}.{field} is missing")
    if "concurrency" not in limits:
        problems.append("deploy.options.resources.limits.concurrency is missing")
    elif "target" in scale and scale["target"] > limits["concurrency"]:
        problems.append("the concurrency target exceeds the concurrency limit")
    if (deploy.get("healthEndpoints") or {}) != HEALTH:
        problems.append(f"deploy.healthEndpoints must be {HEALTH} (func-python serves them)")
    return problems


def check(root: Path, name: str, func_yaml: Path, secrets: Mapping[str, frozenset[str]],
          configmaps: Mapping[str, frozenset[str]]) -> list[str]:
    """Problems of the func.yaml of deployable `name`; `secrets` and `configmaps` map
    names to their keys."""
    func = read(func_yaml)
    problems = [f"{e.json_path}: {e.message}" for e in
                sorted(_validator(schema_path(root)).iter_errors(func), key=str)]
    problems += _policy(name, func)
    refs, bad = env_refs(func)
    problems += bad
    for ref in refs:
        known = secrets if ref.kind == "secret" else configmaps
        where = "knative/secrets/" if ref.kind == "secret" else "the manifests"
        if ref.name not in known:
            problems.append(f"run.envs {ref.env}: no {ref.kind} {ref.name!r} in {where}")
        elif ref.key not in known[ref.name]:
            problems.append(f"run.envs {ref.env}: {ref.kind} {ref.name!r} has no key {ref.key!r}")
    return [f"{func_yaml}: {p}" for p in problems]


def secret_templates(folder: Path) -> dict[str, frozenset[str]]:
    """Name -> keys of the Secret templates (knative/secrets/*.yaml)."""
    found: dict[str, frozenset[str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                keys = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
                found[doc["metadata"]["name"]] = frozenset(keys)
    return found
