"""Tier 2: bounty pledges through verify-tx, driven in-process through func-python's real
decode/encode path, with its inbox in the local stack's PostgreSQL (role `verify`).

Pledges are signed with eth-account (`encode_typed_data` + `sign_message`), a signer
independent of eventing.eip712, with fresh random keys.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from function import new
from tests.factory import Event, cloudevent, pledge_typed_data, post_to, served

pytestmark = pytest.mark.stack

BOUNTY_SIGNED = "dev.eventworks.bounty.signed"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture
def env(stack_env):
    return {"DATABASE_URL": stack_env["DATABASE_URL_VERIFY"]}


def typed_pledge(bounty_id: str, *, amount: Any = "250000000", chain_id: int = 1,
                 name: str = "eventworks bounty", version: str = "1") -> dict[str, Any]:
    """The pledge as the signing page has a wallet sign it (eth_signTypedData_v4)."""
    return pledge_typed_data(bounty_id=bounty_id, repository="octo/repo", issue_number=42,
                             denomination="USDC", amount_base_units=amount,
                             chain_id=chain_id, name=name, version=version)


def sign(typed_data: dict[str, Any], key: bytes) -> str:
    signed = Account.sign_message(encode_typed_data(full_message=typed_data), key)
    return "0x" + bytes(signed.signature).hex()


def bounty_signed(typed_data: dict[str, Any], signature: str, *, funder: str,
                  chain_id: int = 1, **terms: Any) -> Event:
    """The event for the bounty named in the typed data, with the terms of that bounty
    (as bounty.requested stated them) unless `terms` changes some."""
    bounty_id = typed_data["message"]["bountyId"]
    return cloudevent(BOUNTY_SIGNED, {
        "bounty_id": bounty_id, "funder_address": funder, "typed_data": typed_data,
        "signature": signature, "repository": "octo/repo", "issue_number": 42,
        "denomination": "USDC", "amount_base_units": "250000000", "chain_id": chain_id,
        **terms}, source="/eventworks/signing-page")


def a_pledge(**changes: Any) -> tuple[LocalAccount, dict[str, Any], str]:
    funder = Account.create()
    typed_data = typed_pledge(f"bounty-{uuid.uuid4()}", **changes)
    return funder, typed_data, sign(typed_data, bytes(funder.key))


def answer(response: Any) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    event = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))
    assert event.get_source() == "/eventworks/verify-tx"
    data = event.get_data()
    assert isinstance(data, dict)
    return event.get_type(), data


async def verdict(env: dict[str, str], event: Event) -> str:
    kind, data = answer(await post_to(new(), event, env=env))
    if kind == "dev.eventworks.bounty.funded":
        return "funded"
    assert kind == "dev.eventworks.bounty.rejected"
    return str(data["reason"])


# -- funded --------------------------------------------------------------------------------
async def test_given_pledge_signed_by_its_funder_when_posted_then_bounty_funded(env):
    funder, typed_data, signature = a_pledge()
    event = bounty_signed(typed_data, signature, funder=funder.address)
    response = await post_to(new(), event, env=env)

    kind, data = answer(response)
    assert kind == "dev.eventworks.bounty.funded"
    bounty_id = typed_data["message"]["bountyId"]
    # The terms it signed, for parse-comment to hold against the bounty's own.
    assert data == {"bounty_id": bounty_id, "funder_address": funder.address,
                    "repository": "octo/repo", "issue_number": 42, "denomination": "USDC",
                    "amount_base_units": "250000000", "chain_id": 1}
    assert response.headers["ce-subject"] == bounty_id


async def test_given_amount_as_json_integer_when_posted_then_funded_all_the_same(env):
    funder, typed_data, signature = a_pledge(amount=250_000_000)
    assert await verdict(env, bounty_signed(typed_data, signature, funder=funder.address)) == (
        "funded")


async def test_given_pledge_on_an_allowed_testnet_when_posted_then_funded(env):
    funder, typed_data, signature = a_pledge(chain_id=11155111)
    event = bounty_signed(typed_data, signature, funder=funder.address, chain_id=11155111)
    response = await post_to(new(), event, env={**env, "VERIFY_CHAIN_IDS": "1,11155111"})
    assert answer(response)[0] == "dev.eventworks.bounty.funded"


async def test_given_redelivered_pledge_when_posted_again_then_identical_answer(env):
    funder, typed_data, signature = a_pledge()
    event = bounty_signed(typed_data, signature, funder=funder.address)
    async with served(new(), env) as client:
        first, second = [await client.post("/", content=event.body, headers=dict(event.headers))
                         for _ in range(2)]
    assert answer(first)[0] == "dev.eventworks.bounty.funded"
    assert first.content == second.content
    assert first.headers["ce-id"] == second.headers["ce-id"]


# -- rejected ------------------------------------------------------------------------------
async def test_given_pledge_signed_by_someone_else_when_posted_then_signer_mismatch(env):
    _, typed_data, signature = a_pledge()
    claimed = Account.create().address
    kind, data = answer(await post_to(
        new(), bounty_signed(typed_data, signature, funder=claimed), env=env))
    assert kind == "dev.eventworks.bounty.rejected"
    assert data["bounty_id"] == typed_data["message"]["bountyId"]
    assert data["reason"] == "signer_mismatch"
    assert f"the event says funder {claimed.lower()}" in data["detail"]


async def test_given_signed_amount_other_than_the_bountys_when_posted_then_terms_mismatch(env):
    funder, typed_data, signature = a_pledge(amount="1")
    _, data = answer(await post_to(
        new(), bounty_signed(typed_data, signature, funder=funder.address), env=env))
    assert data["reason"] == "terms_mismatch"
    assert data["detail"] == "amountBaseUnits: signed 1, the bounty's is 250000000"


async def test_given_amount_changed_after_signing_when_posted_then_not_funded(env):
    # The message now states the bounty's terms, but the signature is of other ones.
    funder, typed_data, signature = a_pledge(amount="1")
    changed = copy.deepcopy(typed_data)
    changed["message"]["amountBaseUnits"] = "250000000"
    event = bounty_signed(changed, signature, funder=funder.address)
    assert await verdict(env, event) in {"signer_mismatch", "bad_signature"}


@pytest.mark.parametrize("terms", [{"issue_number": 43}, {"repository": "octo/other"},
                                   {"denomination": "DAI"}, {"amount_base_units": "250000001"}])
async def test_given_event_terms_other_than_the_signed_ones_when_posted_then_terms_mismatch(
        env, terms):
    funder, typed_data, signature = a_pledge()
    event = bounty_signed(typed_data, signature, funder=funder.address, **terms)
    assert await verdict(env, event) == "terms_mismatch"


async def test_given_event_for_another_bounty_when_posted_then_terms_mismatch(env):
    funder, typed_data, signature = a_pledge()
    event = bounty_signed(typed_data, signature, funder=funder.address)
    data = {**json.loads(event.body), "bounty_id": "another-bounty"}
    assert await verdict(env, cloudevent(BOUNTY_SIGNED, data)) == "terms_mismatch"


@pytest.mark.parametrize(("changes", "chain_id"), [
    ({"name": "Ether Mail"}, 1),
    ({"version": "2"}, 1),
    ({"chain_id": 5}, 1),       # signed for another chain than the bounty's
    ({"chain_id": 5}, 5),       # the bounty's chain, not one verify-tx allows
], ids=["name", "version", "other chain", "chain not allowed"])
async def test_given_pledge_in_another_domain_when_posted_then_domain_mismatch(
        env, changes, chain_id):
    funder, typed_data, signature = a_pledge(**changes)
    event = bounty_signed(typed_data, signature, funder=funder.address, chain_id=chain_id)
    assert await verdict(env, event) == "domain_mismatch"


async def test_given_other_struct_signed_when_posted_then_domain_mismatch(env):
    funder = Account.create()
    typed_data = typed_pledge(f"bounty-{uuid.uuid4()}")
    typed_data["types"]["Pledge"] = [*typed_data["types"]["Pledge"],
                                     {"name": "note", "type": "string"}]
    typed_data["message"]["note"] = "also this"
    event = bounty_signed(typed_data, sign(typed_data, bytes(funder.key)),
                          funder=funder.address)
    _, data = answer(await post_to(new(), event, env=env))
    assert data["reason"] == "domain_mismatch"
    assert "string note" in data["detail"]


@pytest.mark.parametrize("signature", [
    "0x" + "00" * 65,
    "0x" + "ff" * 65,
], ids=["zeros", "ones"])
async def test_given_garbage_signature_when_posted_then_bad_signature(env, signature):
    funder, typed_data, _ = a_pledge()
    event = bounty_signed(typed_data, signature, funder=funder.address)
    assert await verdict(env, event) == "bad_signature"


async def test_given_high_s_twin_of_the_signature_when_posted_then_bad_signature(env):
    funder, typed_data, signature = a_pledge()
    raw = bytes.fromhex(signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    twin = raw[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - raw[64]])
    event = bounty_signed(typed_data, "0x" + twin.hex(), funder=funder.address)
    assert await verdict(env, event) == "bad_signature"


@pytest.mark.parametrize("typed_data", [
    {"types": {}, "primaryType": "Pledge", "domain": {}, "message": {}},
    {"primaryType": "Pledge"},
], ids=["no Pledge type", "no types"])
async def test_given_typed_data_that_does_not_hash_when_posted_then_malformed(env, typed_data):
    funder = Account.create()
    event = bounty_signed({**typed_data, "message": {"bountyId": "b-1"}}, "0x" + "11" * 65,
                          funder=funder.address)
    assert await verdict(env, event) == "malformed"


async def test_given_uint_that_is_no_number_when_posted_then_malformed(env):
    funder, typed_data, signature = a_pledge()
    typed_data["message"]["amountBaseUnits"] = "lots"
    event = bounty_signed(typed_data, signature, funder=funder.address)
    assert await verdict(env, event) == "malformed"


# -- what is not a verdict -----------------------------------------------------------------
@pytest.mark.parametrize(("field", "change"), [
    ("funder_address", None),
    ("typed_data", None),
    ("signature", None),
    ("amount_base_units", None),
    ("chain_id", None),
    ("signature", "0x" + "11" * 64),          # 64 bytes: EIP-2098 compact form, not read
    ("funder_address", "0x1234"),
    ("amount_base_units", "2.5"),
    ("repository", "not a repository"),
])
async def test_given_data_failing_its_model_when_posted_then_400_naming_field(
        env, field, change):
    funder, typed_data, signature = a_pledge()
    data = json.loads(bounty_signed(typed_data, signature, funder=funder.address).body)
    if change is None:
        del data[field]
    else:
        data[field] = change
    response = await post_to(new(), cloudevent(BOUNTY_SIGNED, data), env=env)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == f"data.{field}"
