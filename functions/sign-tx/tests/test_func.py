"""Tier 2: sign-tx in-process through func-python's real decode/encode path, against the
local stack's PostgreSQL and etcd and a real lease-key process (conftest.py says why)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import secrets
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from eventing import ethereum, keypool
from eventing.denominations import DEFAULT_REGISTRY
from eventing.errors import Unavailable
from eventing.settings import SettingsError
from function import new
from function.func import Function
from stack.processes import free_port, spawn, tail, terminate
from tests.factory import Event, cloudevent, probed_ready, served

pytestmark = pytest.mark.stack

SIGN = "dev.eventworks.tx.sign.requested"
PAYOUT = "dev.eventworks.payout.requested"
RECIPIENT = "0x3535353535353535353535353535353535353535"
USDC = DEFAULT_REGISTRY["USDC"].contracts[1].lower()


async def seed(etcd: Any, prefix: str, kek: bytes, count: int) -> dict[str, bytes]:
    """`count` new keys in the pool: {address (lower case): private key}."""
    private_keys = [secrets.token_bytes(32) for _ in range(count)]
    stored = await keypool.store(etcd, keypool.Pool(prefix), kek, private_keys)
    assert all(added for _, added in stored)
    return {address.lower(): key for (address, _), key in zip(stored, private_keys,
                                                               strict=True)}


def sign_requested(request_id: str | None = None, *, id: str | None = None,
                   **changes: Any) -> Event:
    data = {"request_id": request_id or f"req-{uuid.uuid4()}", "chain_id": 1, "to": RECIPIENT,
            "value": "1000000000000000000", "data": "0x", "gas_limit": 21000,
            "max_fee_per_gas": "30000000000", "max_priority_fee_per_gas": "2000000000",
            **changes}
    return cloudevent(SIGN, data, id=id, source="/eventworks/batch-reader")


def payout_requested(denomination: str, amount: str, *, payout_id: str | None = None) -> Event:
    return cloudevent(PAYOUT, {
        "payout_id": payout_id or f"payout-{uuid.uuid4()}", "to_address": RECIPIENT,
        "denomination": denomination, "amount_base_units": amount, "reason": "bounty",
        "ref": "octo/repo#12"}, source="/eventworks/link-identity")


def reply_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))


@contextlib.asynccontextmanager
async def serving(function: Any, env: dict[str, str]) -> Any:
    """`served`, once the function is ready. Closing a function whose database pool is
    still opening leaves psycopg-pool tasks that never finish (eventing/database.py), so
    a test whose events are refused before any database work waits for readiness first."""
    async with served(function, env) as client:
        for _ in range(200):
            if (await client.get("/health/readiness")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"not ready: {function.ready()}")
        yield client


async def post(client: httpx.AsyncClient, event: Event) -> httpx.Response:
    return await client.post("/", content=event.body, headers=dict(event.headers))


def decoded(data: dict[str, Any]) -> ethereum.DecodedTx:
    return ethereum.decode(bytes.fromhex(data["raw_tx"].removeprefix("0x")))


async def query(stack_env: dict[str, str], sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(stack_env["DATABASE_URL_SIGNING"]) as conn:
        cur = await conn.execute(sql, args)
        return await cur.fetchall()


async def stored(stack_env: dict[str, str], request_ids: list[str]) -> list[tuple[Any, ...]]:
    return await query(
        stack_env, "SELECT request_id, sender, chain_id, nonce, raw_tx, signing_hash, "
        "fencing_token FROM signing.transactions WHERE request_id = ANY(%s)", request_ids)


async def locks(etcd: Any, prefix: str) -> list[Any]:
    return list(await etcd.get_prefix(f"{prefix}locks/".encode()))


class Recorder(logging.Handler):
    """Every log line, with every field and any traceback, as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.getMessage()} {record.__dict__!r}"
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@contextlib.contextmanager
def recorded_logs() -> Any:
    root, recorder = logging.getLogger(), Recorder()
    level = root.level
    root.addHandler(recorder)
    root.setLevel(logging.DEBUG)
    try:
        yield recorder
    finally:
        root.removeHandler(recorder)
        root.setLevel(level)


def secret_forms(private_key: bytes, kek: bytes) -> list[str]:
    return [private_key.hex(), private_key.hex().upper(), repr(private_key),
            base64.b64encode(private_key).decode(), kek.hex(), base64.b64encode(kek).decode()]


