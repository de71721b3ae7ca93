"""The benchmark harness (bench/): its pure parts (statistics, targets, the comparison
with earlier results, the chart, the options, the event streams), and one quick run
against the stack that checks the JSON has every function's figures. No timed
assertion: the figures are whatever the machine gives."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest

from bench import __main__ as cli
from bench import figures, workloads
from bench.figures import Figure, Target
from bench.fleet import Rate
from bench.measure import percentile
from eventing.events import KEY_LEASE, KEY_RELEASE
from stack import services
from stack.layout import Layout

# What the catalog signs its tokens with: the stack's user and lease-key caller secrets.
SECRETS = {"JWT_SECRET": "s" * 32, "LEASE_KEY_TOKEN_SECRET": "c" * 32}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _result(folder: Path, name: str, found: dict[str, float]) -> None:
    document = {"figures": {k: {"value": v} for k, v in found.items()}}
    (folder / f"{name}.json").write_text(json.dumps(document))


# -- statistics ---------------------------------------------------------------------------

def test_given_one_sample_when_taking_percentiles_then_each_is_that_sample():
    assert percentile([4.0], 50) == percentile([4.0], 99) == 4.0


def test_given_latencies_when_rating_then_events_per_second_and_percentiles_follow():
    rate = Rate(events=4, seconds=2.0, latencies_ms=[1.0, 2.0, 3.0, 10.0])

    assert rate.per_second == 2.0
    assert rate.p50 == 2.5
    assert 9.0 < rate.p99 <= 10.0
    assert rate.document()["latency_ms"]["max"] == 10.0


# -- targets --------------------------------------------------------------------------------

@pytest.mark.parametrize(("figure", "met"), [
    (Figure("k", "cold", 150.0, "ms", 100.0, Target("ratio_at_most", 1.5)), True),
    (Figure("k", "cold", 151.0, "ms", 100.0, Target("ratio_at_most", 1.5)), False),
    (Figure("k", "rate", 80.0, "/s", 100.0, Target("ratio_at_least", 0.8)), True),
    (Figure("k", "rate", 79.0, "/s", 100.0, Target("ratio_at_least", 0.8)), False),
    (Figure("k", "rss", 80.0, "MiB", 30.0, Target("at_most", 80.0)), True),
    (Figure("k", "rss", 81.0, "MiB", 30.0, Target("at_most", 80.0)), False),
    (Figure("k", "eps", 999.0, "/s", None, Target("at_least", 1000.0)), False),
    (Figure("k", "rate", 5.0, "/s", None, Target("ratio_at_least", 0.5)), None),
    (Figure("k", "p99", 5.0, "ms", 1.0), None),
])
def test_given_a_figure_and_its_target_when_judged_then_pass_miss_or_none(figure, met):
    assert figure.met is met
    assert figures.verdict(met) == {True: "PASS", False: "MISS", None: ""}[met]


def test_given_a_target_when_shown_then_it_reads_as_the_issue_writes_it():
    assert str(Target("ratio_at_most", 1.5)) == "<= 1.5x"
    assert str(Target("at_least", 1000)) == ">= 1000"


# -- the previous result -----------------------------------------------------------------

def test_given_earlier_results_when_looking_up_then_the_newest_earlier_one_with_it_wins(
        tmp_path):
    _result(tmp_path, "20261120T100000Z", {"a": 1.0, "b": 10.0})
    _result(tmp_path, "20261121T100000Z", {"a": 2.0})
    _result(tmp_path, "20261122T100000Z", {"a": 99.0, "b": 99.0})  # the current run
    _result(tmp_path, "20261123T100000Z", {"a": 500.0})              # later: never
    (tmp_path / "20261121T110000Z.json").write_text("not json")      # broken: skipped

    lookup = figures.previous(tmp_path, "20261122T100000Z.json")

    assert lookup("a") == (2.0, "20261121T100000Z.json")
    assert lookup("b") == (10.0, "20261120T100000Z.json")
    assert lookup("c") is None


def test_given_a_value_and_its_previous_when_compared_then_the_change_is_in_percent():
    assert figures.change(110.0, 100.0) == "+10.0%"
    assert figures.change(90.0, 100.0) == "-10.0%"
    assert figures.change(5.0, None) == "new"
    assert figures.change(5.0, 0.0) == "n/a"


def test_given_figures_when_tabled_then_each_row_has_ratio_verdict_and_change(tmp_path):
    _result(tmp_path, "20261120T100000Z", {"cold": 200.0})
    rows = [Figure("cold", "sign-tx: cold start median", 300.0, "ms", 100.0,
                   Target("ratio_at_most", 1.5)),
            Figure("rss", "sign-tx: RSS", 60.0, "MiB", 40.0, Target("at_most", 80.0))]

    text = figures.table(rows, figures.previous(tmp_path, "20261121T000000Z.json"))

    cold, rss = text.splitlines()[2:4]
    assert cold.startswith("sign-tx: cold start median")
    assert cold.split()[-5:] == ["3.00x", "<=", "1.5x", "MISS", "+50.0%"]
    assert rss.split()[-5:] == ["1.50x", "<=", "80", "PASS", "new"]


# -- the chart ------------------------------------------------------------------------------

def test_given_figures_when_charted_then_a_valid_png_is_written(tmp_path):
    rows = [Figure("a", "cold", 300.0, "ms", 100.0, Target("ratio_at_most", 1.5)),
            Figure("b", "rate", 90.0, "/s", 100.0, Target("ratio_at_least", 0.8)),
            Figure("c", "p99", 5.0, "ms"),
            Figure("d", "RSS", 60.0, "MiB", 40.0, Target("at_most", 80.0))]

    path = figures.chart(rows, tmp_path / "run.png", "test")

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100
    assert width > 100


def test_given_no_figures_when_charted_then_a_png_still_says_so(tmp_path):
    path = figures.chart([], tmp_path / "empty.png", "nothing ran")

    assert path.read_bytes()[:8] == PNG_SIGNATURE


# -- options ---------------------------------------------------------------------------------

def test_given_quick_when_parsing_then_every_count_is_small_but_explicit_ones_win():
    args = cli.arguments(["--quick", "--requests", "30"])

    assert (args.runs, args.requests, args.bounties, args.ledger_events) == (1, 30, 1, 10)


def test_given_several_parts_when_parsing_only_then_each_is_chosen_and_unknown_refused(
        capsys):
    assert cli.arguments(["--only", "functions,bounty"]).only == ["functions", "bounty"]
    with pytest.raises(SystemExit):
        cli.arguments(["--only", "functions,nope"])
    assert "choose from functions, broker, bounty" in capsys.readouterr().err


# -- the events ------------------------------------------------------------------------------

def test_given_lease_key_events_when_a_lease_is_answered_then_the_next_releases_it():
    stream = workloads.LeasePairs(lambda: "Bearer sign-tx's")

    _, first = stream.fresh()
    stream.answered(200, json.dumps({"lease_id": "7f", "address": "0xabc"}).encode())
    body, second = stream.fresh()
    assert stream.settle() is not None
    stream.answered(200, b"{}")

    assert first["ce-type"] == KEY_LEASE
    assert second["ce-type"] == KEY_RELEASE
    assert first["authorization"] == second["authorization"] == "Bearer sign-tx's"
    assert json.loads(body) == {"lease_id": "7f", "address": "0xabc"}
    assert stream.fresh()[1]["ce-type"] == KEY_LEASE
    assert stream.settle() is None


# Functions that keep one row per id of the data (a comment, a login, a request, a
# nonce, a task): a repeated id there would take their cheaper "known" path.
KEYED_BY_DATA = {"parse-comment", "parse-comment (decision path)", "link-identity",
                 "sign-tx", "verify-tx", "accrue-payment"}


def test_given_a_stream_when_asked_twice_then_each_event_is_fresh():
    for workload in workloads.catalog(SECRETS):
        stream = workload.stream()
        one, two = stream.fresh(), stream.fresh()
        assert one[1]["ce-id"] != two[1]["ce-id"], workload.name
        if workload.name in KEYED_BY_DATA:
            assert one[0] != two[0], workload.name


def test_given_the_functions_folder_when_cataloguing_then_every_function_has_a_workload():
    names = {w.function for w in workloads.catalog(SECRETS)
             if w.cold_start}

    assert names == set(services.functions(Layout.from_env()))


# -- one quick run against the stack ---------------------------------------------------------

@pytest.mark.stack
def test_given_the_stack_when_the_bench_runs_quick_then_the_json_has_every_functions_figures(
        stack_env, tmp_path):
    status = cli.main(["--quick", "--only", "functions,bounty", "--results", str(tmp_path)])

    assert status == 0
    (result,) = tmp_path.glob("*.json")
    assert result.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE
    document = json.loads(result.read_text())
    measured = document["functions"]["functions"]
    assert set(measured) == {w.name for w in workloads.catalog(stack_env)}
    for name, found in measured.items():
        for part in ("sequential", "concurrent", "bare_sequential", "bare_concurrent"):
            assert found[part]["events"] >= 20, (name, part)
        assert found["memory"]["after_start"]["rss_mib"] > 0, name
        assert "cold_start_ms" in found or name == workloads.DECISION_PATH
    for function in services.functions(Layout.from_env()):
        assert f"functions.{function}.cold_start_median_ms" in document["figures"]
        assert f"functions.{function}.rss_after_load_mib" in document["figures"]
    assert document["figures"]["functions.parse-comment (decision path)."
                               "sequential_events_per_second"]["target"] == ">= 0.8x"
    # The floor (pydantic + psycopg, nothing of ours) started in the same rounds as bare.
    floor = document["functions"]["floor"]
    assert len(floor["cold_start_ms"]["samples"]) == document["parameters"]["functions"]["runs"]
    assert floor["ratios"]["cold_start_median"] > 0
    assert document["figures"]["functions.floor.cold_start_median_ms"]["target"] == "<= 1.5x"
    assert document["bounty"]["samples"] == 1
