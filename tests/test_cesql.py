"""CESQL v1 (broker/cesql.py) against the CloudEvents TCK, plus properties the TCK implies.

The TCK lives in shared/reference/cesql-tck/ beside the checkout (CI has it there too);
every case of every file runs, with ids `<file>:<case name>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from broker.cesql import CesqlParseError, ErrorKind, Result, compile

TCK = Path(__file__).resolve().parents[2] / "shared" / "reference" / "cesql-tck"

# Any valid event will do when a case gives none (TCK README); only these four are required.
BASE_EVENT: Mapping[str, object] = {
    "specversion": "1.0",
    "id": "tck-id",
    "source": "/tck",
    "type": "io.cloudevents.tck",
}


class _TckLoader(yaml.SafeLoader):
    """YAML without implicit timestamps: the TCK's events are JSON, where `time` is text."""


_TckLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _cases() -> list[Any]:
    cases = []
    for path in sorted(TCK.glob("*.yaml")):
        text = path.read_text()
        typed = yaml.load(text, Loader=_TckLoader)  # noqa: S506 - a SafeLoader
        # Names and expressions as written: YAML would read `expression: TRUE` as a bool
        # and `expression: 0` as an int.
        verbatim = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - resolves nothing
        for case, raw in zip(typed["tests"], verbatim["tests"], strict=True):
            case = {**case, "name": raw["name"], "expression": raw["expression"]}
            cases.append(pytest.param(case, id=f"{path.stem}:{raw['name']}"))
    return cases


CASES = _cases()


def _event(case: Mapping[str, Any]) -> dict[str, object]:
    return {**(case.get("event") or BASE_EVENT), **(case.get("eventOverrides") or {})}


def test_given_the_tck_directory_when_loaded_then_it_has_every_suite() -> None:
    assert len(list(TCK.glob("*.yaml"))) == 18
    assert len(CASES) > 250


@pytest.mark.parametrize("case", CASES)
def test_given_a_tck_case_when_evaluated_then_value_and_error_are_the_expected(
    case: Mapping[str, Any],
) -> None:
    expected_error = case.get("error")
    if expected_error == ErrorKind.PARSE:
        with pytest.raises(CesqlParseError):
            compile(case["expression"])
        return
    result = compile(case["expression"]).evaluate(_event(case))
    assert set(result.errors) == ({expected_error} if expected_error else set())
    if "result" in case:
        assert type(result.value) is type(case["result"])
        assert result.value == case["result"]


# --- properties -----------------------------------------------------------------------

SAMPLE_EVENT = {**BASE_EVENT, "subject": "s", "myint": 7, "mybool": True, "myext": "v"}
CESQL_ALPHABET = st.sampled_from(
    [
        *"abcxyz019 ()',\"\\%_-+*/=<>!",
        " AND ", " OR ", " XOR ", " NOT ", " LIKE ", " IN ", " EXISTS ", "TRUE", "FALSE",
        "ABS(", "LENGTH(", "CONCAT(", "CONCAT_WS(", "SUBSTRING(", "INT(", "BOOL(", "STRING(",
        "IS_INT(", "LEFT(", "TRIM(", "missing", "myint", "subject", "2147483648",
    ]
)
PLAIN_TEXT = st.text(st.characters(blacklist_characters="%_\\'", codec="utf-8"), max_size=20)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"


def _int_literal(number: int) -> str:
    return f"({number})" if number >= 0 else f"(-{-number})"


@given(st.lists(CESQL_ALPHABET, max_size=12).map("".join))
def test_given_any_text_when_compiled_and_evaluated_then_only_a_parse_error_can_be_raised(
    text: str,
) -> None:
    try:
        expression = compile(text)
    except CesqlParseError:
        return
    result = expression.evaluate(SAMPLE_EVENT)
    assert isinstance(result, Result)
    assert isinstance(result.value, bool | int | str)
    assert all(isinstance(error, ErrorKind) for error in result.errors)


@given(PLAIN_TEXT, PLAIN_TEXT)
def test_given_a_pattern_without_wildcards_when_like_then_it_is_string_equality(
    value: str, pattern: str
) -> None:
    result = compile(f"{_quoted(value)} LIKE {_quoted(pattern)}").evaluate(BASE_EVENT)
    assert result == Result(value == pattern)


@given(PLAIN_TEXT)
def test_given_a_quoted_string_when_evaluated_then_it_is_the_text(text: str) -> None:
    assert compile(_quoted(text)).evaluate(BASE_EVENT) == Result(text)


