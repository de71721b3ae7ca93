"""Fuzzing, two ways over the same checks (tests/fuzz/targets.py): hypothesis properties
here, and a bounded coverage-guided atheris run of every target, as CI can afford.
Longer runs: `python -m tests.fuzz TARGET -runs=1000000` (tests/fuzz/__main__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.fuzz.seeds import SEEDS
from tests.fuzz.targets import TARGETS, answer, check_cesql, check_edge, check_raw_tx, check_siwe

ROOT = Path(__file__).resolve().parents[1]
ATHERIS_RUNS = os.environ.get("FUZZ_RUNS", "2000")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
quick = settings(max_examples=EXAMPLES, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def mutated(name: str) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and seeds with a slice replaced by arbitrary bytes."""
    seeds = SEEDS[name]()
    edits = st.tuples(st.sampled_from(seeds), st.integers(0, 2000), st.integers(0, 40),
                      st.binary(max_size=40)).map(
        lambda t: t[0][:t[1]] + t[3] + t[0][t[1] + t[2]:])
    return st.one_of(st.binary(max_size=600), edits)


@quick
@given(mutated("cesql"))
def test_given_any_bytes_when_compiled_as_cesql_then_an_expression_or_a_parse_error(data):
    check_cesql(data)


@quick
@given(mutated("siwe"))
def test_given_any_bytes_when_parsed_as_siwe_then_the_same_text_or_a_named_field(data):
    check_siwe(data)


@quick
@given(mutated("raw-tx"))
def test_given_any_bytes_when_decoded_as_a_transaction_then_decoded_or_malformed(data):
    check_raw_tx(data)


@quick
@given(mutated("edge"))
# Found by atheris: a ce-time the SDK cannot read was a 400 naming no field.
@example(bytes([0, 0, 1, 5, 3]) + b"abc" + b"{}")
# Found by atheris: a Unicode digit ("³") in content-length was int()ed into a 500.
@example(bytes([0, 2, 1, 8, 2]) + "³".encode("latin-1") * 2 + b"x")
def test_given_any_request_when_the_edge_answers_then_never_a_500_and_problems_name_the_field(
        data):
    check_edge(data)


def test_given_an_unreadable_ce_time_when_posted_then_400_names_the_header():
    status, _, content = answer("POST", [
        (b"content-type", b"application/json"), (b"ce-id", b"1"), (b"ce-source", b"/s"),
        (b"ce-type", b"dev.knative.source.github.issue_comment"), (b"ce-specversion", b"1.0"),
        (b"ce-time", b"2026-13")], b"{}")
    assert status == 400
    assert b'"field": "header ce-time"' in content


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_given_each_target_when_atheris_fuzzes_it_then_no_check_fails(target):
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", target, f"-runs={ATHERIS_RUNS}", "-seed=1",
         "-timeout=10", "-max_len=4096"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Done {ATHERIS_RUNS} runs" in run.stderr