# -- tx.sign.requested ---------------------------------------------------------------------
async def test_given_sign_request_when_posted_then_tx_signed_that_decodes_and_recovers_to_from(
        env, etcd, prefix, kek, stack_env):
    (address,) = await seed(etcd, prefix, kek, 1)
    event = sign_requested(data="0xdeadbeef", chain_id=1)
    async with serving(new(), env) as client:
        reply = reply_of(await post(client, event))

    assert reply.get_type() == "dev.eventworks.tx.signed"
    assert reply.get_source() == "/eventworks/sign-tx"
    data = reply.get_data()
    request_id = json.loads(event.body)["request_id"]
    assert reply.get_subject() == request_id
    assert set(data) == {"request_id", "from", "chain_id", "nonce", "tx_hash", "raw_tx",
                         "fencing_token"}
    tx = decoded(data)
    assert ethereum.recover(tx) == data["from"] == address
    assert (tx.type, tx.chain_id, tx.nonce) == (2, 1, 0) == (2, data["chain_id"], data["nonce"])
    assert (tx.to, tx.value, tx.data, tx.gas_limit) == (RECIPIENT, 10**18, b"\xde\xad\xbe\xef",
                                                        21000)
    assert data["tx_hash"] == "0x" + tx.tx_hash.hex()
    assert data["fencing_token"] > 0
    (row,) = await stored(stack_env, [request_id])
    assert row[1:4] == (address, 1, 0)
    assert bytes(row[4]) == bytes.fromhex(data["raw_tx"][2:])
    assert bytes(row[5]) == tx.signing_hash
    assert not await locks(etcd, prefix)   # the key was released


async def test_given_requests_one_after_another_then_one_lease_signs_them_all_in_nonce_order(
        env, etcd, prefix, kek, stack_env):
    # Issue 8: a lease is reused while it is fresh (function.held), not taken per request;
    # each transaction is still fenced and counts its own nonce.
    await seed(etcd, prefix, kek, 2)
    # Long enough that no pause of a busy machine ends the lease's reuse in this test.
    patient = {**env, "LEASE_IDLE_SECONDS": "60", "LEASE_TTL_SECONDS": "600"}
    async with serving(new(), patient) as client:
        replies = [reply_of(await post(client, sign_requested())).get_data() for _ in range(5)]
        held = await locks(etcd, prefix)
    assert len({(r["from"], r["fencing_token"]) for r in replies}) == 1
    assert [r["nonce"] for r in replies] == [0, 1, 2, 3, 4]
    assert len(held) == 1                  # one key held between requests ...
    assert not await locks(etcd, prefix)   # ... and given back at stop


async def test_given_signed_request_when_redelivered_or_republished_then_same_transaction(
        env, etcd, prefix, kek, stack_env):
    await seed(etcd, prefix, kek, 2)
    event = sign_requested()
    republished = Event(headers={**event.headers, "ce-id": str(uuid.uuid4())}, body=event.body,
                        attributes={**event.attributes})
    async with serving(new(), env) as client:
        first = await post(client, event)
        again = await post(client, event)
        other = await post(client, republished)
    # The same event again: the inbox's answer, byte for byte, the reply's id included.
    assert again.content == first.content
    assert again.headers["ce-id"] == first.headers["ce-id"]
    # The same request in another event: the stored transaction, not a second one.
    assert reply_of(other).get_data() == reply_of(first).get_data()
    assert len(await stored(stack_env, [json.loads(event.body)["request_id"]])) == 1


async def test_given_same_event_id_with_other_data_when_posted_then_409_from_the_inbox(
        env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 1)
    first = sign_requested()
    other = sign_requested(id=first.id, value="2")
    async with serving(new(), env) as client:
        assert (await post(client, first)).status_code == 200
        response = await post(client, other)
    assert response.status_code == 409
    assert response.json()["field"] == "id"


async def test_given_signed_request_id_when_asked_again_with_other_data_then_409_nothing_signed(
        env, etcd, prefix, kek, stack_env):
    await seed(etcd, prefix, kek, 1)
    first = sign_requested()
    request_id = json.loads(first.body)["request_id"]
    async with serving(new(), env) as client:
        assert (await post(client, first)).status_code == 200
        response = await post(client, sign_requested(request_id, value="2"))
    assert response.status_code == 409
    assert response.json()["field"] == "data.request_id"
    rows = await stored(stack_env, [request_id])
    assert [row[3] for row in rows] == [0]


