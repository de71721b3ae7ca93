"""Knative Trigger filters: compile a Trigger's spec once, then match events against it.

`compile_filter(spec)` validates the Trigger's `spec.filter` and `spec.filters` and
raises `FilterError` naming the offending field path (`spec.filters[1].exact`). The
`Filter` it returns answers `match(attributes)` with a `Match`: whether the event passes
and a human-readable reason, which `./taskw match` prints.

Semantics follow knative/eventing (`pkg/broker/filter/filter_handler.go`,
`pkg/eventfilter/attributes`, `pkg/eventfilter/subscriptionsapi`, and the Trigger
webhook `pkg/apis/eventing/v1/trigger_validation.go`):

- Precedence: a non-empty `spec.filters` is used and `spec.filter` ignored; otherwise
  `spec.filter` is used; with neither, every event passes. So `filters: []` next to a
  `filter` leaves the legacy filter in force, exactly as `filterEvent` does.
- `spec.filters` is a list ANDed together. Each entry has exactly one dialect:
  `exact`/`prefix`/`suffix` map exactly one attribute to a non-empty string; `all` and
  `any` hold filters; `not` holds one filter; `cesql` holds an expression. An attribute
  missing from the event never matches. A CESQL expression passes only when it evaluates
  to true without errors (CESQL §1.2).
- Attribute names must start with a lowercase letter and hold only lowercase letters and
  digits (the webhook's `validAttributeName`).

Two deliberate differences, both about inputs Knative would not act on silently:
- An entry Knative's webhook lets through but its dispatcher skips (an empty mapping, an
  empty `all`/`any`, an empty `exact`/`cesql` value) is a `FilterError` here, since a
  skipped entry would pass events the author meant to filter.
- Attribute values are compared as their CloudEvents text (`true`, `42`, RFC 3339): events
  reach the dispatcher from Kafka headers, where every attribute is text anyway.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from broker import cesql

__all__ = ["Filter", "FilterError", "Match", "compile_filter"]

Event = Mapping[str, object]

# Knative's TriggerAnyFilter: in `filter.attributes`, the value "" matches any value, but
# (pkg/eventfilter/attributes, since 1.x) only a non-empty one: the attribute must exist
# and not be "", because an unset optional attribute reads as "" there.
ANY_VALUE = ""
ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9]*")


class FilterError(ValueError):
    """A Trigger's filter is malformed; the message starts with the field path."""


@dataclass(frozen=True)
class Match:
    matched: bool
    reason: str


class Filter(Protocol):
    def match(self, event: Event) -> Match: ...


