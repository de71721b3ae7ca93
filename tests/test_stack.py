"""Tier 3: the running local stack, over real connections (DESIGN §6)."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from stack import services, supervisor
from stack.layout import Layout, env_file_text, read_env_file
from stack.processes import StateFile, alive, port_open
from tests.factory import github, issue_comment

pytestmark = pytest.mark.stack

DESIGN_KEYS = ["BROKER_URL", "GITHUB_WEBHOOK_URL", "GITHUB_WEBHOOK_SECRET", "GITHUB_API_URL",
               "SIGNING_PAGE_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "ETCD_ENDPOINTS"]
FUNCTIONS = sorted(services.SCHEMAS)


def test_given_env_values_with_spaces_and_quotes_when_sourced_by_sh_then_each_is_whole(
        tmp_path):
    # A libpq DSN (what the stack writes for DATABASE_URL) has spaces: unquoted, `. .stack/env`
    # set DATABASE_URL=user=postgres and made variables of the rest.
    values = {"DATABASE_URL": "user=postgres dbname=eventworks host=127.0.0.1 port=5432",
              "EMPTY": "", "PLAIN": "http://127.0.0.1:8080/a/b", "QUOTED": "it's $HOME `x` \\"}
    env = tmp_path / "env"
    env.write_text(env_file_text(values, "test"))
    script = '. "$1"; printf "%s\\0" "$DATABASE_URL" "$EMPTY" "$PLAIN" "$QUOTED"'
    shown = subprocess.run(["sh", "-c", script, "sh", str(env)], capture_output=True,
                           check=True, env={"PATH": os.environ["PATH"]}).stdout
    assert shown.split(b"\0")[:4] == [v.encode() for v in values.values()]
    assert read_env_file(env) == values


def test_given_running_stack_when_env_read_then_every_design_key_is_there(stack_env):
    for key in DESIGN_KEYS + [services.env_key(f) for f in FUNCTIONS]:
        assert stack_env.get(key), key
    assert stack_env["FUNCTION_PARSE_COMMENT_URL"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_given_running_stack_when_function_probed_then_alive_and_ready(stack_env, function):
    url = stack_env[services.env_key(function)]
    assert httpx.get(f"{url}/health/liveness").status_code == 200
    assert httpx.get(f"{url}/health/readiness").status_code == 200


def test_given_bounty_comment_when_posted_over_http_twice_then_one_inbox_row_same_reply(
        stack_env):
    event = github("issue_comment", issue_comment("Worth $USDC:250$"))
    url = stack_env["FUNCTION_PARSE_COMMENT_URL"]
    first = httpx.post(url, content=event.body, headers=dict(event.headers))
    second = httpx.post(url, content=event.body, headers=dict(event.headers))

    assert first.status_code == second.status_code == 200
    reply = from_http_event(HTTPMessage(headers=dict(first.headers), body=first.content))
    assert reply.get_type() == "dev.eventworks.bounty.requested"
    data = reply.get_data()
    assert isinstance(data, dict)
    assert data["amount_base_units"] == "250000000"
    assert first.headers["ce-id"] == second.headers["ce-id"]
    with psycopg.connect(stack_env["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT status FROM parse_comment.inbox WHERE source = %s AND id = %s",
                            (event.attributes["source"], event.id)).fetchall()
    assert rows == [(200,)]


async def test_given_same_event_delivered_concurrently_when_answered_then_one_effect(stack_env):
    import asyncio

    event = github("issue_comment", issue_comment("Worth $ETH:1$"))
    url = stack_env["FUNCTION_PARSE_COMMENT_URL"]
    async with httpx.AsyncClient() as client:
        answers = await asyncio.gather(*[
            client.post(url, content=event.body, headers=dict(event.headers))
            for _ in range(8)])

    assert {a.status_code for a in answers} == {200}
    assert len({a.headers["ce-id"] for a in answers}) == 1
    assert len({a.content for a in answers}) == 1
    with psycopg.connect(stack_env["DATABASE_URL"]) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM parse_comment.inbox WHERE source = %s AND id = %s",
            (event.attributes["source"], event.id)).fetchone() or (0,)
    assert count == 1


def test_given_function_role_when_reading_another_schema_then_permission_denied(stack_env):
    with psycopg.connect(stack_env["DATABASE_URL_PARSE_COMMENT"]) as conn:
        conn.execute("SELECT count(*) FROM parse_comment.inbox")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM identity.inbox")


async def test_given_stack_etcd_when_put_then_get_returns_it(stack_env):
    import aetcd

    host, port = stack_env["ETCD_ENDPOINTS"].removeprefix("http://").split(":")
    key = f"/eventworks/tests/{uuid.uuid4()}".encode()
    async with aetcd.Client(host=host, port=int(port)) as client:
        await client.put(key, b"hello")
        assert (await client.get(key)).value == b"hello"
        await client.delete(key)


def test_given_stack_kafka_when_asked_for_metadata_then_a_broker_answers(stack_env):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=stack_env["KAFKA_BOOTSTRAP_SERVERS"],
                             request_timeout_ms=5000)
    try:
        assert admin.describe_cluster()["brokers"]
    finally:
        admin.close()


# -- the stack's own lifecycle, in stack directories of their own -----------------------
def _children(layout: Layout):
    _, children = StateFile(layout.state_file).read()
    return children


def _layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    monkeypatch.setenv("EVENTWORKS_STACK_DIR", str(tmp_path / "stack"))
    return Layout.from_env()


def test_given_started_stack_when_supervisor_is_killed_then_stop_leaves_nothing_behind(
        tmp_path, monkeypatch):
    layout = _layout(tmp_path, monkeypatch)
    said: list[str] = []
    assert supervisor.start(layout, said.append) == 0, said
    supervisor_entry, children = StateFile(layout.state_file).read()
    assert supervisor_entry is not None
    assert {"postgres", "kafka", "etcd", "broker", "parse-comment"} <= {c.name for c in children}
    ports = [p for c in children for p in c.ports]

    os.kill(supervisor_entry.pid, signal.SIGKILL)  # `up` crashes
    assert supervisor.stop(layout, said.append) == 0, said

    assert not any(alive(c) for c in children)
    assert not [p for p in ports if port_open(p)]
    assert not layout.env_file.exists()
    assert not layout.state_file.exists()


def test_given_service_urls_already_set_when_started_then_no_embedded_twins(
        tmp_path, monkeypatch, stack_env):
    for key in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "ETCD_ENDPOINTS"):
        monkeypatch.setenv(key, stack_env[key])
    layout = _layout(tmp_path, monkeypatch)
    said: list[str] = []
    assert supervisor.start(layout, said.append) == 0, said
    try:
        names = {c.name for c in _children(layout)}
        env = supervisor.running_env(layout)
        assert env is not None
        assert env["DATABASE_URL"] == stack_env["DATABASE_URL"]
        ready = httpx.get(f"{env['FUNCTION_PARSE_COMMENT_URL']}/health/readiness")
    finally:
        supervisor.stop(layout, said.append)
    assert not names & {"postgres", "kafka", "etcd"}
    assert "parse-comment" in names
    assert ready.status_code == 200


def test_given_component_that_cannot_start_when_started_then_it_is_named_with_its_log(
        tmp_path, monkeypatch, stack_env):
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "ETCD_ENDPOINTS"):
        monkeypatch.setenv(key, stack_env[key])
    layout = _layout(tmp_path, monkeypatch)
    pgdata = layout.state / "postgres"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("3\n")  # a data directory from no real PostgreSQL
    said: list[str] = []

    assert supervisor.start(layout, said.append) == 1
    output = "\n".join(said)
    assert "postgres exited with status" in output
    assert "last lines of" in output
    assert "postgres.log" in output
    assert supervisor.stop(layout, said.append) == 0


# -- crashed components restart, as crashed pods do ------------------------------------------
def test_given_a_crash_loop_when_it_keeps_exiting_then_restarts_back_off_and_reset_after_a_quiet_minute():  # noqa: E501
    restarts = supervisor.Restarts()
    assert restarts.exited("sign-tx", -9, now=100.0) == 0.0      # the first crash: at once
    restarts.restarted("sign-tx", now=100.0)
    assert restarts.exited("sign-tx", 1, now=101.0) == 0.5       # then 0.5, 1, 2 … 30 s
    assert restarts.exited("sign-tx", 1, now=101.2) is None      # not due yet, said already
    assert restarts.exited("sign-tx", 1, now=101.5) == 0.0
    restarts.restarted("sign-tx", now=101.5)
    assert restarts.exited("sign-tx", 1, now=102.0) == 1.0
    assert restarts.exited("sign-tx", 1, now=103.0) == 0.0
    for n in range(10):
        restarts.restarted("sign-tx", now=104.0 + n)
        restarts.exited("sign-tx", 1, now=104.0 + n)
    assert restarts.exited("sign-tx", 1, now=999.0) == 0.0       # due long ago
    restarts.restarted("sign-tx", now=1000.0)
    assert restarts.exited("sign-tx", 1, now=1000.1) == supervisor.BACKOFF_MOST
    restarts.exited("sign-tx", 1, now=1100.0)
    restarts.restarted("sign-tx", now=1100.0)
    assert restarts.exited("sign-tx", 1, now=1200.0) == 0.0      # ran a minute: at once


def test_given_a_store_when_it_exits_then_it_is_reported_once_and_not_restarted():
    restarts = supervisor.Restarts()
    assert restarts.exited("kafka", -9, now=1.0) == float("inf")
    assert restarts.exited("kafka", -9, now=2.0) is None


@pytest.mark.parametrize("name", ["parse-comment", "dispatcher"])
def test_given_a_running_component_when_sigkilled_then_the_supervisor_starts_it_again(
        stack_env, name):
    layout = Layout.from_env()
    _, children = StateFile(layout.state_file).read()
    (before,) = [c for c in children if c.name == name]
    os.killpg(before.pid, signal.SIGKILL)

    def back() -> bool:
        _, now = StateFile(layout.state_file).read()
        again = [c for c in now if c.name == name and c.pid != before.pid and alive(c)]
        return bool(again) and all(port_open(p) for p in again[0].ports)

    from tests.tansu import wait_until

    wait_until(back, f"{name} running again", timeout=60)
    if name == "parse-comment":
        url = stack_env["FUNCTION_PARSE_COMMENT_URL"]
        wait_until(lambda: httpx.get(f"{url}/health/readiness").status_code == 200,
                   "parse-comment ready again", timeout=60)
