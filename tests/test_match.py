"""`./taskw match -- TRIGGER EVENT`: exit codes and reasons people read."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from broker.match import INVALID, MATCH, NO_MATCH, main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def event_file(tmp_path):
    def write(**attributes):
        document = {"specversion": "1.0", "id": "1", "source": "/tests",
                    "type": "dev.tests.thing", **attributes, "data": {"x": 1}}
        path = tmp_path / f"event-{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(document))
        return str(path)
    return write


@pytest.fixture
def trigger_file(tmp_path):
    def write(spec: str):
        path = tmp_path / f"trigger-{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text("apiVersion: eventing.knative.dev/v1\nkind: Trigger\n"
                        "metadata: {name: t}\nspec:\n  broker: default\n" + spec)
        return str(path)
    return write


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out)
    return code, out.getvalue()


def test_given_matching_cesql_trigger_when_matched_then_exit_0_and_match(
        trigger_file, event_file):
    trigger = trigger_file("  filters:\n    - cesql: \"type LIKE 'dev.tests.%'\"\n")
    code, out = run(trigger, event_file())
    assert (code, out.split(":")[0]) == (MATCH, "match")


def test_given_other_type_when_matched_then_exit_1_with_the_reason(trigger_file, event_file):
    trigger = trigger_file("  filter:\n    attributes:\n      type: dev.tests.other\n")
    code, out = run(trigger, event_file())
    assert code == NO_MATCH
    assert out.startswith("no match: ")
    assert "dev.tests.other" in out


def test_given_cesql_parse_error_when_matched_then_exit_2(trigger_file, event_file):
    trigger = trigger_file("  filters:\n    - cesql: \"type = = 'x'\"\n")
    code, out = run(trigger, event_file())
    assert code == INVALID
    assert out.startswith("invalid: ")


def test_given_event_without_id_when_matched_then_exit_2(trigger_file, tmp_path):
    trigger = trigger_file("  filters: []\n")
    event = tmp_path / "bad.json"
    event.write_text(json.dumps({"specversion": "1.0", "source": "/s", "type": "t"}))
    code, out = run(trigger, str(event))
    assert code == INVALID
    assert "missing id" in out


def test_given_trigger_name_in_knative_when_github_comment_then_match(event_file):
    event = event_file(type="dev.knative.source.github.issue_comment",
                       source="https://github.com/Codertocat/Hello-World")
    code, out = run("parse-comment-issue-comment", event)
    assert code == MATCH, out


def test_given_unknown_trigger_name_when_matched_then_exit_2_listing_known(event_file):
    code, out = run("no-such-trigger", event_file())
    assert code == INVALID
    assert "parse-comment-issue-comment" in out


def test_given_the_taskw_entry_point_when_run_then_same_exit_code(trigger_file, event_file):
    trigger = trigger_file("  filter:\n    attributes:\n      type: dev.tests.other\n")
    done = subprocess.run([sys.executable, "-m", "broker", "match", trigger, event_file()],
                          cwd=ROOT, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == NO_MATCH, done.stderr
    assert done.stdout.startswith("no match")
