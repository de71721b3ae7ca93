"""Fuzzing, two ways over the same checks (tests/fuzz/targets.py): hypothesis properties
here, and a bounded coverage-guided atheris run of every target, as CI can afford.
Longer runs: `python -m tests.fuzz TARGET -runs=1000000` (tests/fuzz/__main__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventing.denominations import DEFAULT_REGISTRY
from eventing.settings import ONE_MIB
from tests.fuzz.command import ARTIFACTS, libfuzzer_args
from tests.fuzz.seeds import SEEDS, regressions
from tests.fuzz.targets import (
    MAXIMUM,
    TARGETS,
    answer,
    check_cesql,
    check_comment,
    check_edge,
    check_jws,
    check_raw_tx,
    check_siwe,
    grammar,
)

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
@given(mutated("jws"))
def test_given_any_bytes_when_decoded_as_an_hs256_token_then_refused_or_as_pyjwt_reads_it(data):
    check_jws(data)


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


@quick
@given(st.one_of(mutated("comment"), st.text(alphabet="$\\:#/ \t\n0123456789.,-+eEuUsSdDcClosfixh",
                                              max_size=200).map(str.encode)))
def test_given_any_text_when_read_as_a_comment_then_values_or_reasons_that_read_back_the_same(
        data):
    check_comment(data)


def test_given_long_adversarial_comments_when_read_then_the_grammar_does_not_backtrack():
    # A bound on a hang, as atheris's -timeout: these take about a second; before the
    # grammar's blanks and amounts were possessive, the first took hours (cubic) and the
    # fourth minutes (quadratic) at this size.
    run = subprocess.run(
        [sys.executable, "-c", "from tests.fuzz.seeds import adversarial\n"
         "from tests.fuzz.targets import check_comment\n"
         f"for text in adversarial({ONE_MIB // 4}):\n    check_comment(text)\n"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_given_blanks_inside_the_dollars_when_read_then_the_amount_is_trimmed_as_before():
    (candidate,) = grammar.find_candidates("pay \\$usdc : \t 100.5 \t\\$ now")
    assert (candidate.denomination, candidate.amount) == ("USDC", "100.5")
    amount = grammar.read_amount(candidate, DEFAULT_REGISTRY, MAXIMUM)
    assert amount == grammar.Amount("USDC", Decimal("100.5"), 100_500_000, 6)


def test_given_blanks_and_colons_after_a_keyword_when_read_then_the_same_references():
    text = "closes:   #3, fixes \t o/r#4, resolved :#5, fix  : https://github.com/a/b/issues/6"
    assert grammar.closing_references(text) == (
        grammar.Reference(None, 3), grammar.Reference("o/r", 4), grammar.Reference("a/b", 6))


@pytest.mark.parametrize(("target", "path"),
                         [(t, p) for t in sorted(TARGETS) for p in regressions(t)],
                         ids=lambda v: getattr(v, "name", v))
def test_given_an_input_a_fuzzer_failed_on_when_replayed_then_its_check_holds(target, path):
    TARGETS[target](path.read_bytes())


def test_given_the_two_crash_files_once_at_the_root_then_they_are_edge_regressions():
    assert {p.name for p in regressions("edge")} >= {"unicode-digit-content-length",
                                                      "unreadable-ce-time-names-no-field"}


def test_given_no_artifact_prefix_when_a_run_is_set_up_then_failures_go_to_the_ignored_folder(
        tmp_path):
    args = libfuzzer_args("comment", ["-runs=5", "corpus"], tmp_path)
    assert args == ["-runs=5", f"-artifact_prefix={ARTIFACTS / 'comment'}/", "corpus",
                    str(tmp_path)]
    assert libfuzzer_args("edge", ["-artifact_prefix=/x/"], tmp_path) == [
        "-artifact_prefix=/x/", str(tmp_path)]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(ARTIFACTS / "comment" / "crash-1")],
                             cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".fuzz/ must be in .gitignore"


def test_given_the_repository_then_no_fuzzer_artifact_is_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    prefixes = ("crash-", "leak-", "timeout-", "oom-", "slow-unit-")
    assert [f for f in tracked if Path(f).name.startswith(prefixes)] == []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_given_each_target_when_atheris_fuzzes_it_then_no_check_fails(target):
    run = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", target, f"-runs={ATHERIS_RUNS}", "-seed=1",
         "-timeout=10", "-max_len=4096"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Done {ATHERIS_RUNS} runs" in run.stderr
