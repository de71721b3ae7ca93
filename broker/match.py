"""`./taskw match -- TRIGGER EVENT`: would this Trigger deliver this event, and why.

TRIGGER is a Trigger YAML file or the name of a Trigger in knative/; EVENT a
structured-mode CloudEvent JSON file. Prints `match` or `no match` with the
reason; exits 0 (match), 1 (no match) or 2 (the trigger or event is invalid).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from broker.filters import Filter, FilterError, attribute_text, compile_filter
from broker.manifests import ManifestError, load

ROOT = Path(__file__).resolve().parent.parent
KNATIVE_BASE = ROOT / "knative" / "base"
MATCH, NO_MATCH, INVALID = 0, 1, 2


class Invalid(Exception):
    pass


def _any_url(kind: str, name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.invalid/"  # matching never delivers


def trigger_filter(trigger: str, base: Path = KNATIVE_BASE) -> Filter:
    path = Path(trigger)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except (OSError, yaml.YAMLError) as exc:
            raise Invalid(f"{trigger}: {exc}") from None
        found = [d for d in documents if isinstance(d, dict) and d.get("kind") == "Trigger"]
        if len(found) != 1:
            raise Invalid(f"{trigger}: expected one Trigger, found {len(found)}")
        try:
            return compile_filter(found[0].get("spec") or {})
        except FilterError as exc:
            raise Invalid(f"{trigger}: {exc}") from None
    try:
        wiring = load(base, _any_url)
    except ManifestError as exc:
        raise Invalid(str(exc)) from None
    named = [t for t in wiring.triggers if t.name == trigger]
    if not named:
        known = ", ".join(sorted(t.name for t in wiring.triggers))
        raise Invalid(f"no Trigger named {trigger!r} in {base} (there are: {known})")
    return named[0].filter


def event_attributes(path: Path) -> Mapping[str, str]:
    try:
        document: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise Invalid(f"{path}: {exc}") from None
    if not isinstance(document, dict):
        raise Invalid(f"{path}: a structured-mode CloudEvent is a JSON object")
    missing = [a for a in ("specversion", "id", "source", "type") if a not in document]
    if missing:
        raise Invalid(f"{path}: not a CloudEvent: missing {', '.join(missing)}")
    attributes = {}
    for name, value in document.items():
        if name in ("data", "data_base64"):
            continue
        text = attribute_text(value)
        if text is None:
            raise Invalid(f"{path}: attribute {name!r} is not a CloudEvents value")
        attributes[name] = text
    return attributes


def main(argv: list[str], out: TextIO = sys.stdout) -> int:
    if len(argv) != 2:
        print("usage: ./taskw match -- TRIGGER EVENT", file=out)
        return INVALID
    try:
        verdict = trigger_filter(argv[0]).match(event_attributes(Path(argv[1])))
    except Invalid as exc:
        print(f"invalid: {exc}", file=out)
        return INVALID
    print(f"{'match' if verdict.matched else 'no match'}: {verdict.reason}", file=out)
    return MATCH if verdict.matched else NO_MATCH
