"""Tier 2: verify-tx driven in-process through func-python's real decode/encode path, with
its inbox and records in the local stack's PostgreSQL (schema `verify`, role `verify`).

Transactions are made with eth-account, a signer independent of the code under test.
Every case signs with fresh random keys, so cases never share a (sender, chain, nonce)
slot or a fence in the shared database.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import rlp  # type: ignore[import-untyped]
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from eth_account import Account
from eth_utils.crypto import keccak

from function import new
from tests.factory import Event, cloudevent, post_to, served

pytestmark = pytest.mark.stack

TX_SIGNED = "dev.eventworks.tx.signed"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# /work/shared/reference/README.md: the EIP-155 example (chain id 1) ...
EIP155_RAW = bytes.fromhex(
    "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025"
    "a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb7"
    "03304b3800ccf555c9f3dc64214b297fb1966a3b6d83")
EIP155_HASH = "0x33469b22e9f636356c4160a87eb19df52b7412e8eac32a4a55ffe88ea8350788"
EIP155_SENDER = "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F"
# ... and ethereum/tests TransactionTests/ttNonce/TransactionWithHighNonce32 (pre-EIP-155).
HIGH_NONCE_RAW = bytes.fromhex(
    "f8648501000000000182520894095e7baea6a6c7c4c2dfeb977efac326af552d8780801ba048b55bfa915ac7"
    "95c431978d8a6a992b628d557da5ff759b307d495a36649353a01fffd310ac743f371de3b9f7f9cb56c0b28a"
    "d43601b4ab949f53faa07bd2c804")
HIGH_NONCE_SENDER = "0xf3dac79274af6e51fbefe9d74a07bdef53d48ea1"


@pytest.fixture
def env(stack_env):
    return {"DATABASE_URL": stack_env["DATABASE_URL_VERIFY"]}


@dataclass(frozen=True)
class Key:
    """A fresh random key that signs EIP-1559 transactions (eth-account)."""

    private_key: bytes
    address: str  # EIP-55 checksummed, as eth-account spells it

    @classmethod
    def fresh(cls) -> Key:
        account = Account.create()
        return cls(bytes(account.key), account.address)

    def sign(self, nonce: int, *, chain_id: int = 1, value: int = 1) -> bytes:
        signed = Account.sign_transaction({
            "type": 2, "chainId": chain_id, "nonce": nonce, "value": value, "gas": 21000,
            "to": "0x3535353535353535353535353535353535353535", "data": b"",
            "maxFeePerGas": 30 * 10**9, "maxPriorityFeePerGas": 10**9}, self.private_key)
        return bytes(signed.raw_transaction)


def tx_signed(raw: bytes, *, sender: str, nonce: int, chain_id: int = 1, token: int = 1,
              tx_hash: str | None = None, event_id: str | None = None) -> Event:
    return cloudevent(TX_SIGNED, {
        "request_id": f"req-{uuid.uuid4()}", "from": sender, "chain_id": chain_id,
        "nonce": nonce, "tx_hash": tx_hash or "0x" + keccak(raw).hex(),
        "raw_tx": "0x" + raw.hex(), "fencing_token": token},
        id=event_id, source="/eventworks/sign-tx")


def retyped(raw: bytes, **fields: int) -> bytes:
    """The transaction with its v/yParity, r or s replaced (re-encoded, not re-signed)."""
    typed = raw[0] < 0xC0
    items = rlp.decode(raw[1:] if typed else raw)
    for name, value in fields.items():
        items[{"v": -3, "r": -2, "s": -1}[name]] = rlp.sedes.big_endian_int.serialize(value)
    encoded: bytes = rlp.encode(items)
    return (raw[:1] if typed else b"") + encoded


def signature_of(raw: bytes) -> tuple[int, int, int]:
    items = rlp.decode(raw[1:] if raw[0] < 0xC0 else raw)
    v, r, s = (int.from_bytes(i, "big") for i in items[-3:])
    return v, r, s


def answer(response: Any) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    event = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))
    assert event.get_source() == "/eventworks/verify-tx"
    data = event.get_data()
    assert isinstance(data, dict)
    return event.get_type(), data


def verdict(response: Any) -> str:
    kind, data = answer(response)
    return "verified" if kind == "dev.eventworks.tx.verified" else data["reason"]


async def post_all(env: dict[str, str], *events: Event) -> list[Any]:
    async with served(new(), env) as client:
        return [await client.post("/", content=e.body, headers=dict(e.headers)) for e in events]


# -- verified ----------------------------------------------------------------------------
async def test_given_valid_eip1559_tx_when_posted_then_tx_verified_reply(env):
    key = Key.fresh()
    raw = key.sign(0)
    event = tx_signed(raw, sender=key.address, nonce=0, token=7)
    response = await post_to(new(), event, env=env)

    kind, data = answer(response)
    assert kind == "dev.eventworks.tx.verified"
    sent = json.loads(event.body)
    assert data == {"request_id": sent["request_id"], "tx_hash": "0x" + keccak(raw).hex(),
                    "from": key.address}
    assert response.headers["ce-subject"] == sent["request_id"]


async def test_given_eip155_reference_vector_when_posted_then_verified(env):
    event = tx_signed(EIP155_RAW, sender=EIP155_SENDER, nonce=9, tx_hash=EIP155_HASH)
    kind, data = answer(await post_to(new(), event, env=env))
    assert kind == "dev.eventworks.tx.verified"
    assert data["from"] == EIP155_SENDER
    assert data["tx_hash"] == EIP155_HASH


async def test_given_sender_in_lower_case_when_posted_then_verified_all_the_same(env):
    key = Key.fresh()
    event = tx_signed(key.sign(0), sender=key.address.lower(), nonce=0)
    assert verdict(await post_to(new(), event, env=env)) == "verified"


async def test_given_chain_in_verify_chain_ids_when_posted_then_verified_on_that_chain(env):
    key = Key.fresh()
    event = tx_signed(key.sign(0, chain_id=11155111), sender=key.address, nonce=0,
                      chain_id=11155111)
    response = await post_to(new(), event, env={**env, "VERIFY_CHAIN_IDS": "1,11155111"})
    assert verdict(response) == "verified"


# -- the reference vectors, and tampered variants -----------------------------------------
async def test_given_pre_eip155_reference_vector_when_posted_then_chain_mismatch(env):
    # TransactionWithHighNonce32 has no chain id: valid on every chain, so on none we allow.
    event = tx_signed(HIGH_NONCE_RAW, sender=HIGH_NONCE_SENDER, nonce=2**32)
    kind, data = answer(await post_to(new(), event, env=env))
    assert kind == "dev.eventworks.tx.rejected"
    assert data["reason"] == "chain_mismatch"
    assert "pre-EIP-155" in data["detail"]


async def test_given_pre_eip155_vector_with_other_from_then_mismatch_names_recovered_sender(env):
    event = tx_signed(HIGH_NONCE_RAW, sender=Key.fresh().address, nonce=2**32)
    _, data = answer(await post_to(new(), event, env=env))
    assert data["reason"] == "sender_mismatch"
    assert f"signed by {HIGH_NONCE_SENDER}" in data["detail"]


async def test_given_eip155_vector_claimed_for_other_chain_when_posted_then_chain_mismatch(env):
    event = tx_signed(EIP155_RAW, sender=EIP155_SENDER, nonce=9, chain_id=5)
    response = await post_to(new(), event, env={**env, "VERIFY_CHAIN_IDS": "1,5"})
    assert verdict(response) == "chain_mismatch"


async def test_given_tx_signed_for_other_chain_when_claimed_for_mainnet_then_chain_mismatch(env):
    key = Key.fresh()
    event = tx_signed(key.sign(0, chain_id=5), sender=key.address, nonce=0, chain_id=1)
    assert verdict(await post_to(new(), event, env=env)) == "chain_mismatch"


async def test_given_chain_not_in_verify_chain_ids_when_posted_then_chain_mismatch(env):
    key = Key.fresh()
    event = tx_signed(key.sign(0, chain_id=5), sender=key.address, nonce=0, chain_id=5)
    assert verdict(await post_to(new(), event, env=env)) == "chain_mismatch"


async def test_given_wrong_from_when_posted_then_sender_mismatch_naming_both(env):
    stranger = Key.fresh().address
    kind, data = answer(await post_to(new(), tx_signed(EIP155_RAW, sender=stranger, nonce=9),
                                      env=env))
    assert kind == "dev.eventworks.tx.rejected"
    assert data["reason"] == "sender_mismatch"
    assert data["tx_hash"] == EIP155_HASH
    assert data["detail"] == (f"signed by {EIP155_SENDER.lower()}, "
                              f"the event says from {stranger.lower()}")


@pytest.mark.parametrize("raw", [EIP155_RAW, Key.fresh().sign(3)], ids=["eip155", "eip1559"])
@pytest.mark.parametrize("byte", [0, 13, 31])
@pytest.mark.parametrize("part", ["r", "s"])
async def test_given_flipped_byte_in_signature_when_posted_then_not_verified(
        env, raw, byte, part):
    _, r, s = signature_of(raw)
    value = {"r": r, "s": s}[part]
    flipped = value ^ (0xFF << (8 * (31 - byte)))
    tampered = retyped(raw, **{part: flipped})
    sender = EIP155_SENDER if raw is EIP155_RAW else Account.recover_transaction(raw)
    nonce = 9 if raw is EIP155_RAW else 3
    event = tx_signed(tampered, sender=sender, nonce=nonce)
    assert verdict(await post_to(new(), event, env=env)) in {"bad_signature", "sender_mismatch"}


@pytest.mark.parametrize("raw", [EIP155_RAW, Key.fresh().sign(0)], ids=["eip155", "eip1559"])
async def test_given_high_s_twin_of_valid_signature_when_posted_then_bad_signature(env, raw):
    # (r, n - s) with the other parity recovers the same key: EIP-2 refuses it.
    v, _, s = signature_of(raw)
    twin_v = v ^ 1 if raw[0] < 0xC0 else (v + 1 if (v - 35) % 2 == 0 else v - 1)
    twin = retyped(raw, v=twin_v, s=SECP256K1_N - s)
    sender = EIP155_SENDER if raw is EIP155_RAW else Account.recover_transaction(raw)
    nonce = 9 if raw is EIP155_RAW else 0
    event = tx_signed(twin, sender=sender, nonce=nonce)
    assert verdict(await post_to(new(), event, env=env)) == "bad_signature"


@pytest.mark.parametrize("fields", [{"r": 0}, {"s": 0}, {"r": SECP256K1_N}],
                         ids=["r=0", "s=0", "r=n"])
async def test_given_out_of_range_signature_when_posted_then_bad_signature(env, fields):
    event = tx_signed(retyped(EIP155_RAW, **fields), sender=EIP155_SENDER, nonce=9)
    assert verdict(await post_to(new(), event, env=env)) == "bad_signature"


@pytest.mark.parametrize("cut", [1, 40, len(EIP155_RAW) - 1])
async def test_given_truncated_raw_tx_when_posted_then_malformed(env, cut):
    event = tx_signed(EIP155_RAW[:cut], sender=EIP155_SENDER, nonce=9)
    kind, data = answer(await post_to(new(), event, env=env))
    assert kind == "dev.eventworks.tx.rejected"
    assert data["reason"] == "malformed"


async def test_given_empty_raw_tx_when_posted_then_malformed(env):
    event = tx_signed(b"", sender=EIP155_SENDER, nonce=9)
    assert verdict(await post_to(new(), event, env=env)) == "malformed"


async def test_given_tx_hash_of_other_tx_when_posted_then_malformed(env):
    key = Key.fresh()
    event = tx_signed(key.sign(0), sender=key.address, nonce=0, tx_hash=EIP155_HASH)
    _, data = answer(await post_to(new(), event, env=env))
    assert data["reason"] == "malformed"
    assert "hashes to" in data["detail"]


async def test_given_nonce_other_than_the_txs_when_posted_then_malformed(env):
    key = Key.fresh()
    event = tx_signed(key.sign(4), sender=key.address, nonce=5)
    assert verdict(await post_to(new(), event, env=env)) == "malformed"


# -- double sign, fencing, redelivery -----------------------------------------------------
async def test_given_two_payloads_for_one_slot_when_posted_then_second_is_double_sign(env):
    key = Key.fresh()
    first = tx_signed(key.sign(0, value=1), sender=key.address, nonce=0, token=5)
    second = tx_signed(key.sign(0, value=2), sender=key.address, nonce=0, token=5)
    responses = await post_all(env, first, second)
    assert [verdict(r) for r in responses] == ["verified", "double_sign"]


async def test_given_same_payload_on_other_chain_when_posted_then_own_slot_verified(env):
    key = Key.fresh()
    chains = {**env, "VERIFY_CHAIN_IDS": "1,5"}
    responses = await post_all(
        chains, tx_signed(key.sign(0), sender=key.address, nonce=0),
        tx_signed(key.sign(0, chain_id=5), sender=key.address, nonce=0, chain_id=5))
    assert [verdict(r) for r in responses] == ["verified", "verified"]


async def test_given_same_tx_in_a_new_event_when_posted_then_verified_again(env):
    key = Key.fresh()
    raw = key.sign(0)
    first = tx_signed(raw, sender=key.address, nonce=0, token=5)
    again = tx_signed(raw, sender=key.address, nonce=0, token=5)
    responses = await post_all(env, first, again)
    assert [verdict(r) for r in responses] == ["verified", "verified"]
    assert responses[0].headers["ce-id"] != responses[1].headers["ce-id"]


async def test_given_redelivered_event_when_posted_again_then_identical_answer(env):
    key = Key.fresh()
    event = tx_signed(key.sign(0), sender=key.address, nonce=0)
    first, second = await post_all(env, event, event)
    assert verdict(first) == "verified"
    assert first.content == second.content
    assert first.headers["ce-id"] == second.headers["ce-id"]


async def test_given_redelivered_rejection_when_posted_again_then_identical_answer(env):
    key = Key.fresh()
    first_payload = tx_signed(key.sign(0, value=1), sender=key.address, nonce=0)
    double = tx_signed(key.sign(0, value=2), sender=key.address, nonce=0)
    responses = await post_all(env, first_payload, double, double)
    assert verdict(responses[1]) == "double_sign"
    assert responses[1].content == responses[2].content
    assert responses[1].headers["ce-id"] == responses[2].headers["ce-id"]


async def test_given_same_event_id_with_other_data_when_posted_then_409(env):
    key = Key.fresh()
    first = tx_signed(key.sign(0), sender=key.address, nonce=0)
    other = tx_signed(key.sign(1), sender=key.address, nonce=1, event_id=first.id)
    responses = await post_all(env, first, other)
    assert responses[1].status_code == 409
    assert responses[1].json()["field"] == "id"


async def test_given_token_below_senders_highest_when_posted_then_stale_lease(env):
    key = Key.fresh()
    responses = await post_all(
        env,
        tx_signed(key.sign(0), sender=key.address, nonce=0, token=10),
        tx_signed(key.sign(1), sender=key.address, nonce=1, token=9),    # expired lease
        tx_signed(key.sign(1), sender=key.address, nonce=1, token=10),   # same lease: fine
        tx_signed(key.sign(2), sender=key.address, nonce=2, token=11))   # a newer lease
    assert [verdict(r) for r in responses] == ["verified", "stale_lease", "verified",
                                               "verified"]


async def test_given_signatures_arriving_out_of_nonce_order_when_posted_then_an_older_lease_of_an_earlier_nonce_is_verified(env):  # noqa: E501
    # Found by the chaos run: lease 10 signed nonce 0, lease 11 then signed nonce 1, and a
    # redelivery brought nonce 1 first. Lease 11 took the key after nonce 0 was signed.
    key = Key.fresh()
    responses = await post_all(
        env,
        tx_signed(key.sign(1), sender=key.address, nonce=1, token=11),
        tx_signed(key.sign(0), sender=key.address, nonce=0, token=10),
        tx_signed(key.sign(2), sender=key.address, nonce=2, token=10))  # after 11 took it
    assert [verdict(r) for r in responses] == ["verified", "verified", "stale_lease"]


async def test_given_stale_lease_with_other_payload_for_a_used_slot_then_stale_lease(env):
    key = Key.fresh()
    responses = await post_all(
        env,
        tx_signed(key.sign(0, value=1), sender=key.address, nonce=0, token=20),
        tx_signed(key.sign(0, value=2), sender=key.address, nonce=0, token=19))
    assert [verdict(r) for r in responses] == ["verified", "stale_lease"]


async def test_given_old_tx_redelivered_after_newer_lease_when_posted_then_verified_again(env):
    # The old payload was accepted under its lease; delivering it again writes nothing new.
    key = Key.fresh()
    old = key.sign(0)
    responses = await post_all(
        env,
        tx_signed(old, sender=key.address, nonce=0, token=5),
        tx_signed(key.sign(1), sender=key.address, nonce=1, token=8),
        tx_signed(old, sender=key.address, nonce=0, token=5))
    assert [verdict(r) for r in responses] == ["verified", "verified", "verified"]


async def test_given_rejected_events_with_high_tokens_then_fence_does_not_move(env):
    # Only a recorded payload raises the fence: a refused event cannot lock a sender out.
    key, stranger = Key.fresh(), Key.fresh()
    responses = await post_all(
        env,
        tx_signed(key.sign(0, value=1), sender=key.address, nonce=0, token=5),
        tx_signed(key.sign(0, value=2), sender=key.address, nonce=0, token=50),  # double
        tx_signed(stranger.sign(1), sender=key.address, nonce=1, token=60),      # forged
        tx_signed(key.sign(1), sender=key.address, nonce=1, token=6))
    assert [verdict(r) for r in responses] == ["verified", "double_sign", "sender_mismatch",
                                               "verified"]


async def test_given_migration_0010_when_verifying_then_no_per_sender_fence_table_is_needed(env):
    # The fence is read per nonce from verify.signed; verify.fencing was written and never
    # read, so 0010 dropped it, and a verification (which wrote it) still records its slot.
    key = Key.fresh()
    responses = await post_all(env, tx_signed(key.sign(0), sender=key.address, nonce=0,
                                              token=4))
    assert [verdict(r) for r in responses] == ["verified"]
    async with await psycopg.AsyncConnection.connect(env["DATABASE_URL"]) as conn:
        cur = await conn.execute("SELECT to_regclass('verify.fencing'),"
                                 " (SELECT fencing_token FROM verify.signed WHERE sender = %s)",
                                 (key.address.lower(),))
        assert await cur.fetchone() == (None, 4)


async def test_given_two_payloads_for_one_slot_concurrently_then_exactly_one_verified(env):
    key = Key.fresh()
    events = [tx_signed(key.sign(0, value=v), sender=key.address, nonce=0, token=3)
              for v in range(1, 5)]
    async with served(new(), {**env, "DATABASE_POOL_SIZE": "4"}) as client:
        responses = await asyncio.gather(*(
            client.post("/", content=e.body, headers=dict(e.headers)) for e in events))
    assert sorted(verdict(r) for r in responses) == [
        "double_sign", "double_sign", "double_sign", "verified"]


# -- what is not a verdict ----------------------------------------------------------------
@pytest.mark.parametrize(("change", "field"), [
    ({"from": "0x1234"}, "data.from"),
    ({"raw_tx": "0xabc"}, "data.raw_tx"),
    ({"fencing_token": 0}, "data.fencing_token"),
    ({"chain_id": None}, "data.chain_id"),
])
async def test_given_data_failing_its_model_when_posted_then_400_naming_field(env, change, field):
    key = Key.fresh()
    event = tx_signed(key.sign(0), sender=key.address, nonce=0)
    data = {**json.loads(event.body), **change}
    response = await post_to(new(), cloudevent(TX_SIGNED, data), env=env)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field


async def test_given_unknown_type_when_posted_then_400(env):
    response = await post_to(new(), cloudevent("dev.eventworks.tx.unknown", {}), env=env)
    assert response.status_code == 400
    assert response.json()["field"] == "type"