@pytest.mark.parametrize(("changes", "field"), [
    ({"max_priority_fee_per_gas": "31000000000"}, "data.max_priority_fee_per_gas"),
    ({"value": str(2**256)}, "data.value"),
    ({"chain_id": 2**63}, "data.chain_id"),
    ({"to": "0x1234"}, "data.to"),
    ({"data": "0xabc"}, "data.data"),
    ({"gas_limit": 0}, "data.gas_limit"),
])
async def test_given_request_that_can_never_be_signed_when_posted_then_400_naming_field(
        env, etcd, prefix, kek, changes, field):
    await seed(etcd, prefix, kek, 1)
    async with serving(new(), env) as client:
        response = await post(client, sign_requested(**changes))
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert not await locks(etcd, prefix)   # refused before any key was leased


# -- payout.requested ----------------------------------------------------------------------
async def test_given_eth_payout_when_posted_then_value_transfer_to_the_payee(
        env, etcd, prefix, kek, stack_env):
    (address,) = await seed(etcd, prefix, kek, 1)
    event = payout_requested("ETH", "500000000000000000")
    async with serving(new(), env) as client:
        data = reply_of(await post(client, event)).get_data()
    tx = decoded(data)
    assert data["request_id"] == json.loads(event.body)["payout_id"]
    assert ethereum.recover(tx) == data["from"] == address
    assert (tx.chain_id, tx.to, tx.value, tx.data, tx.gas_limit) == (
        1, RECIPIENT, 5 * 10**17, b"", 21000)


async def test_given_usdc_payout_when_posted_then_erc20_transfer_call_to_the_usdc_contract(
        env, etcd, prefix, kek):
    (address,) = await seed(etcd, prefix, kek, 1)
    async with serving(new(), env) as client:
        data = reply_of(await post(client, payout_requested("usdc", "100000000"))).get_data()
    tx = decoded(data)
    assert ethereum.recover(tx) == address
    assert (tx.to, tx.value, tx.gas_limit) == (USDC, 0, 100_000)
    # transfer(address,uint256): selector, the payee and the amount in 32 bytes each.
    assert tx.data[:4] == ethereum.keccak(b"transfer(address,uint256)")[:4] == bytes.fromhex(
        "a9059cbb")
    assert tx.data[4:36] == bytes(12) + bytes.fromhex(RECIPIENT[2:])
    assert int.from_bytes(tx.data[36:68], "big") == 100_000_000
    assert len(tx.data) == 68


@pytest.mark.parametrize(("denomination", "chain_id", "says"), [
    ("DOGE", "1", "not a known denomination"),
    ("USDC", "5", "no token contract on chain 5"),
])
async def test_given_payout_that_cannot_be_made_when_posted_then_400_naming_denomination(
        env, etcd, prefix, kek, denomination, chain_id, says):
    await seed(etcd, prefix, kek, 1)
    async with serving(new(), {**env, "SIGNING_CHAIN_ID": chain_id}) as client:
        response = await post(client, payout_requested(denomination, "1"))
    assert response.status_code == 400
    assert response.json()["field"] == "data.denomination"
    assert says in response.json()["detail"]


# -- when a key cannot be had ----------------------------------------------------------------
async def test_given_empty_pool_when_posted_then_503_nothing_kept_and_signed_once_keys_exist(
        env, etcd, prefix, kek, stack_env):
    event = sign_requested()
    async with serving(new(), env) as client:
        refused = await post(client, event)
        await seed(etcd, prefix, kek, 1)
        retried = await post(client, event)   # the broker's retry of the same event
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "empty" in refused.json()["detail"]
    assert reply_of(retried).get_data()["nonce"] == 0


async def test_given_lease_key_down_when_posted_then_503(env, etcd, prefix, kek, unused_port):
    await seed(etcd, prefix, kek, 1)
    down = {**env, "LEASE_KEY_URL": f"http://127.0.0.1:{unused_port}"}
    async with serving(new(), down) as client:
        response = await post(client, sign_requested())
    assert response.status_code == 503
    assert "lease-key" in response.json()["detail"]


async def test_given_a_caller_secret_lease_key_does_not_share_when_posted_then_nothing_signed(
        env, etcd, prefix, kek, stack_env):
    # lease-key answers sign-tx's caller tokens only: one under another secret is refused
    # (401), so no key is leased and nothing is signed; the broker retries the 500.
    await seed(etcd, prefix, kek, 1)
    other = {**env, "LEASE_KEY_TOKEN_SECRET": "not-the-shared-secret-" + "x" * 32}
    event = sign_requested()
    async with serving(new(), other) as client:
        response = await post(client, event)
    assert response.status_code == 500
    assert not await locks(etcd, prefix)
    async with await psycopg.AsyncConnection.connect(stack_env["DATABASE_URL_SIGNING"]) as conn:
        cur = await conn.execute("SELECT count(*) FROM transactions WHERE request_id = %s",
                                 (json.loads(event.body)["request_id"],))
        assert await cur.fetchone() == (0,)