def attribute_text(value: object) -> str | None:
    """An attribute's value as CloudEvents text; None when the event lacks it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


# --- the filters ------------------------------------------------------------------


@dataclass(frozen=True)
class Everything:
    reason: str

    def match(self, event: Event) -> Match:
        return Match(True, self.reason)


@dataclass(frozen=True)
class Attributes:
    """The legacy `filter.attributes`: every listed attribute must equal its value."""

    path: str
    attributes: tuple[tuple[str, str], ...]

    def match(self, event: Event) -> Match:
        seen = []
        for name, wanted in self.attributes:
            actual = attribute_text(event.get(name))
            if actual is None:
                return Match(False, f"{self.path}: {name} is missing")
            if wanted == ANY_VALUE and actual == "":
                return Match(False, f"{self.path}: {name} is empty; '' matches any non-empty value")
            if wanted not in (ANY_VALUE, actual):
                return Match(False, f"{self.path}: {name} is {actual!r}, not {wanted!r}")
            seen.append(f"{name} is {actual!r}" + (" (any value)" if wanted == ANY_VALUE else ""))
        return Match(True, f"{self.path}: " + (", ".join(seen) or "no attributes listed"))


@dataclass(frozen=True)
class Comparison:
    """How `exact`, `prefix` and `suffix` test a value, and how they say so."""

    test: Callable[[str, str], bool]
    passed: str
    failed: str


COMPARISONS: dict[str, Comparison] = {
    "exact": Comparison(
        operator.eq, "{name} is {actual!r}", "{name} is {actual!r}, not {wanted!r}"
    ),
    "prefix": Comparison(
        str.startswith,
        "{name} {actual!r} starts with {wanted!r}",
        "{name} is {actual!r}, which does not start with {wanted!r}",
    ),
    "suffix": Comparison(
        str.endswith,
        "{name} {actual!r} ends with {wanted!r}",
        "{name} is {actual!r}, which does not end with {wanted!r}",
    ),
}


@dataclass(frozen=True)
class AttributeFilter:
    path: str
    comparison: Comparison
    name: str
    wanted: str

    def match(self, event: Event) -> Match:
        actual = attribute_text(event.get(self.name))
        if actual is None:
            return Match(False, f"{self.path}: {self.name} is missing")
        matched = self.comparison.test(actual, self.wanted)
        template = self.comparison.passed if matched else self.comparison.failed
        said = template.format(name=self.name, actual=actual, wanted=self.wanted)
        return Match(matched, f"{self.path}: {said}")


@dataclass(frozen=True)
class AllOf:
    path: str
    filters: tuple[Filter, ...]

    def match(self, event: Event) -> Match:
        for each in self.filters:
            result = each.match(event)
            if not result.matched:
                return result
        return Match(True, f"{self.path}: all {len(self.filters)} filters match")


@dataclass(frozen=True)
class AnyOf:
    path: str
    filters: tuple[Filter, ...]

    def match(self, event: Event) -> Match:
        failures = []
        for each in self.filters:
            result = each.match(event)
            if result.matched:
                return result
            failures.append(result.reason)
        failed = "; ".join(failures)
        return Match(False, f"{self.path}: none of {len(self.filters)} filters match ({failed})")


@dataclass(frozen=True)
class Not:
    path: str
    filter: Filter

    def match(self, event: Event) -> Match:
        inner = self.filter.match(event)
        verdict = "does not match" if inner.matched else "matches"
        return Match(not inner.matched, f"{self.path}: {verdict}, as {inner.reason}")


@dataclass(frozen=True)
class Cesql:
    path: str
    expression: cesql.Expression

    def match(self, event: Event) -> Match:
        result = self.expression.evaluate(event)
        said = f"{self.path}: {self.expression.text!r} evaluated"
        if result.errors:
            return Match(False, f"{said} with error {', '.join(result.errors)}")
        if not isinstance(result.value, bool):
            return Match(False, f"{said} to {result.value!r}, not a boolean")
        return Match(result.value, f"{said} to {str(result.value).lower()}")


# --- compiling a Trigger's spec -----------------------------------------------------


def _kind(raw: object) -> str:
    return type(raw).__name__


def _mapping(raw: object, path: str, what: str) -> Mapping[object, object]:
    if not isinstance(raw, Mapping):
        raise FilterError(f"{path}: {what} is a mapping, not a {_kind(raw)}")
    return raw


def _list(raw: object, path: str) -> Sequence[object]:
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise FilterError(f"{path}: a list of filters is needed, not a {_kind(raw)}")
    return raw


def _attribute_name(name: object, path: str) -> str:
    if not isinstance(name, str) or not ATTRIBUTE_NAME.fullmatch(name):
        raise FilterError(
            f"{path}: attribute name {name!r} must start with a lowercase letter and hold "
            "only lowercase letters and digits"
        )
    return name


def _string_value(name: str, value: object, path: str) -> str:
    if not isinstance(value, str):
        raise FilterError(f"{path}: the value of {name} must be a string, not a {_kind(value)}")
    return value


def _comparison(dialect: str) -> Callable[[object, str], Filter]:
    def build(raw: object, path: str) -> Filter:
        attributes = _mapping(raw, path, dialect)
        if len(attributes) != 1:
            raise FilterError(f"{path}: needs exactly one attribute, found {len(attributes)}")
        [(name, value)] = attributes.items()
        name = _attribute_name(name, path)
        wanted = _string_value(name, value, path)
        if not wanted:
            raise FilterError(f"{path}: the value of {name} must not be empty")
        return AttributeFilter(path, COMPARISONS[dialect], name, wanted)

    return build


def _filters(raw: object, path: str) -> tuple[Filter, ...]:
    return tuple(_filter(item, f"{path}[{index}]") for index, item in enumerate(_list(raw, path)))


def _all(raw: object, path: str) -> Filter:
    filters = _filters(raw, path)
    if not filters:
        raise FilterError(f"{path}: needs at least one filter")
    return AllOf(path, filters)


def _any(raw: object, path: str) -> Filter:
    filters = _filters(raw, path)
    if not filters:
        raise FilterError(f"{path}: needs at least one filter")
    return AnyOf(path, filters)


def _not(raw: object, path: str) -> Filter:
    return Not(path, _filter(raw, path))


def _cesql(raw: object, path: str) -> Filter:
    if not isinstance(raw, str) or not raw.strip():
        raise FilterError(f"{path}: a CESQL expression is a non-empty string")
    try:
        return Cesql(path, cesql.compile(raw))
    except cesql.CesqlParseError as error:
        raise FilterError(f"{path}: invalid CESQL: {error}") from None


DIALECTS: dict[str, Callable[[object, str], Filter]] = {
    "exact": _comparison("exact"),
    "prefix": _comparison("prefix"),
    "suffix": _comparison("suffix"),
    "all": _all,
    "any": _any,
    "not": _not,
    "cesql": _cesql,
}


def _filter(raw: object, path: str) -> Filter:
    entry = _mapping(raw, path, "a filter")
    for key in entry:
        if key not in DIALECTS:
            raise FilterError(f"{path}.{key}: unknown dialect; one of {', '.join(DIALECTS)}")
    if len(entry) != 1:
        found = ", ".join(map(str, entry)) or "none"
        raise FilterError(f"{path}: a filter has exactly one dialect, found {found}")
    [(dialect, value)] = entry.items()
    return DIALECTS[str(dialect)](value, f"{path}.{dialect}")


def _legacy(raw: object, path: str) -> Filter:
    fields = _mapping(raw, path, "filter")
    for key in fields:
        if key != "attributes":
            raise FilterError(f"{path}.{key}: unknown field; a filter has only attributes")
    raw_attributes = fields.get("attributes")
    attributes_path = f"{path}.attributes"
    attributes = {} if raw_attributes is None else _mapping(
        raw_attributes, attributes_path, "attributes"
    )
    pairs = []
    for name, value in attributes.items():
        checked = _attribute_name(name, attributes_path)
        pairs.append((checked, _string_value(checked, value, attributes_path)))
    return Attributes(attributes_path, tuple(pairs))


def compile_filter(trigger_spec: Mapping[str, object]) -> Filter:
    """The filter of a Trigger, from its `spec`; `FilterError` if it is malformed.

    Both `filter` and `filters` are validated, as Knative's webhook does, even though
    only one of them decides.
    """
    spec = _mapping(trigger_spec, "spec", "a Trigger spec")
    legacy = None if spec.get("filter") is None else _legacy(spec["filter"], "spec.filter")
    raw_filters = spec.get("filters")
    filters = () if raw_filters is None else _filters(raw_filters, "spec.filters")
    if filters:
        return filters[0] if len(filters) == 1 else AllOf("spec.filters", filters)
    if legacy is not None:
        return legacy
    return Everything("no filter: every event matches")
