"""Tier 2: lease-key driven in-process through func-python's real decode/encode path,
against the local stack's real etcd, each case under an etcd prefix of its own."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from eventing import callers
from eventing.settings import SettingsError
from function import new
from stack import keys
from tests.factory import Event, post_to, probed_ready, served
from tests.factory import cloudevent as anonymous

pytestmark = pytest.mark.stack

LEASE = "dev.eventworks.key.lease"
RENEW = "dev.eventworks.key.renew"
RELEASE = "dev.eventworks.key.release"
# The secret sign-tx and lease-key share (LEASE_KEY_TOKEN_SECRET); tests sign with it.
CALLER_SECRET = "lease-key-tests-" + "k" * 32


def called_by(event, caller="sign-tx", *, secret=CALLER_SECRET, audience="lease-key",
              ttl=60, now=None):
    """The event as `caller` sends it: with a caller token (sign-tx's, by default)."""
    token = callers.caller_token(secret, caller, audience, ttl_seconds=ttl, now=now)
    return with_authorization(event, f"Bearer {token}")



def cloudevent(event_type, data, **kw):
    """An event as sign-tx sends it (with its caller token): what lease-key answers."""
    return called_by(anonymous(event_type, data, **kw))


def with_authorization(event, authorization):
    return dataclasses.replace(event, headers={**event.headers,
                                               "authorization": authorization})


@pytest.fixture
def prefix():
    return f"/eventworks/test/{uuid.uuid4().hex}/keys/"


@pytest.fixture
def env(stack_env, prefix):
    return {"ETCD_ENDPOINTS": stack_env["ETCD_ENDPOINTS"], "ETCD_PREFIX": prefix,
            "LEASE_KEY_TOKEN_SECRET": CALLER_SECRET}


@pytest.fixture
async def etcd(stack_env, prefix):
    client = keys.client_for(stack_env["ETCD_ENDPOINTS"])
    try:
        yield client
    finally:
        await client.delete_prefix(prefix.encode())
        await client.close()


@pytest.fixture
def kek():
    return secrets.token_bytes(32)


async def seed(etcd, prefix, kek, count):
    """`count` fresh keys in the pool: {address: private key}."""
    private_keys = [keys.generate_private_key() for _ in range(count)]
    stored = await keys.store(etcd, keys.Pool(prefix), kek, private_keys)
    assert all(added for _, added in stored)
    return {address: key for (address, _), key in zip(stored, private_keys, strict=True)}


def lease(worker="worker-1", ttl=30, request_id=None, **kw):
    data = {"worker_id": worker, "ttl_seconds": ttl}
    if request_id is not None:
        data["request_id"] = request_id
    return cloudevent(LEASE, data, source="/eventworks/sign-tx", **kw)


def reply_of(response):
    assert response.status_code == 200, response.text
    return from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))


async def post(client, event: Event):
    return await client.post("/", content=event.body, headers=dict(event.headers))


async def test_given_pool_of_one_when_leased_then_leased_with_lock_revision_as_fencing_token(
        env, etcd, prefix, kek):
    (address,) = await seed(etcd, prefix, kek, 1)
    before = datetime.now(UTC)
    response = await post_to(new(), lease(ttl=30, request_id="req-1"), env=env)

    reply = reply_of(response)
    assert reply.get_type() == "dev.eventworks.key.leased"
    assert reply.get_source() == "/eventworks/lease-key"
    assert reply.get_subject() == address
    data = reply.get_data()
    assert data["address"] == address
    lock = await etcd.get(f"{prefix}locks/{address.lower()}".encode())
    assert data["fencing_token"] == lock.create_revision
    assert int(data["lease_id"], 16) == lock.lease
    assert data["ttl_seconds"] == 30
    expires = datetime.fromisoformat(data["expires_at"])
    assert before + timedelta(seconds=29) <= expires <= datetime.now(UTC) + timedelta(seconds=30)
    holder = json.loads((await etcd.get(f"{prefix}holders/{address.lower()}".encode())).value)
    assert (holder["worker_id"], holder["request_id"]) == ("worker-1", "req-1")


async def test_given_one_key_when_two_workers_lease_at_once_then_one_wins_other_503(
        env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 1)
    async with served(new(), env) as client:
        first, second = await asyncio.gather(post(client, lease(worker="w1")),
                                             post(client, lease(worker="w2")))
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 503]
    refused = first if first.status_code == 503 else second
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["type"] == "urn:eventworks:problem:unavailable"
    assert "leased" in refused.json()["detail"]


async def test_given_as_many_workers_as_keys_when_all_lease_at_once_then_each_gets_one(
        env, etcd, prefix, kek):
    pool = await seed(etcd, prefix, kek, 8)
    async with served(new(), env) as client:
        answers = await asyncio.gather(*(post(client, lease(worker=f"w{i}")) for i in range(8)))
    data = [reply_of(a).get_data() for a in answers]
    assert {d["address"] for d in data} == set(pool)
    assert len({d["fencing_token"] for d in data}) == 8