@given(INT32, INT32)
def test_given_two_integers_when_added_then_in_range_sums_are_exact_and_others_math_errors(
    left: int, right: int
) -> None:
    result = compile(f"{_int_literal(left)} + {_int_literal(right)}").evaluate(BASE_EVENT)
    total = left + right
    expected = Result(total) if -(2**31) <= total < 2**31 else Result(0, (ErrorKind.MATH,))
    assert result == expected


@given(INT32, INT32.filter(lambda number: number != 0))
def test_given_two_integers_when_divided_then_truncated_with_the_dividends_sign(
    dividend: int, divisor: int
) -> None:
    a, b = _int_literal(dividend), _int_literal(divisor)
    quotient = compile(f"{a} / {b}").evaluate(BASE_EVENT)
    remainder = compile(f"{a} % {b}").evaluate(BASE_EVENT)
    if quotient.errors:  # only -2147483648 / -1 leaves the 32-bit range
        assert (dividend, divisor, quotient) == (-(2**31), -1, Result(0, (ErrorKind.MATH,)))
        return
    assert isinstance(quotient.value, int)
    assert isinstance(remainder.value, int)
    assert abs(quotient.value) == abs(dividend) // abs(divisor)
    assert quotient.value * divisor + remainder.value == dividend
    assert remainder.value == 0 or (remainder.value < 0) == (dividend < 0)


# --- choices the TCK leaves open ------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("TRUE OR FALSE AND FALSE", Result(False)),  # one level, left to right (spec §3.6)
        ("NOT 'a' = 'b'", Result(False, (ErrorKind.CAST,))),  # (NOT 'a') = 'b'
        ("-2147483648", Result(-(2**31))),
        ("2147483647 + 1", Result(0, (ErrorKind.MATH,))),
        ("-(-2147483648)", Result(0, (ErrorKind.MATH,))),
        ("android = 'x' OR notify = 'y'", Result(False, (ErrorKind.MISSING_ATTRIBUTE,))),
        ("1 IN (1, missing)", Result(False, (ErrorKind.MISSING_ATTRIBUTE,))),
        ("'a b' LIKE 'a_b' AND 'a\nb' LIKE 'a%'", Result(True)),
        ("TRIM('\u00a0x\u3000')", Result("x")),
        ("TRIM('\x1fx')", Result("\x1fx")),  # a control character is not whitespace
        ("IS_INT('12') AND IS_INT(TRUE) AND NOT IS_INT('1.5')", Result(True)),
        ("IS_BOOL('False') AND IS_BOOL(0) AND NOT IS_BOOL('yes')", Result(True)),
        ("IS_STRING(1)", Result(True)),
        ("INT('+7') + INT(' 7')", Result(0, (ErrorKind.CAST,))),
        ("NOPE(1)", Result(False, (ErrorKind.MISSING_FUNCTION,))),
        ("SUBSTRING('abc', 1, 2, 3)", Result(False, (ErrorKind.MISSING_FUNCTION,))),
        ("LENGTH(missing)", Result(0, (ErrorKind.MISSING_ATTRIBUTE,))),
        ("1 = TRUE", Result(False, (ErrorKind.CAST,))),  # an operator never reads 1 as true
        ("TRUE = 1", Result(True)),
    ],
)
def test_given_an_expression_the_tck_does_not_cover_when_evaluated_then_the_documented_result(
    expression: str, expected: Result
) -> None:
    assert compile(expression).evaluate(SAMPLE_EVENT) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "2147483648",
        "99999999999999999999999999",
        "1" * 5000,  # int() refuses texts this long; the parser must not pass it on
        "my_attr = 1",  # identifiers are a-z and 0-9 only
        "f1(2)",  # function names are letters and _
        "'unterminated",
        "x LIKE y",
        "NOT " * 300 + "TRUE",  # evaluation recurses, so depth is bounded
        "",
    ],
)
def test_given_not_cesql_when_compiled_then_parse_error(expression: str) -> None:
    with pytest.raises(CesqlParseError):
        compile(expression)


def test_given_the_same_text_when_compiled_twice_then_the_cached_expression_is_reused() -> None:
    assert compile("type = 'cached.one'") is compile("type = 'cached.one'")


def test_given_event_values_of_other_types_when_read_then_they_are_strings_or_integers() -> None:
    from datetime import UTC, datetime

    event = {
        **BASE_EVENT,
        "time": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        "big": 2**40,
        "count": 3,
        "digits": "9" * 5000,
    }
    assert compile("time").evaluate(event) == Result("2024-01-02T03:04:05+00:00")
    assert compile("big").evaluate(event) == Result(str(2**40))
    assert compile("digits = 1").evaluate(event) == Result(False, (ErrorKind.CAST,))
    assert compile("count + 1").evaluate(event) == Result(4)
    assert compile("EXISTS count AND NOT EXISTS nothing").evaluate(event) == Result(True)