# -- the private key stays in sign-tx's memory ------------------------------------------------
async def test_given_signing_and_failing_then_no_private_key_or_kek_in_logs_replies_or_reprs(
        env, etcd, prefix, kek, stack_env):
    # Two keys: `function` keeps its lease for the requests after (function.held) until it
    # is closed, so `misconfigured` leases the other.
    pool = await seed(etcd, prefix, kek, 2)
    function, misconfigured = new(), new()
    wrong_kek = {**env, "KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}
    # Both started first: a start configures logging afresh, which would drop the recorder.
    async with serving(function, env) as client, serving(misconfigured, wrong_kek) as wrong:
        with recorded_logs() as logs:
            signed = await post(client, sign_requested())
            answers = [signed, await post(client, sign_requested(value=str(2**256)))]
            undecryptable = await post(wrong, sign_requested())
        shown = [repr(function), repr(function.settings), str(function.settings),
                 repr(function.settings.model_dump()), function.settings.model_dump_json()]
    assert signed.status_code == 200
    assert answers[1].status_code == 400
    assert undecryptable.status_code == 500   # a key that does not open: a bug or a bad Secret
    assert not await locks(etcd, prefix)      # ... and the lease was released all the same
    assert any("sealed under another key-encryption key" in line for line in logs.lines)
    assert any("transaction signed" in line for line in logs.lines)
    text = "\n".join([*logs.lines, *shown, *(a.text + repr(dict(a.headers))
                                             for a in [*answers, undecryptable])])
    assert not [form for private_key in pool.values()
                for form in secret_forms(private_key, kek) if form in text]
    for address, private_key in pool.items():
        assert repr(keypool.SigningKey(address, private_key)) == \
            f"SigningKey(address='{address}')"


# -- four workers, forty requests, each delivered twice, three keys ---------------------------
async def deliver(clients: list[httpx.AsyncClient], event: Event) -> httpx.Response:
    """As the broker delivers: to any replica, again after a retryable status."""
    for _ in range(400):
        response = await post(random.choice(clients), event)
        if response.status_code not in (409, 429, 503):
            return response
        await asyncio.sleep(random.uniform(0.02, 0.1))
    raise AssertionError(f"never answered: {response.status_code} {response.text}")


async def test_given_4_workers_40_requests_twice_3_keys_then_each_signed_once_no_nonce_gap(
        env, etcd, prefix, kek, stack_env):
    pool = await seed(etcd, prefix, kek, 3)
    run = uuid.uuid4().hex[:8]
    firsts = [sign_requested(f"{run}-{n}", value=str(n)) for n in range(40)]
    # Each request twice: the same event redelivered (even n), or published again as a
    # new event (odd n: the batch reader publishes at least once).
    seconds = [event if n % 2 == 0 else Event(
        headers={**event.headers, "ce-id": str(uuid.uuid4())}, body=event.body,
        attributes=event.attributes) for n, event in enumerate(firsts)]
    deliveries = [*enumerate(firsts), *enumerate(seconds)]
    random.shuffle(deliveries)

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(
            serving(new(), {**env, "SIGNING_WORKER_ID": f"worker-{w}"})) for w in range(4)]
        responses = await asyncio.gather(*(deliver(clients, e) for _, e in deliveries))

    answers: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (n, _), response in zip(deliveries, responses, strict=True):
        answers[n].append(reply_of(response).get_data())
    assert sorted(answers) == list(range(40))
    for n, (first, second) in answers.items():
        assert first == second, n              # both deliveries: the one transaction
        tx = decoded(first)
        assert ethereum.recover(tx) == first["from"]
        assert (tx.nonce, tx.value, first["request_id"]) == (first["nonce"], n, f"{run}-{n}")

    rows = await stored(stack_env, [f"{run}-{n}" for n in range(40)])
    assert len(rows) == 40                     # every request signed exactly once
    assert len({(sender, chain, nonce) for _, sender, chain, nonce, *_ in rows}) == 40
    nonces: dict[str, list[int]] = defaultdict(list)
    for _, sender, _, nonce, *_ in rows:
        nonces[sender].append(nonce)
    assert set(nonces) == set(pool)            # least recently used first: all three signed
    for sender, used in nonces.items():        # contiguous from 0: no gap, no repeat
        assert sorted(used) == list(range(len(used))), sender
    counters = await query(stack_env, "SELECT sender, next_nonce FROM signing.nonces "
                           "WHERE sender = ANY(%s)", list(pool))
    assert dict(counters) == {sender: len(used) for sender, used in nonces.items()}
    assert not await locks(etcd, prefix)