async def test_given_two_keys_when_leased_twice_then_least_recently_used_first(
        env, etcd, prefix, kek):
    pool = await seed(etcd, prefix, kek, 2)
    async with served(new(), env) as client:
        first = reply_of(await post(client, lease(worker="w1"))).get_data()
        second = reply_of(await post(client, lease(worker="w2"))).get_data()
        await post(client, cloudevent(RELEASE, {"lease_id": first["lease_id"],
                                                "address": first["address"]}))
        await post(client, cloudevent(RELEASE, {"lease_id": second["lease_id"],
                                                "address": second["address"]}))
        third = reply_of(await post(client, lease(worker="w3"))).get_data()
    assert {first["address"], second["address"]} == set(pool)
    assert first["address"] == next(iter(pool))   # never used: the first one stored first
    assert third["address"] == first["address"]             # used longest ago
    assert first["fencing_token"] < second["fencing_token"] < third["fencing_token"]


async def test_given_leased_key_when_renewed_then_same_lease_and_token_later_expiry(
        env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 1)
    async with served(new(), env) as client:
        leased = reply_of(await post(client, lease(ttl=5))).get_data()
        await asyncio.sleep(1.2)
        renewed = reply_of(await post(client, cloudevent(
            RENEW, {"lease_id": leased["lease_id"]}))).get_data()
    assert renewed["address"] == leased["address"]
    assert renewed["lease_id"] == leased["lease_id"]
    assert renewed["fencing_token"] == leased["fencing_token"]
    assert renewed["ttl_seconds"] == 5
    assert datetime.fromisoformat(renewed["expires_at"]) > datetime.fromisoformat(
        leased["expires_at"])
    info = await etcd.get_lease_info(int(leased["lease_id"], 16))
    assert info.TTL >= 4


async def test_given_released_key_when_leased_again_then_same_key_higher_fencing_token(
        env, etcd, prefix, kek):
    (address,) = await seed(etcd, prefix, kek, 1)
    async with served(new(), env) as client:
        first = reply_of(await post(client, lease(worker="w1"))).get_data()
        released = reply_of(await post(client, cloudevent(
            RELEASE, {"lease_id": first["lease_id"], "address": address})))
        second = reply_of(await post(client, lease(worker="w2"))).get_data()
    assert released.get_type() == "dev.eventworks.key.released"
    assert released.get_data() == {"address": address, "lease_id": first["lease_id"]}
    assert second["address"] == first["address"] == address
    assert second["fencing_token"] > first["fencing_token"]
    assert second["lease_id"] != first["lease_id"]
    # A release leaves nothing behind: no failure, no lease of the first worker.
    assert not await etcd.get_prefix(f"{prefix}failures/".encode())
    assert (await etcd.get_lease_info(int(first["lease_id"], 16))).TTL == -1


async def test_given_lease_not_renewed_when_it_expires_then_key_free_again_and_failure_recorded(
        env, etcd, prefix, kek):
    (address,) = await seed(etcd, prefix, kek, 1)
    async with served(new(), env) as client:
        dead = reply_of(await post(client, lease(worker="doomed", ttl=1,
                                                 request_id="tx-42"))).get_data()
        assert dead["ttl_seconds"] >= 1   # etcd may raise it to its minimum (2 s)
        assert (await post(client, lease(worker="w2"))).status_code == 503
        for _ in range(60):   # etcd ends the lease within about TTL + 0.5 s
            response = await post(client, lease(worker="w2"))
            if response.status_code == 200:
                break
            assert response.status_code == 503
            await asyncio.sleep(0.25)
        second = reply_of(response).get_data()
        renew_dead = await post(client, cloudevent(RENEW, {"lease_id": dead["lease_id"]}))
    assert second["address"] == address
    assert second["fencing_token"] > dead["fencing_token"]
    (value, kv), = [(kv.value, kv) for kv in
                    await etcd.get_prefix(f"{prefix}failures/".encode())]
    assert kv.key.decode() == f"{prefix}failures/{address.lower()}/{dead['fencing_token']:020d}"
    failure = json.loads(value)
    assert failure["address"] == address
    assert failure["worker_id"] == "doomed"
    assert failure["request_id"] == "tx-42"
    assert failure["lease_id"] == dead["lease_id"]
    assert failure["fencing_token"] == dead["fencing_token"]
    assert datetime.fromisoformat(failure["detected_at"]) >= datetime.fromisoformat(
        dead["expires_at"])
    assert renew_dead.status_code == 404
    assert renew_dead.json()["field"] == "data.lease_id"


