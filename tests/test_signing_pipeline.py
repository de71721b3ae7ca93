"""End to end through the local stack: `./taskw seed:txs -- 100` → all 100 signed and
verified (issue 5, "Done when").

Seeded rows in `batch.tx_requests` → the batch reader (here as a job; the stack's
PingSource may get to some first, which is the same thing) → `tx.sign.requested` in the
broker topic → Trigger `sign-tx-requests` → sign-tx (a leased key of the dev pool, a
nonce from PostgreSQL) → its `tx.signed` reply → Trigger `verify-tx-signed` → verify-tx
→ `tx.verified`. The verdicts are read back from the broker topic.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from batch import reader, requests
from stack import services
from stack.layout import Layout
from tests.tansu import wait_until
from tests.topic import Pipeline, Watch

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "knative-broker-eventworks-default"
COUNT = 100
TIMEOUT = 180.0  # seconds for all of them; a request waiting for a key backs off (knative/)


def pending(stack_env, ids: list[str]) -> int:
    with psycopg.connect(stack_env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM batch.tx_requests "
                           "WHERE request_id = ANY(%s) AND published_at IS NULL",
                           (ids,)).fetchone()
    assert row is not None
    return int(row[0])


def test_given_100_seeded_requests_when_the_batch_reader_runs_then_all_are_signed_and_verified(
        stack_env):
    watch = Watch(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC)  # from now on
    try:
        ids = requests.seed(stack_env["DATABASE_URL_BATCH"], COUNT)
        drained = reader.drain(stack_env["DATABASE_URL_BATCH"], stack_env["BROKER_URL"])
        assert drained.complete, drained

        # Published: by this job, or by a PingSource tick that locked some of them first
        # (SKIP LOCKED: the job passes those by and the tick commits them).
        wait_until(lambda: pending(stack_env, ids) == 0, "every request published",
                   timeout=30)

        pipeline = Pipeline.of(ids)
        deadline = time.monotonic() + TIMEOUT
        while not pipeline.done and time.monotonic() < deadline:
            pipeline.add(watch.poll(200))
    finally:
        watch.close()

    assert pipeline.rejected == {}
    assert pipeline.done, (f"{pipeline.decided} of {COUNT} verified within {TIMEOUT:.0f} s; "
                           f"{len(pipeline.signed)} signed")
    assert pipeline.signed.keys() == set(ids)

    # A request redelivered is answered from sign-tx's inbox: one transaction per request.
    for request_id, replies in pipeline.signed.items():
        assert len({r["tx_hash"] for r in replies}) == 1, request_id
    signed = [replies[0] for replies in pipeline.signed.values()]
    # Never one (key, chain, nonce) for two requests; every one signed for chain id 1.
    slots = Counter((s["from"].lower(), s["chain_id"], s["nonce"]) for s in signed)
    assert max(slots.values()) == 1
    assert {s["chain_id"] for s in signed} == {requests.SEED_CHAIN_ID}
    # verify-tx recovered the signer sign-tx named, for the transaction it signed.
    by_request = {s["request_id"]: s for s in signed}
    for request_id, verdicts in pipeline.verified.items():
        for verdict in verdicts:
            assert verdict["tx_hash"] == by_request[request_id]["tx_hash"]
            assert verdict["from"].lower() == by_request[request_id]["from"].lower()


def test_given_the_stack_wiring_when_built_then_only_sign_tx_gets_the_key_encryption_key(
        tmp_path):
    env = {"SIGNING_PAGE_URL": "http://127.0.0.1:1/", "GITHUB_API_URL": "http://127.0.0.1:2",
           "ETCD_ENDPOINTS": "http://127.0.0.1:3", "BROKER_URL": "http://127.0.0.1:4/e/d",
           "DATABASE_URL": "postgresql://postgres@127.0.0.1:5/eventworks",
           "FUNCTION_LEASE_KEY_URL": "http://127.0.0.1:6",
           "LEASE_KEY_TOKEN_SECRET": "the-caller-secret"}
    layout = Layout(root=ROOT, state=tmp_path)

    built = {name: services.function(layout, name, 7000, env, embedded_db=True,
                                     key_encryption_key="a-kek").env
             for name in services.functions(layout)}
    reader_env = services.batch_reader(layout, 7001, env, embedded_db=True).env

    assert built["sign-tx"]["KEY_ENCRYPTION_KEY"] == "a-kek"
    assert built["sign-tx"]["LEASE_KEY_URL"] == "http://127.0.0.1:6"
    assert built["sign-tx"]["SIGNING_CHAIN_ID"] == "1"
    assert built["sign-tx"]["ETCD_ENDPOINTS"] == "http://127.0.0.1:3"
    assert built["lease-key"]["ETCD_ENDPOINTS"] == "http://127.0.0.1:3"
    assert [n for n, e in built.items() if "KEY_ENCRYPTION_KEY" in e] == ["sign-tx"]
    # The caller tokens' secret: lease-key answers sign-tx only (issue 7).
    assert sorted(n for n, e in built.items() if "LEASE_KEY_TOKEN_SECRET" in e) == [
        "lease-key", "sign-tx"]
    assert "LEASE_KEY_TOKEN_SECRET" not in reader_env
    assert "KEY_ENCRYPTION_KEY" not in reader_env
    assert reader_env["BROKER_URL"] == env["BROKER_URL"]
    assert "user=batch" in reader_env["DATABASE_URL"]