# -- a worker whose lease ran out writes late -------------------------------------------------
class Stalling(Function):
    """A worker that stalls between its lease and its write (a long GC pause, a slow etcd,
    a stopped VM) until the test lets it go on."""

    def __init__(self) -> None:
        super().__init__()
        self.leased: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.go_on = asyncio.Event()

    async def signing_key(self, leased: Any) -> keypool.SigningKey:
        self.leased.set_result(leased)
        await self.go_on.wait()
        return await super().signing_key(leased)


async def test_given_lease_ran_out_and_key_leased_again_when_late_write_then_refused(
        env, etcd, prefix, kek, stack_env):
    ((address, private_key),) = (await seed(etcd, prefix, kek, 1)).items()
    stalled = Stalling()
    late, meanwhile = sign_requested(), sign_requested()
    late_id, meanwhile_id = (json.loads(e.body)["request_id"] for e in (late, meanwhile))
    async with (serving(stalled, {**env, "SIGNING_WORKER_ID": "stalled-worker",
                                 "LEASE_TTL_SECONDS": "1"}) as a,
                serving(new(), {**env, "SIGNING_WORKER_ID": "worker-b"}) as b):
        a_answer = asyncio.create_task(post(a, late))
        first_lease = await asyncio.wait_for(stalled.leased, 10)
        # The one key is locked until the stalled worker's lease runs out (etcd's minimum
        # TTL is 2 s); then worker B gets it, with a higher fencing token, and signs.
        b_answer = await deliver([b], meanwhile)
        stalled.go_on.set()
        with recorded_logs() as logs:
            refused = await a_answer
        kept = await stored(stack_env, [late_id, meanwhile_id])
        counter = await query(stack_env, "SELECT next_nonce FROM signing.nonces "
                              "WHERE sender = %s", address)
        retried = await deliver([b], late)     # the broker retries the refused request

    signed_b = reply_of(b_answer).get_data()
    assert signed_b["from"] == address
    assert signed_b["nonce"] == 0
    assert signed_b["fencing_token"] > first_lease.fencing_token
    assert refused.status_code == 409
    assert "fencing token" in refused.json()["detail"]
    # Nothing of the late write was stored, no nonce taken; the retry signs the next one.
    assert [row[0] for row in kept] == [meanwhile_id]
    assert counter == [(1,)]
    again = reply_of(retried).get_data()
    assert again["nonce"] == 1
    # Under worker B's lease, still held and fresh (function.held), or a later one.
    assert again["fencing_token"] >= signed_b["fencing_token"]
    # lease-key remembers which worker held the key when its lease ran out, on which request.
    record = await etcd.get(
        f"{prefix}failures/{address}/{first_lease.fencing_token:020d}".encode())
    failure = json.loads(record.value)
    assert (failure["worker_id"], failure["request_id"]) == ("stalled-worker", late_id)
    assert failure["address"].lower() == address
    text = refused.text + "\n".join(logs.lines)
    assert not [form for form in secret_forms(private_key, kek) if form in text]


# -- a stopped instance gives its keys back ---------------------------------------------------
# Knative scales sign-tx to zero or replaces its pod with SIGTERM; a key left leased stays
# locked until its lease's TTL ends and a new instance meanwhile gets 503 "no free key".
SIGN_TX = Path(__file__).resolve().parents[1]
# Long enough that only a release, never the idle reaper or an expiry, frees a key here.
HOLDING = {"LEASE_IDLE_SECONDS": "60", "LEASE_TTL_SECONDS": "600"}


@contextlib.contextmanager
def sign_tx_process(env: dict[str, str], log: Path) -> Iterator[tuple[Any, str]]:
    """sign-tx served as the stack serves it (func-python serving `stack.scaffold`)."""
    port = free_port()
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"),
            "LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(SIGN_TX), str(SIGN_TX.parents[1])]), **env}
    process, running = spawn("sign-tx-for-sign-tx-tests", [sys.executable, "-m",
                                                            "stack.scaffold"],
                             env=full, log=log, cwd=SIGN_TX, ports=(port,))
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        terminate([running])