async def test_given_replies_of_every_kind_then_no_private_key_or_ciphertext_in_them(
        env, etcd, prefix, kek):
    pool = await seed(etcd, prefix, kek, 1)
    (address, private_key), = pool.items()
    record = json.loads((await etcd.get(f"{prefix}keys/{address.lower()}".encode())).value)
    async with served(new(), env) as client:
        leased = await post(client, lease())
        data = reply_of(leased).get_data()
        renewed = await post(client, cloudevent(RENEW, {"lease_id": data["lease_id"]}))
        released = await post(client, cloudevent(
            RELEASE, {"lease_id": data["lease_id"], "address": address}))
    secrets_in_any_form = [private_key.hex(), private_key.hex().upper(), record["ciphertext"],
                           kek.hex(), base64.b64encode(kek).decode()]
    for response in (leased, renewed, released):
        assert response.status_code == 200
        wire = (response.content + json.dumps(dict(response.headers)).encode()).decode()
        assert not [s for s in secrets_in_any_form if s in wire]
    assert set(data) == {"address", "lease_id", "fencing_token", "expires_at", "ttl_seconds"}


async def test_given_redelivered_lease_event_when_still_held_then_same_lease_again(
        env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 2)
    event = lease(worker="w1", request_id="r-7")
    async with served(new(), env) as client:
        first = reply_of(await post(client, event)).get_data()
        again = reply_of(await post(client, event)).get_data()
    assert (again["address"], again["lease_id"], again["fencing_token"]) == (
        first["address"], first["lease_id"], first["fencing_token"])
    locks = await etcd.get_prefix(f"{prefix}locks/".encode())
    assert len(locks) == 1   # the second key was not touched


async def test_given_redeliveries_racing_when_leased_then_still_one_lock(env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 3)
    event = lease(worker="w1")
    async with served(new(), env) as client:
        answers = await asyncio.gather(*(post(client, event) for _ in range(4)))
    data = [reply_of(a).get_data() for a in answers]
    assert len({(d["address"], d["lease_id"], d["fencing_token"]) for d in data}) == 1
    assert len(await etcd.get_prefix(f"{prefix}locks/".encode())) == 1


async def test_given_same_event_id_with_other_worker_when_leased_then_409_naming_id(
        env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 2)
    first = lease(worker="w1")
    other = lease(worker="w2", id=first.id)
    async with served(new(), env) as client:
        assert (await post(client, first)).status_code == 200
        response = await post(client, other)
    assert response.status_code == 409
    assert response.json()["field"] == "id"


async def test_given_release_delivered_twice_then_both_answer_released(env, etcd, prefix, kek):
    (address,) = await seed(etcd, prefix, kek, 1)
    async with served(new(), env) as client:
        data = reply_of(await post(client, lease())).get_data()
        release = cloudevent(RELEASE, {"lease_id": data["lease_id"], "address": address})
        first, second = await post(client, release), await post(client, release)
        renew = await post(client, cloudevent(RENEW, {"lease_id": data["lease_id"]}))
    assert reply_of(first).get_data() == reply_of(second).get_data()
    assert renew.status_code == 404


async def test_given_unknown_lease_when_renewed_then_404_naming_lease_id(env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 1)
    response = await post_to(new(), cloudevent(RENEW, {"lease_id": "7abcdef012345678"}), env=env)
    assert response.status_code == 404
    assert response.json()["field"] == "data.lease_id"


async def test_given_lease_of_another_prefix_when_renewed_then_404(
        env, etcd, prefix):
    foreign = await etcd.lease(30)
    await etcd.put(b"/eventworks/test/elsewhere/" + prefix.encode(), b"x", lease=foreign)
    try:
        response = await post_to(new(), cloudevent(RENEW, {"lease_id": f"{foreign.id:x}"}),
                                 env=env)
        assert response.status_code == 404
    finally:
        await etcd.revoke_lease(foreign.id)


async def test_given_empty_pool_when_leased_then_503_says_pool_is_empty(env, etcd):
    response = await post_to(new(), lease(), env=env)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "empty" in response.json()["detail"]


@pytest.mark.parametrize(("event_type", "data", "field"), [
    (LEASE, {"ttl_seconds": 10}, "data.worker_id"),
    (LEASE, {"worker_id": "w1", "ttl_seconds": 0}, "data.ttl_seconds"),
    (LEASE, {"worker_id": "w1", "ttl_seconds": 601}, "data.ttl_seconds"),
    (LEASE, {"worker_id": "has space", "ttl_seconds": 10}, "data.worker_id"),
    (LEASE, {"worker_id": "w1", "ttl_seconds": 10, "request_id": ""}, "data.request_id"),
    (RENEW, {}, "data.lease_id"),
    (RENEW, {"lease_id": "not-hex"}, "data.lease_id"),
    (RENEW, {"lease_id": "8000000000000000"}, "data.lease_id"),
    (RELEASE, {"lease_id": "1a"}, "data.address"),
    (RELEASE, {"lease_id": "1a", "address": "0x1234"}, "data.address"),
])
async def test_given_bad_data_when_posted_then_400_naming_the_field(env, event_type, data, field):
    response = await post_to(new(), cloudevent(event_type, data), env=env)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field


