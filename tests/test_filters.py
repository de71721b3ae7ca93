"""Knative Trigger filters (broker/filters.py): every form, nesting, precedence, errors."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from broker.filters import FilterError, Match, compile_filter

EVENT: Mapping[str, object] = {
    "specversion": "1.0",
    "id": "delivery-1",
    "source": "https://github.com/octo/repo",
    "type": "dev.knative.source.github.issue_comment",
    "subject": "42",
    "myext": "custom",
    "mybool": True,
}
ISSUE_COMMENT = "dev.knative.source.github.issue_comment"


def _match(spec: Mapping[str, object], event: Mapping[str, object] = EVENT) -> Match:
    return compile_filter(spec).match(event)


# --- legacy spec.filter.attributes --------------------------------------------------


def test_given_legacy_attributes_that_all_equal_when_matched_then_it_passes() -> None:
    result = _match({"filter": {"attributes": {"type": ISSUE_COMMENT, "subject": "42"}}})
    said = f"type is {ISSUE_COMMENT!r}, subject is '42'"
    assert result == Match(True, f"spec.filter.attributes: {said}")


def test_given_legacy_attributes_with_one_different_when_matched_then_the_reason_names_it() -> None:
    result = _match({"filter": {"attributes": {"type": "dev.x"}}})
    assert result == Match(False, f"spec.filter.attributes: type is {ISSUE_COMMENT!r}, not 'dev.x'")


def test_given_legacy_attribute_missing_from_the_event_when_matched_then_it_fails() -> None:
    assert _match({"filter": {"attributes": {"time": ""}}}) == Match(
        False, "spec.filter.attributes: time is missing"
    )


@pytest.mark.parametrize(
    ("value", "matched"),
    [("anything", True), ("", False)],
)
def test_given_the_legacy_any_value_when_matched_then_only_a_non_empty_value_passes(
    value: str, matched: bool
) -> None:
    result = _match({"filter": {"attributes": {"myext": ""}}}, {**EVENT, "myext": value})
    assert result.matched is matched


def test_given_a_legacy_boolean_extension_when_matched_then_its_text_is_compared() -> None:
    assert _match({"filter": {"attributes": {"mybool": "true"}}}).matched


@pytest.mark.parametrize(
    "spec", [{}, {"filter": None}, {"filter": {}}, {"filter": {"attributes": {}}}]
)
def test_given_no_filter_when_matched_then_every_event_passes(spec: Mapping[str, object]) -> None:
    assert _match(spec).matched


# --- spec.filters dialects ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "value", "matched", "reason"),
    [
        ("exact", ISSUE_COMMENT, True, f"type is {ISSUE_COMMENT!r}"),
        ("exact", "dev.knative", False, f"type is {ISSUE_COMMENT!r}, not 'dev.knative'"),
        ("prefix", "dev.knative.", True, f"type {ISSUE_COMMENT!r} starts with 'dev.knative.'"),
        (
            "prefix",
            "com.",
            False,
            f"type is {ISSUE_COMMENT!r}, which does not start with 'com.'",
        ),
        ("suffix", ".issue_comment", True, f"type {ISSUE_COMMENT!r} ends with '.issue_comment'"),
        ("suffix", ".push", False, f"type is {ISSUE_COMMENT!r}, which does not end with '.push'"),
    ],
)
def test_given_an_attribute_dialect_when_matched_then_it_compares_the_type(
    dialect: str, value: str, matched: bool, reason: str
) -> None:
    result = _match({"filters": [{dialect: {"type": value}}]})
    assert result == Match(matched, f"spec.filters[0].{dialect}: {reason}")


@pytest.mark.parametrize("dialect", ["exact", "prefix", "suffix"])
def test_given_an_attribute_the_event_lacks_when_matched_then_it_does_not_match(
    dialect: str,
) -> None:
    assert _match({"filters": [{dialect: {"dataschema": "x"}}]}) == Match(
        False, f"spec.filters[0].{dialect}: dataschema is missing"
    )


@pytest.mark.parametrize(
    ("expression", "matched", "reason"),
    [
        ("subject = '42'", True, "evaluated to true"),
        ("subject = 42 AND myext LIKE 'cust%'", True, "evaluated to true"),
        ("subject = '7'", False, "evaluated to false"),
        ("LENGTH(subject)", False, "evaluated to 2, not a boolean"),
        ("nothere = 'x'", False, "evaluated with error missingAttribute"),
        ("NOT nothere", False, "evaluated with error missingAttribute"),
        ("INT(myext) = 0", False, "evaluated with error cast"),
        ("1 / 0 = 0", False, "evaluated with error math"),
    ],
)
def test_given_a_cesql_filter_when_matched_then_only_true_without_errors_passes(
    expression: str, matched: bool, reason: str
) -> None:
    result = _match({"filters": [{"cesql": expression}]})
    assert result == Match(matched, f"spec.filters[0].cesql: {expression!r} {reason}")


def test_given_several_filters_when_one_fails_then_they_are_anded_and_it_is_named() -> None:
    spec = {"filters": [{"prefix": {"source": "https://github.com/"}}, {"exact": {"id": "x"}}]}
    assert _match(spec) == Match(False, "spec.filters[1].exact: id is 'delivery-1', not 'x'")
    spec = {"filters": [{"prefix": {"source": "https://"}}, {"exact": {"subject": "42"}}]}
    assert _match(spec) == Match(True, "spec.filters: all 2 filters match")


def test_given_all_any_and_not_nested_when_matched_then_they_combine() -> None:
    spec = {
        "filters": [
            {
                "all": [
                    {"any": [{"exact": {"subject": "1"}}, {"suffix": {"type": "_comment"}}]},
                    {"not": {"cesql": "myext = 'other'"}},
                    {"not": {"not": {"prefix": {"source": "https://"}}}},
                ]
            }
        ]
    }
    assert _match(spec) == Match(True, "spec.filters[0].all: all 3 filters match")
    assert not _match(spec, {**EVENT, "myext": "other"}).matched
    assert not _match(spec, {**EVENT, "type": "dev.x.push"}).matched


def test_given_any_with_no_match_when_matched_then_the_reason_lists_every_failure() -> None:
    spec = {"filters": [{"any": [{"exact": {"subject": "1"}}, {"cesql": "nothere"}]}]}
    assert _match(spec) == Match(
        False,
        "spec.filters[0].any: none of 2 filters match ("
        "spec.filters[0].any[0].exact: subject is '42', not '1'; "
        "spec.filters[0].any[1].cesql: 'nothere' evaluated with error missingAttribute)",
    )


def test_given_not_when_matched_then_it_inverts_and_explains() -> None:
    result = _match({"filters": [{"not": {"exact": {"subject": "42"}}}]})
    assert result == Match(
        False, "spec.filters[0].not: does not match, as spec.filters[0].not.exact: subject is '42'"
    )
    assert _match({"filters": [{"not": {"exact": {"subject": "1"}}}]}).matched


def test_given_a_not_over_a_cesql_error_when_matched_then_it_passes_as_knative_does() -> None:
    # The error makes the inner filter fail; NOT turns a failure into a pass.
    assert _match({"filters": [{"not": {"cesql": "nothere = 'x'"}}]}).matched


# --- precedence -------------------------------------------------------------------------


def test_given_filters_and_filter_when_matched_then_filters_decide() -> None:
    spec = {
        "filter": {"attributes": {"type": "dev.never"}},
        "filters": [{"exact": {"subject": "42"}}],
    }
    assert _match(spec) == Match(True, "spec.filters[0].exact: subject is '42'")


def test_given_empty_filters_and_a_filter_when_matched_then_the_legacy_filter_decides() -> None:
    spec = {"filter": {"attributes": {"type": "dev.never"}}, "filters": []}
    assert not _match(spec).matched


def test_given_empty_filters_alone_when_matched_then_every_event_passes() -> None:
    assert _match({"filters": []}) == Match(True, "no filter: every event matches")


def test_given_filters_in_force_when_the_unused_filter_is_malformed_then_it_is_an_error() -> None:
    with pytest.raises(FilterError, match=r"^spec\.filter\.attributes: attribute name 'Type'"):
        compile_filter({"filter": {"attributes": {"Type": "x"}}, "filters": [{"cesql": "TRUE"}]})


# --- malformed filters ------------------------------------------------------------------


MALFORMED: list[tuple[Mapping[str, object], str]] = [
    (
        {"filters": [{"exact": {"type": "a"}}, {"exact": {"type": "a", "id": "b"}}]},
        "spec.filters[1].exact: needs exactly one attribute, found 2",
    ),
    ({"filters": [{"prefix": {}}]}, "spec.filters[0].prefix: needs exactly one attribute, found 0"),
    (
        {"filters": [{"suffix": {"type": ""}}]},
        "spec.filters[0].suffix: the value of type must not be empty",
    ),
    (
        {"filters": [{"exact": {"type": 5}}]},
        "spec.filters[0].exact: the value of type must be a string, not a int",
    ),
    ({"filters": [{"exact": {"my_ext": "x"}}]}, "spec.filters[0].exact: attribute name 'my_ext'"),
    (
        {"filters": [{"exact": ["type", "a"]}]},
        "spec.filters[0].exact: exact is a mapping, not a list",
    ),
    (
        {"filters": [{"exact": {"type": "a"}, "cesql": "TRUE"}]},
        "spec.filters[0]: a filter has exactly one dialect, found exact, cesql",
    ),
    ({"filters": [{}]}, "spec.filters[0]: a filter has exactly one dialect, found none"),
    ({"filters": [{"sql": "TRUE"}]}, "spec.filters[0].sql: unknown dialect"),
    ({"filters": ["type = 'a'"]}, "spec.filters[0]: a filter is a mapping, not a str"),
    (
        {"filters": {"exact": {"type": "a"}}},
        "spec.filters: a list of filters is needed, not a dict",
    ),
    ({"filters": [{"all": []}]}, "spec.filters[0].all: needs at least one filter"),
    ({"filters": [{"any": "x"}]}, "spec.filters[0].any: a list of filters is needed, not a str"),
    (
        {"filters": [{"any": [{"exact": {"type": "a"}}, {"nope": 1}]}]},
        "spec.filters[0].any[1].nope: unknown dialect",
    ),
    (
        {"filters": [{"not": {"all": [{"cesql": "a ="}]}}]},
        "spec.filters[0].not.all[0].cesql: invalid CESQL: unexpected end of expression",
    ),
    (
        {"filters": [{"cesql": "x LIKE 123"}]},
        "spec.filters[0].cesql: invalid CESQL: unexpected '123'",
    ),
    (
        {"filters": [{"cesql": " "}]},
        "spec.filters[0].cesql: a CESQL expression is a non-empty string",
    ),
    ({"filter": {"attribute": {"type": "a"}}}, "spec.filter.attribute: unknown field"),
    (
        {"filter": {"attributes": ["type"]}},
        "spec.filter.attributes: attributes is a mapping, not a list",
    ),
    (
        {"filter": {"attributes": {"type": None}}},
        "spec.filter.attributes: the value of type must be a string",
    ),
    ({"filter": "type=a"}, "spec.filter: filter is a mapping, not a str"),
]


@pytest.mark.parametrize(("spec", "message"), MALFORMED)
def test_given_a_malformed_filter_when_compiled_then_the_error_names_the_field_path(
    spec: Mapping[str, object], message: str
) -> None:
    with pytest.raises(FilterError, match="^" + re.escape(message)):
        compile_filter(spec)
