"""Write knative/schemas/: JSON schemas of Knative Eventing's core kinds and EventPolicy,
from the models `cloudcoil-models-knative-eventing` generates from Knative's CRD schemas
(1.17).

Not a dependency of the project (its package registers a pytest plugin that starts
clusters); regenerate with a throw-away environment:

    uv run --no-project --with cloudcoil-models-knative-eventing==1.17.1.1 \\
        python -m deploy.knative_schemas

Each object schema with properties is closed (`additionalProperties: false`): a field the
CRD does not declare would be pruned by the API server, so deploy:check refuses it, as
kubeconform -strict does. One field is added: the delivery `timeout` (Broker, Trigger),
which Knative's Kafka broker reads (feature delivery-timeout, on by default) although the
CRD schema leaves it undeclared.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# (apiVersion, kind) -> (module, class) of cloudcoil-models-knative-eventing
KNATIVE_MODELS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("eventing.knative.dev/v1", "Broker"): ("eventing.v1", "Broker"),
    ("eventing.knative.dev/v1", "Trigger"): ("eventing.v1", "Trigger"),
    ("sources.knative.dev/v1", "PingSource"): ("sources.v1", "PingSource"),
    ("sources.knative.dev/v1", "SinkBinding"): ("sources.v1", "SinkBinding"),
    # Who may send to the Broker (knative/base/gateway.yaml); Knative 1.15+, alpha API.
    ("eventing.knative.dev/v1alpha1", "EventPolicy"): ("eventing.v1alpha1", "EventPolicy"),
}
TIMEOUT = {"type": "string", "$comment": "delivery-timeout: read by Knative, not in the CRD"}


def _close(node: Any) -> None:
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            node.setdefault("additionalProperties", False)
            if {"backoffDelay", "retry", "deadLetterSink"} <= properties.keys():
                properties.setdefault("timeout", TIMEOUT)
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for value in node:
            _close(value)


def schema_file(root: Path, api_version: str, kind: str) -> Path:
    group, version = api_version.split("/")
    return root / "knative" / "schemas" / f"{group}_{version}_{kind.lower()}.json"


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    for (api_version, kind), (module, name) in KNATIVE_MODELS.items():
        with warnings.catch_warnings():  # generated field names shadow pydantic's
            warnings.simplefilter("ignore")
            loaded = importlib.import_module(f"cloudcoil.models.knative_eventing.{module}")
        schema = getattr(loaded, name).model_json_schema(by_alias=True)
        _close(schema)
        schema["$comment"] = (f"{kind} ({api_version}) from cloudcoil-models-knative-eventing "
                              "1.17.1.1, closed; see deploy/knative_schemas.py")
        path = schema_file(root, api_version, kind)
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(path)


if __name__ == "__main__":
    main()