async def test_given_unknown_event_type_when_posted_then_400_naming_type(env):
    response = await post_to(new(), cloudevent("dev.eventworks.key.steal", {}), env=env)
    assert response.status_code == 400
    assert response.json()["field"] == "type"


async def test_given_etcd_down_when_leased_then_503_with_retry_after(unused_port):
    env = {"ETCD_ENDPOINTS": f"http://127.0.0.1:{unused_port}", "ETCD_TIMEOUT_SECONDS": "2",
           "LEASE_KEY_TOKEN_SECRET": CALLER_SECRET}
    function = new()
    async with served(function, env) as client:
        response = await post(client, lease())
        readiness = await client.get("/health/readiness")
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert readiness.status_code != 200


async def test_given_started_function_when_probed_then_ready_once_etcd_answers(env):
    async with served(new(), env) as client:
        assert (await probed_ready(client)).status_code == 200
        assert (await client.get("/health/liveness")).status_code == 200


@pytest.mark.parametrize("env", [{}, {"ETCD_ENDPOINTS": "https://etcd:2379",
                                      "LEASE_KEY_TOKEN_SECRET": CALLER_SECRET},
                                 {"ETCD_ENDPOINTS": "http://127.0.0.1:2379",
                                  "ETCD_PREFIX": "/elsewhere/",
                                  "LEASE_KEY_TOKEN_SECRET": CALLER_SECRET},
                                 # Without the caller secret it would answer anyone.
                                 {"ETCD_ENDPOINTS": "http://127.0.0.1:2379"},
                                 {"ETCD_ENDPOINTS": "http://127.0.0.1:2379",
                                  "LEASE_KEY_TOKEN_SECRET": "short"}])
async def test_given_bad_settings_when_started_then_start_fails_and_not_ready(env):
    function = new()
    with pytest.raises(SettingsError):
        function.start(env)
    ready, why = function.ready()
    assert not ready
    assert "SettingsError" in why


# -- who may call: sign-tx's caller token, nothing else (issue 7) ----------------------------
def refused_event(how):
    event = anonymous(LEASE, {"worker_id": "intruder", "ttl_seconds": 30},
                      source="/eventworks/sign-tx")
    return {
        "no token": event,
        "another scheme": with_authorization(event, "Basic c2lnbi10eDpzZWNyZXQ="),
        "not a JWT": with_authorization(event, "Bearer not-a-jwt"),
        "forged": called_by(event, secret="another-secret-of-32-bytes-or-more!"),
        "expired": called_by(event, now=time.time() - 600),
        "wrong audience": called_by(event, audience="verify-tx"),
        "long-lived": called_by(event, ttl=3600),
        "unsigned (alg none)": with_authorization(event, "Bearer " + ".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
            for part in ({"alg": "none", "typ": "JWT"},
                         {"sub": "sign-tx", "aud": "lease-key", "iat": int(time.time()),
                          "exp": int(time.time()) + 60})) + "."),
    }[how]


@pytest.mark.parametrize("how", ["no token", "another scheme", "not a JWT", "forged", "expired",
                                 "wrong audience", "long-lived", "unsigned (alg none)"])
async def test_given_a_call_without_sign_txs_valid_caller_token_when_leasing_then_401_and_nothing_leased(  # noqa: E501
        env, etcd, prefix, kek, how):
    await seed(etcd, prefix, kek, 1)
    response = await post_to(new(), refused_event(how), env=env)
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "header authorization"
    assert list(await etcd.get_prefix((prefix + "locks/").encode())) == []


async def test_given_a_valid_token_of_another_caller_when_leasing_then_403_and_nothing_leased(
        env, etcd, prefix, kek):
    await seed(etcd, prefix, kek, 1)
    response = await post_to(new(), called_by(lease(), "verify-tx"), env=env)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert list(await etcd.get_prefix((prefix + "locks/").encode())) == []


@pytest.mark.parametrize("event_type", [RENEW, RELEASE])
async def test_given_no_caller_token_when_renewing_or_releasing_then_401(env, event_type):
    data = {"lease_id": "7abcdef012345678", "address": "0x" + "11" * 20}
    response = await post_to(new(), anonymous(event_type, data), env=env)
    assert response.status_code == 401


async def test_given_sign_txs_caller_token_when_leasing_then_leased(env, etcd, prefix, kek):
    (address,) = await seed(etcd, prefix, kek, 1)
    response = await post_to(new(), called_by(lease(), "sign-tx"), env=env)
    assert reply_of(response).get_data()["address"] == address
