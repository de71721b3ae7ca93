"""eventing.eip712 against the EIP-712 specification's "Mail" example (its published
hashes and signature) and byte for byte against eth-account on random pledges; tampered
signatures and typed data that is not what it declares."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventing import eip712, ethereum
from eventing.eip712 import MalformedTypedData
from eventing.ethereum import BadSignature

N = ethereum.SECP256K1_N
EXAMPLES = int(os.environ.get("ETHEREUM_EXAMPLES", "100"))

# EIP-712's example (eips.ethereum.org/EIPS/eip-712, assets/eip-712/Example.js): Cow mails Bob.
MAIL: dict[str, Any] = {
    "types": {
        "EIP712Domain": [{"name": "name", "type": "string"},
                         {"name": "version", "type": "string"},
                         {"name": "chainId", "type": "uint256"},
                         {"name": "verifyingContract", "type": "address"}],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"},
                 {"name": "contents", "type": "string"}],
    },
    "primaryType": "Mail",
    "domain": {"name": "Ether Mail", "version": "1", "chainId": 1,
               "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
    "message": {"from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
                "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
                "contents": "Hello, Bob!"},
}
MAIL_DIGEST = "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
MAIL_DOMAIN_SEPARATOR = "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
MAIL_HASH_STRUCT = "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
# The example signs with keccak256("cow"): the address is Cow's wallet.
COW_KEY = ethereum.keccak(b"cow")
COW = "0xcd2a3d9f938e13cd947ec05abc7fe734df8dd826"
MAIL_SIGNATURE = bytes.fromhex(
    "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562" "1c")

PLEDGE_FIELDS = [{"name": "bountyId", "type": "string"},
                 {"name": "repository", "type": "string"},
                 {"name": "issueNumber", "type": "uint256"},
                 {"name": "denomination", "type": "string"},
                 {"name": "amountBaseUnits", "type": "uint256"}]
DOMAIN_FIELDS = [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                 {"name": "chainId", "type": "uint256"}]


def pledge(*, bounty_id: str = "b-1", repository: str = "octo/repo", issue_number: Any = 7,
           denomination: str = "USDC", amount: Any = 100_000_000, chain_id: Any = 1,
           ) -> dict[str, Any]:
    return {"types": {"EIP712Domain": DOMAIN_FIELDS, "Pledge": PLEDGE_FIELDS},
            "primaryType": "Pledge",
            "domain": {"name": "eventworks bounty", "version": "1", "chainId": chain_id},
            "message": {"bountyId": bounty_id, "repository": repository,
                        "issueNumber": issue_number, "denomination": denomination,
                        "amountBaseUnits": amount}}


def signed(typed_data: dict[str, Any], key: bytes) -> bytes:
    return bytes(Account.sign_message(encode_typed_data(full_message=typed_data),
                                      key).signature)


def recovered(typed_data: dict[str, Any], signature: bytes) -> str | None:
    """The signer, or None when the signature recovers no key."""
    try:
        return eip712.recover_typed(typed_data, signature)
    except BadSignature:
        return None


private_keys = st.integers(1, N - 1).map(lambda k: k.to_bytes(32, "big"))
texts = st.text(max_size=80)
uint256s = st.integers(0, 2**256 - 1)
pledges = st.builds(
    pledge, bounty_id=texts, repository=texts, issue_number=st.integers(1, 2**64),
    denomination=texts, amount=st.one_of(uint256s, uint256s.map(str)),
    chain_id=st.one_of(st.sampled_from([1, 11155111]), st.integers(1, 2**64)))


# -- the specification's example ------------------------------------------------------------
def test_given_mail_example_when_type_encoded_then_referenced_struct_follows():
    types = eip712.struct_types(MAIL)
    assert eip712.encode_type("Mail", types) == (
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)")


def test_given_mail_example_when_hashed_then_the_eips_hashes():
    types = eip712.struct_types(MAIL)
    assert eip712.domain_separator(MAIL).hex() == MAIL_DOMAIN_SEPARATOR
    assert eip712.hash_struct("Mail", types, MAIL["message"]).hex() == MAIL_HASH_STRUCT
    assert eip712.digest(MAIL).hex() == MAIL_DIGEST


def test_given_mail_example_signature_when_recovered_then_cow():
    assert ethereum.address_of(COW_KEY) == COW
    assert eip712.recover_typed(MAIL, MAIL_SIGNATURE) == COW
    assert signed(MAIL, COW_KEY) == MAIL_SIGNATURE  # RFC 6979: eth-account signs the same


def test_given_mail_example_without_domain_type_when_hashed_then_same_digest():
    # The domain type is implied by the domain's fields, in the EIP's order.
    implied = copy.deepcopy(MAIL)
    del implied["types"]["EIP712Domain"]
    assert eip712.digest(implied).hex() == MAIL_DIGEST


# -- against eth-account ----------------------------------------------------------------------
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_data=pledges, key=private_keys)
def test_given_random_pledge_when_hashed_and_signed_then_eth_accounts_digest_and_signer(
        typed_data, key):
    reference = encode_typed_data(full_message=typed_data)
    assert eip712.digest(typed_data) == _hash_eip191_message(reference)

    signature = signed(typed_data, key)
    signer = Account.from_key(key).address.lower()
    assert eip712.recover_typed(typed_data, signature) == signer
    assert Account.recover_message(reference, signature=signature).lower() == signer


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(typed_data=pledges, key=private_keys)
def test_given_recovery_id_as_0_or_1_when_recovered_then_same_signer(typed_data, key):
    signature = signed(typed_data, key)
    as_parity = signature[:64] + bytes([signature[64] - 27])
    assert eip712.recover_typed(typed_data, as_parity) == ethereum.address_of(key)


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(typed_data=pledges, key=private_keys, amount=uint256s)
def test_given_other_amount_when_recovered_then_another_address_or_none(
        typed_data, key, amount):
    signature = signed(typed_data, key)
    changed = copy.deepcopy(typed_data)
    if int(changed["message"]["amountBaseUnits"]) == amount:
        amount = (amount + 1) % 2**256
    changed["message"]["amountBaseUnits"] = amount
    assert recovered(changed, signature) != ethereum.address_of(key)


# -- tampered signatures ----------------------------------------------------------------------
@pytest.mark.parametrize("byte", [0, 17, 31, 32, 50, 63])
def test_given_flipped_byte_in_signature_when_recovered_then_not_the_signer(byte):
    tampered = bytearray(MAIL_SIGNATURE)
    tampered[byte] ^= 0xFF
    assert recovered(MAIL, bytes(tampered)) != COW


def test_given_high_s_twin_when_recovered_then_bad_signature():
    # (r, n - s) with the other parity recovers the same key: EIP-2 refuses it.
    s = int.from_bytes(MAIL_SIGNATURE[32:64], "big")
    twin = MAIL_SIGNATURE[:32] + (N - s).to_bytes(32, "big") + bytes([27])
    with pytest.raises(BadSignature, match="high"):
        eip712.recover_typed(MAIL, twin)


@pytest.mark.parametrize("signature", [
    MAIL_SIGNATURE[:64],
    MAIL_SIGNATURE + b"\x00",
    MAIL_SIGNATURE[:64] + bytes([29]),
    bytes(32) + MAIL_SIGNATURE[32:],
    MAIL_SIGNATURE[:32] + bytes(32) + MAIL_SIGNATURE[64:],
    N.to_bytes(32, "big") + MAIL_SIGNATURE[32:],
], ids=["64 bytes", "66 bytes", "v=29", "r=0", "s=0", "r=n"])
def test_given_signature_of_no_key_when_recovered_then_bad_signature(signature):
    with pytest.raises(BadSignature):
        eip712.recover_typed(MAIL, signature)


# -- typed data that is not what it declares --------------------------------------------------
def _without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return changed


def _with(document: dict[str, Any], value: Any, *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


@pytest.mark.parametrize(("typed_data", "match"), [
    (_without(pledge(), "types"), "types"),
    (_without(pledge(), "message"), "message"),
    (_without(pledge(), "primaryType"), "primaryType"),
    (_without(pledge(), "message", "amountBaseUnits"), "amountBaseUnits"),
    (_with(pledge(), 1, "message", "extra"), "extra"),
    (_with(pledge(), "Missing", "primaryType"), "Missing"),
    (_with(pledge(), [{"name": "x", "type": "uint7"}], "types", "Pledge"), "uint7"),
    (_with(pledge(), [{"name": "x", "type": "string[]"}], "types", "Pledge"), "string"),
    (pledge(amount="1e18"), "decimal"),
    (pledge(amount="0x10"), "decimal"),
    (pledge(amount=-1), "range"),
    (pledge(amount=2**256), "range"),
    (pledge(amount=True), "integer"),
    (pledge(amount=1.5), "integer"),
    (pledge(issue_number=None), "integer"),
    (pledge(bounty_id=7), "string"),  # type: ignore[arg-type]
    (_with(MAIL, "0x1234", "message", "to", "wallet"), "40 hex"),
    (_with(MAIL, "not a struct", "message", "to"), "object"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_given_typed_data_not_of_its_types_when_hashed_then_malformed(typed_data, match):
    with pytest.raises(MalformedTypedData, match=match):
        eip712.digest(typed_data)


def test_given_uint_as_decimal_string_when_hashed_then_same_digest_as_the_integer():
    assert eip712.digest(pledge(amount=str(10**30))) == eip712.digest(pledge(amount=10**30))