async def until_ready(url: str, log: Path) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/health/readiness")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError(f"sign-tx did not become ready:\n{tail(log)}")


async def test_given_served_sign_tx_holding_a_lease_when_sigterm_then_key_free_once_it_exited(
        env, etcd, prefix, kek, tmp_path):
    await seed(etcd, prefix, kek, 1)
    log = tmp_path / "sign-tx.log"
    with sign_tx_process({**env, **HOLDING}, log) as (process, url):
        await until_ready(url, log)
        async with httpx.AsyncClient(base_url=url, timeout=15) as client:
            reply_of(await post(client, sign_requested()))
        held = await locks(etcd, prefix)
        sigterm = time.perf_counter()
        os.killpg(process.pid, signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
        exited_after = time.perf_counter() - sigterm
    assert len(held) == 1                            # held across requests ...
    assert code == 0, tail(log)
    assert not await locks(etcd, prefix), "the key stayed leased after sign-tx exited"
    assert exited_after < 5, f"{exited_after:.2f} s from SIGTERM to exit"


async def test_given_a_held_lease_when_stop_is_called_then_released_before_stop_returns(
        env, etcd, prefix, kek):
    # func-python calls stop() synchronously from the lifespan shutdown, and the process
    # may exit right after it: what stop leaves to a task may never happen.
    await seed(etcd, prefix, kek, 2)
    function = new()
    async with serving(function, {**env, **HOLDING}) as client:
        reply_of(await post(client, sign_requested()))
        held, leases = await locks(etcd, prefix), function.leases
        function.stop()
        left = await locks(etcd, prefix)
        # A request still in flight after stop leases no key that nothing would give back.
        with pytest.raises(Unavailable, match="stopping"):
            async with leases.checkout("req-after-stop", None):
                pass
    assert len(held) == 1
    assert not left
    assert not await locks(etcd, prefix)


# What a release that cannot reach lease-key may hold stop up by (function.held), and the
# slack of a loaded 2-core machine.
STOP_BOUND_SECONDS = 2.0
SLACK_SECONDS = 1.5


async def test_given_lease_key_hung_when_stop_is_called_then_stop_returns_within_its_bound(
        env, etcd, prefix, kek, own_lease_key):
    # A lease-key that takes connections and never answers (SIGSTOP): the release cannot
    # arrive, so stop gives up after its bound and the lease's TTL frees the key.
    await seed(etcd, prefix, kek, 1)
    url, lease_key = own_lease_key
    function = new()
    async with serving(function, {**env, **HOLDING, "LEASE_KEY_URL": url}) as client:
        reply_of(await post(client, sign_requested()))
        os.kill(lease_key.pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            function.stop()
            took = time.perf_counter() - started
        finally:
            os.kill(lease_key.pid, signal.SIGCONT)
    assert STOP_BOUND_SECONDS * 0.9 <= took < STOP_BOUND_SECONDS + SLACK_SECONDS, took


# -- settings and readiness ------------------------------------------------------------------
@pytest.mark.parametrize(("drop", "change", "named"), [
    ("KEY_ENCRYPTION_KEY", {}, "KEY_ENCRYPTION_KEY"),
    ("LEASE_KEY_URL", {}, "LEASE_KEY_URL"),
    ("LEASE_KEY_TOKEN_SECRET", {}, "LEASE_KEY_TOKEN_SECRET"),
    (None, {"LEASE_KEY_TOKEN_SECRET": "too-short"}, "LEASE_KEY_TOKEN_SECRET"),
    ("ETCD_ENDPOINTS", {}, "ETCD_ENDPOINTS"),
    (None, {"KEY_ENCRYPTION_KEY": base64.b64encode(b"sixteen byte key").decode()},
     "KEY_ENCRYPTION_KEY"),
    (None, {"SIGNING_CHAIN_ID": "-7"}, "SIGNING_CHAIN_ID"),
])
async def test_given_bad_settings_when_started_then_start_fails_naming_it_not_its_value(
        env, drop, change, named):
    settings = {k: v for k, v in env.items() if k != drop} | change
    function = new()
    with pytest.raises(SettingsError, match=named) as refused:
        function.start(settings)
    assert not function.ready()[0]
    assert not [v for v in change.values() if v in str(refused.value)]


async def test_given_started_when_probed_then_ready_once_database_and_etcd_answer(env):
    async with served(new(), env) as client:
        assert (await probed_ready(client)).status_code == 200
