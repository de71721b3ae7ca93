"""The batch reader and the seed job (batch/) against the stack's PostgreSQL.

Each test gets a schema of its own, owned by the role `batch` and shaped like
`batch.tx_requests` (LIKE … INCLUDING ALL: the checks and the pending index), so that
the stack's own batch reader — pinged every minute — never takes the rows a test
seeds. The broker is a scripted test subscriber (tests/subscriber.py), except where
the real one is the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from batch import reader, requests
from batch.server import BatchReaderApp, ServerSettings
from eventing.events import TX_SIGN_REQUESTED, TxSignRequested
from tests.conftest import subscriber
from tests.subscriber import Answer
from tests.tansu import records

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "knative-broker-eventworks-default"


@pytest.fixture
def schema(stack_env) -> Iterator[str]:
    name = f"batch_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(stack_env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(sql.SQL(
            "CREATE SCHEMA {s} AUTHORIZATION batch; "
            "CREATE TABLE {s}.tx_requests (LIKE batch.tx_requests INCLUDING ALL); "
            "ALTER TABLE {s}.tx_requests OWNER TO batch").format(s=sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(stack_env["DATABASE_URL"], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def batch_url(stack_env) -> str:
    return str(stack_env["DATABASE_URL_BATCH"])


def seeded(batch_url: str, schema: str, count: int) -> list[str]:
    return requests.seed(batch_url, count, schema=schema)


def pending(stack_env, schema: str) -> set[str]:
    with psycopg.connect(stack_env["DATABASE_URL"]) as conn:
        rows = conn.execute(sql.SQL("SELECT request_id FROM {}.tx_requests "
                                    "WHERE published_at IS NULL").format(
            sql.Identifier(schema))).fetchall()
    return {r[0] for r in rows}


# -- the seed job ----------------------------------------------------------------------------

def test_given_count_when_seeded_then_that_many_valid_pending_requests_in_creation_order(
        stack_env, batch_url, schema):
    ids = seeded(batch_url, schema, 25)

    with psycopg.connect(stack_env["DATABASE_URL"]) as conn:
        rows = conn.execute(sql.SQL("SELECT {cols} FROM {s}.tx_requests ORDER BY created_at")
                            .format(cols=sql.SQL(", ").join(map(sql.Identifier,
                                                                requests.COLUMNS)),
                                    s=sql.Identifier(schema))).fetchall()
    assert [r[0] for r in rows] == ids
    assert pending(stack_env, schema) == set(ids)
    for row in rows:
        data = requests.TxRequest.of(row).event_data()
        assert data.chain_id == 1
        assert data.gas_limit == 21_000
        assert 0 < int(data.value) <= requests.SEED_MAX_VALUE
    assert len({r[2] for r in rows}) == 25  # random recipients


def test_given_the_cli_when_seeding_then_it_prints_how_many(stack_env, schema):
    # The CLI seeds batch.tx_requests itself: check the count it adds there.
    def count() -> int:
        with psycopg.connect(stack_env["DATABASE_URL"]) as conn:
            row = conn.execute("SELECT count(*) FROM batch.tx_requests").fetchone()
        assert row is not None
        return int(row[0])

    before = count()
    done = subprocess.run([sys.executable, "-m", "batch", "seed", "3"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                               "DATABASE_URL_BATCH": stack_env["DATABASE_URL_BATCH"]})

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "seeded 3 transaction requests"
    assert count() >= before + 3  # the stack's own reader may publish them, never delete


def test_given_the_batch_role_when_reading_another_schema_then_permission_denied(batch_url):
    with psycopg.connect(batch_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT * FROM signing.inbox")


def test_given_a_row_that_makes_no_valid_event_when_inserted_then_the_table_refuses_it(
        batch_url, schema):
    with psycopg.connect(batch_url) as conn:
        conn.execute(requests.session_setup(schema))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO tx_requests (request_id, chain_id, \"to\", value, "
                         "gas_limit, max_fee_per_gas, max_priority_fee_per_gas) "
                         "VALUES ('x', 1, '0x1234', 1, 21000, 1, 1)")


# -- one pass --------------------------------------------------------------------------------

def test_given_pending_requests_when_a_pass_runs_then_each_is_a_sign_requested_event(
        stack_env, batch_url, schema, subscribers):
    ids = seeded(batch_url, schema, 5)
    broker = subscriber(subscribers)

    done = reader.run_once(batch_url, broker.url, schema=schema)

    assert (done.selected, done.published, done.failed) == (5, 5, 0)
    assert sorted(broker.ids()) == sorted(ids)
    first = broker.of(ids[0])[0]
    assert first.headers["ce-type"] == TX_SIGN_REQUESTED
    assert first.headers["ce-source"] == "/eventworks/batch-reader"
    assert first.headers["ce-specversion"] == "1.0"
    assert first.headers["content-type"] == "application/json"
    data = TxSignRequested.model_validate(json.loads(first.body))
    assert data.request_id == ids[0]
    assert pending(stack_env, schema) == set()


def test_given_more_than_a_batch_when_a_pass_runs_then_the_oldest_batch_only(
        stack_env, batch_url, schema, subscribers):
    ids = seeded(batch_url, schema, 7)
    broker = subscriber(subscribers)

    done = reader.run_once(batch_url, broker.url, schema=schema, batch_size=3)

    assert (done.selected, done.published) == (3, 3)
    assert sorted(broker.ids()) == sorted(ids[:3])
    assert pending(stack_env, schema) == set(ids[3:])


def test_given_broker_refuses_some_when_a_pass_runs_then_only_the_202s_are_marked(
        stack_env, batch_url, schema, subscribers):
    ids = seeded(batch_url, schema, 6)
    refused = {ids[1]: 503, ids[3]: 400, ids[4]: 200}  # only 202 counts as accepted
    broker = subscriber(subscribers, lambda r, seen: Answer(refused.get(r.id, 202)))

    done = reader.run_once(batch_url, broker.url, schema=schema)

    assert (done.selected, done.published, done.failed) == (6, 3, 3)
    assert pending(stack_env, schema) == set(refused)


def test_given_broker_unreachable_when_drained_then_nothing_is_marked_and_it_stalls(
        stack_env, batch_url, schema, unused_port):
    ids = seeded(batch_url, schema, 4)

    drained = reader.drain(batch_url, f"http://127.0.0.1:{unused_port}/eventworks/default",
                           schema=schema)

    assert (drained.ended, drained.selected, drained.published) == ("stalled", 4, 0)
    assert not drained.complete
    assert pending(stack_env, schema) == set(ids)


def test_given_broker_flaky_when_drained_then_every_request_is_published_and_marked(
        stack_env, batch_url, schema, subscribers):
    ids = seeded(batch_url, schema, 30)
    # A third of the requests are refused the first time they come: as long as each pass
    # makes progress, the drain goes on, and later passes take the refused ones again.
    flaky = set(ids[::3])
    broker = subscriber(subscribers, lambda r, seen: Answer(
        503 if r.id in flaky and seen == 1 else 202))

    drained = reader.drain(batch_url, broker.url, schema=schema, batch_size=10)

    assert drained.complete
    assert drained.failed == len(flaky)
    assert pending(stack_env, schema) == set()
    assert set(broker.ids()) == set(ids)
    assert all(len(broker.of(i)) == (2 if i in flaky else 1) for i in ids)


def test_given_two_readers_at_once_when_drained_then_they_take_disjoint_batches(
        stack_env, batch_url, schema, subscribers):
    ids = seeded(batch_url, schema, 60)
    # A slow broker keeps each pass's rows locked long enough for the other reader to
    # meet them: SKIP LOCKED must make it take other rows, not wait or take the same.
    broker = subscriber(subscribers, lambda r, seen: Answer(delay=0.01))
    results: list[reader.Drained] = []

    def run() -> None:
        results.append(reader.drain(batch_url, broker.url, schema=schema, batch_size=5,
                                    concurrency=2))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert sorted(broker.ids()) == sorted(ids)  # each published exactly once
    assert all(d.complete for d in results)
    assert sum(d.published for d in results) == 60
    assert all(d.published > 0 for d in results)  # both took part
    assert pending(stack_env, schema) == set()


def test_given_the_real_broker_when_drained_then_the_events_are_in_the_topic(
        stack_env, batch_url, schema):
    ids = seeded(batch_url, schema, 3)

    drained = reader.drain(batch_url, stack_env["BROKER_URL"], schema=schema)

    assert drained.complete
    assert drained.published == 3
    found = records(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC,
                    lambda r: r.headers.get("ce_id", b"").decode() in ids)
    assert sorted(r.headers["ce_id"].decode() for r in found) == sorted(ids)
    assert {r.headers["ce_type"] for r in found} == {TX_SIGN_REQUESTED.encode()}


# -- the PingSource sink ---------------------------------------------------------------------

def ping(event_type: str = "dev.knative.sources.ping") -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-type": event_type,
            "ce-source": "/apis/v1/namespaces/eventworks/pingsources/batch-reader"}


async def served(app: BatchReaderApp, method: str, path: str,
                 headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://batch") as client:
        return await client.request(method, path, headers=headers, content=b"")


def app_for(batch_url: str, broker_url: str, schema: str) -> BatchReaderApp:
    return BatchReaderApp(ServerSettings.from_env({
        "DATABASE_URL": batch_url, "BROKER_URL": broker_url, "BATCH_SCHEMA": schema,
        "BATCH_SIZE": "4"}))


async def test_given_a_ping_when_posted_then_every_pending_request_is_published_and_202(
        stack_env, batch_url, schema, subscribers):
    ids = seeded(batch_url, schema, 10)
    broker = subscriber(subscribers)
    app = app_for(batch_url, broker.url, schema)
    await app.start()
    try:
        ready = await served(app, "GET", "/health/readiness")
        answer = await served(app, "POST", "/", ping())
    finally:
        await app.stop()

    assert ready.status_code == 200
    assert answer.status_code == 202
    assert sorted(broker.ids()) == sorted(ids)
    assert pending(stack_env, schema) == set()


async def test_given_broker_down_when_pinged_then_503_and_requests_stay_pending(
        stack_env, batch_url, schema, unused_port):
    ids = seeded(batch_url, schema, 2)
    app = app_for(batch_url, f"http://127.0.0.1:{unused_port}/eventworks/default", schema)
    await app.start()
    try:
        answer = await served(app, "POST", "/", ping())
    finally:
        await app.stop()

    assert answer.status_code == 503
    assert answer.headers["retry-after"]
    assert answer.headers["content-type"] == "application/problem+json"
    assert pending(stack_env, schema) == set(ids)


@pytest.mark.parametrize(("headers", "status", "field"), [
    pytest.param(ping("dev.eventworks.tx.sign.requested"), 400, "type", id="not a ping"),
    pytest.param({"content-type": "text/plain"}, 400, "content-type", id="not a CloudEvent"),
])
async def test_given_not_a_ping_when_posted_then_400_naming_the_field(
        batch_url, schema, subscribers, headers, status, field):
    app = app_for(batch_url, subscriber(subscribers).url, schema)
    await app.start()
    try:
        answer = await served(app, "POST", "/", headers)
    finally:
        await app.stop()

    assert answer.status_code == status
    assert answer.json()["field"] == field


def test_given_the_stack_when_probed_then_the_batch_reader_is_ready(stack_env):
    url = stack_env["FUNCTION_BATCH_READER_URL"]
    assert httpx.get(f"{url}/health/liveness").status_code == 200
    assert httpx.get(f"{url}/health/readiness").status_code == 200


def test_given_the_stack_when_pinged_then_the_batch_reader_answers_202(stack_env):
    answer = httpx.post(stack_env["FUNCTION_BATCH_READER_URL"], headers=ping(), timeout=30)
    assert answer.status_code == 202
