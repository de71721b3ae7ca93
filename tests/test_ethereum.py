"""eventing.ethereum against eth-account (byte for byte, on random transactions), against
eth-keys' pure-Python ECDSA (an independent RFC 6979 implementation), and against the
fixed vectors of shared/reference/README.md; tampered and truncated transactions."""

from __future__ import annotations

import contextlib
import os

import pytest
from coincurve import PrivateKey
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction  # type: ignore[attr-defined]
from eth_keys.backends import NativeECCBackend  # type: ignore[attr-defined]
from eth_keys.datatypes import PrivateKey as EthKeysPrivateKey
from eth_utils import to_checksum_address  # type: ignore[attr-defined]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventing import ethereum
from eventing.ethereum import BadSignature, MalformedTransaction, UnsignedTx

N = ethereum.SECP256K1_N


def rlp(*items: ethereum.Item) -> bytes:
    return ethereum.rlp_encode(list(items))
UINT256 = 2**256 - 1
UINT64 = 2**64 - 1

# shared/reference/README.md: the EIP-155 example (chain id 1).
EIP155_KEY = bytes.fromhex("46" * 32)
EIP155_ADDRESS = "0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"
EIP155_SIGNING_HASH = "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
EIP155_RAW = (
    "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080"
    "25a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761a"
    "ecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83")
EIP155_TX_HASH = "33469b22e9f636356c4160a87eb19df52b7412e8eac32a4a55ffe88ea8350788"
# ethereum/tests TransactionTests/ttNonce/TransactionWithHighNonce32.
HIGH_NONCE_RAW = (
    "f8648501000000000182520894095e7baea6a6c7c4c2dfeb977efac326af552d8780801ba048b55bfa915a"
    "c795c431978d8a6a992b628d557da5ff759b307d495a36649353a01fffd310ac743f371de3b9f7f9cb56c0"
    "b28ad43601b4ab949f53faa07bd2c804")
HIGH_NONCE_SENDER = "0xf3dac79274af6e51fbefe9d74a07bdef53d48ea1"
# eth-account's documented example key.
DOC_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
DOC_ADDRESS = "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"

private_keys = st.integers(1, N - 1).map(lambda k: k.to_bytes(32, "big"))
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
# `sign` takes an address in any case (eth-account wants EIP-55 where a digit is a letter).
any_case_addresses = st.one_of(addresses, addresses.map(to_checksum_address))
unsigned_txs = st.builds(
    UnsignedTx,
    chain_id=st.one_of(st.sampled_from([1, 5, 137, 11155111]), st.integers(1, UINT64)),
    nonce=st.integers(0, UINT64 - 1),
    max_priority_fee_per_gas=st.integers(0, UINT256),
    max_fee_per_gas=st.integers(0, UINT256),
    gas_limit=st.integers(0, UINT64),
    to=any_case_addresses,
    value=st.integers(0, UINT256),
    data=st.binary(max_size=300),
)
EXAMPLES = int(os.environ.get("ETHEREUM_EXAMPLES", "150"))


def as_eth_account(tx: UnsignedTx) -> dict[str, object]:
    return {"type": 2, "chainId": tx.chain_id, "nonce": tx.nonce,
            "maxPriorityFeePerGas": tx.max_priority_fee_per_gas,
            "maxFeePerGas": tx.max_fee_per_gas, "gas": tx.gas_limit,
            "to": to_checksum_address(tx.to),
            "value": tx.value, "data": tx.data, "accessList": []}


def a_transaction(nonce: int = 7, data: bytes = b"\xa9\x05\x9c\xbb" + bytes(64)) -> UnsignedTx:
    return UnsignedTx(chain_id=1, nonce=nonce, max_priority_fee_per_gas=2 * 10**9,
                      max_fee_per_gas=40 * 10**9, gas_limit=65_000,
                      to="0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", value=0, data=data)


# -- fixed vectors ---------------------------------------------------------------------------
def test_given_eip155_example_when_decoded_then_its_hashes_fields_and_sender():
    decoded = ethereum.decode(bytes.fromhex(EIP155_RAW))
    assert decoded.signing_hash.hex() == EIP155_SIGNING_HASH
    assert decoded.tx_hash.hex() == EIP155_TX_HASH
    assert (decoded.type, decoded.chain_id, decoded.nonce, decoded.gas_limit) == (0, 1, 9, 21000)
    assert decoded.to == "0x" + "35" * 20
    assert (decoded.value, decoded.data) == (10**18, b"")
    assert ethereum.recover(decoded) == EIP155_ADDRESS
    assert ethereum.address_of(EIP155_KEY) == EIP155_ADDRESS


def test_given_eip155_example_key_when_its_hash_signed_then_the_vectors_signature():
    # The signer below is the one `sign` uses: RFC 6979 gives the vector's r and s exactly.
    decoded = ethereum.decode(bytes.fromhex(EIP155_RAW))
    signature = PrivateKey(EIP155_KEY).sign_recoverable(decoded.signing_hash, hasher=None)
    assert int.from_bytes(signature[:32], "big") == decoded.r
    assert int.from_bytes(signature[32:64], "big") == decoded.s
    assert 35 + 2 * 1 + signature[64] == decoded.v


def test_given_ethereum_tests_high_nonce_when_recovered_then_its_sender():
    decoded = ethereum.decode(bytes.fromhex(HIGH_NONCE_RAW))
    assert decoded.chain_id is None   # signed before EIP-155
    assert decoded.nonce == 2**32
    assert ethereum.recover(decoded) == HIGH_NONCE_SENDER


def test_given_documented_key_when_address_derived_then_eth_accounts_address():
    assert ethereum.address_of(DOC_KEY) == DOC_ADDRESS == Account.from_key(DOC_KEY).address.lower()


def test_given_same_transaction_when_signed_twice_then_same_bytes():
    assert ethereum.sign(a_transaction(), DOC_KEY) == ethereum.sign(a_transaction(), DOC_KEY)


# -- byte for byte against eth-account -------------------------------------------------------
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx=unsigned_txs, private_key=private_keys)
def test_given_random_eip1559_tx_when_signed_then_eth_accounts_bytes_hash_and_sender(
        tx, private_key):
    raw, tx_hash, signing_hash = ethereum.sign(tx, private_key)

    reference = Account.sign_transaction(as_eth_account(tx), private_key)
    assert raw == bytes(reference.raw_transaction)
    assert tx_hash == bytes(reference.hash)
    assert signing_hash == TypedTransaction.from_dict(as_eth_account(tx)).hash()
    sender = Account.from_key(private_key).address.lower()
    assert ethereum.address_of(private_key) == sender
    assert Account.recover_transaction(raw).lower() == sender

    decoded = ethereum.decode(raw)
    assert ethereum.recover(decoded) == sender
    assert (decoded.type, decoded.chain_id, decoded.nonce, decoded.gas_limit) == (
        2, tx.chain_id, tx.nonce, tx.gas_limit)
    assert (decoded.to, decoded.value, decoded.data) == (tx.to.lower(), tx.value, tx.data)
    assert (decoded.signing_hash, decoded.tx_hash) == (signing_hash, tx_hash)
    assert (decoded.v, decoded.r, decoded.s) == (reference.v, reference.r, reference.s)


@settings(max_examples=max(EXAMPLES // 5, 10), deadline=None)
@given(tx=unsigned_txs, private_key=private_keys)
def test_given_random_tx_when_signed_then_same_signature_as_pure_python_rfc6979(
        tx, private_key):
    # eth-account uses coincurve itself when it is installed; eth-keys' pure-Python
    # backend is an ECDSA of its own, so this checks the signature independently.
    raw, _, signing_hash = ethereum.sign(tx, private_key)
    decoded = ethereum.decode(raw)
    native = NativeECCBackend()
    signature = native.ecdsa_sign(signing_hash, EthKeysPrivateKey(private_key, backend=native))
    assert (signature.v, signature.r, signature.s) == (decoded.v, decoded.r, decoded.s)


@settings(max_examples=EXAMPLES, deadline=None)
@given(private_key=private_keys, chain_id=st.one_of(st.none(), st.integers(1, UINT64)),
       nonce=st.integers(0, UINT64 - 1), gas_price=st.integers(0, UINT256),
       gas=st.integers(0, UINT64), to=st.one_of(st.none(), addresses),
       value=st.integers(0, UINT256), data=st.binary(max_size=300))
def test_given_random_legacy_tx_signed_by_eth_account_when_decoded_then_fields_and_sender(
        private_key, chain_id, nonce, gas_price, gas, to, value, data):
    fields: dict[str, object] = {"nonce": nonce, "gasPrice": gas_price, "gas": gas,
                                 "value": value, "data": data,
                                 "to": to_checksum_address(to) if to else b""}
    if chain_id is not None:
        fields["chainId"] = chain_id
    signed = Account.sign_transaction(fields, private_key)

    decoded = ethereum.decode(bytes(signed.raw_transaction))
    assert ethereum.recover(decoded) == Account.from_key(private_key).address.lower()
    assert decoded.tx_hash == bytes(signed.hash)
    assert (decoded.type, decoded.chain_id, decoded.nonce, decoded.gas_limit) == (
        0, chain_id, nonce, gas)
    assert (decoded.to, decoded.value, decoded.data) == (to, value, data)
    assert (decoded.v, decoded.r, decoded.s) == (signed.v, signed.r, signed.s)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.recursive(st.binary(max_size=80),
                    lambda children: st.lists(children, max_size=6), max_leaves=30))
def test_given_any_rlp_item_when_encoded_and_decoded_then_same_item(item):
    assert ethereum.rlp_decode(ethereum.rlp_encode(item)) == item


# -- tampered, truncated, refused ------------------------------------------------------------
SIGNED, _, _ = ethereum.sign(a_transaction(), DOC_KEY)


@settings(max_examples=EXAMPLES, deadline=None)
@given(position=st.integers(0, len(SIGNED) - 1), mask=st.integers(1, 255))
def test_given_any_flipped_byte_when_verified_then_refused_or_another_sender(position, mask):
    tampered = bytearray(SIGNED)
    tampered[position] ^= mask
    try:
        sender = ethereum.recover(ethereum.decode(bytes(tampered)))
    except (MalformedTransaction, BadSignature):
        return
    assert sender != DOC_ADDRESS


# r and s end the transaction: 0xa0 ‖ 32 bytes of r, 0xa0 ‖ 32 bytes of s.
SIGNATURE_BYTES = [*range(len(SIGNED) - 65, len(SIGNED) - 33), *range(len(SIGNED) - 32,
                                                                       len(SIGNED))]


def test_given_the_tampering_target_then_r_and_s_are_full_32_bytes():
    decoded = ethereum.decode(SIGNED)
    assert decoded.r >= 2**248
    assert decoded.s >= 2**248
    assert SIGNED[-66] == SIGNED[-33] == 0xA0


@pytest.mark.parametrize("position", SIGNATURE_BYTES)
def test_given_flipped_signature_byte_when_recovered_then_bad_signature_or_another_sender(
        position):
    tampered = bytearray(SIGNED)
    tampered[position] ^= 0x01
    with contextlib.suppress(BadSignature):
        assert ethereum.recover(ethereum.decode(bytes(tampered))) != DOC_ADDRESS


@pytest.mark.parametrize("length", range(len(SIGNED)))
def test_given_truncated_transaction_when_decoded_then_malformed(length):
    with pytest.raises(MalformedTransaction):
        ethereum.decode(SIGNED[:length])


def resigned(**changes: int) -> bytes:
    """SIGNED with some of its signature fields replaced (y_parity, r, s)."""
    fields = ethereum.rlp_decode(SIGNED[1:])
    assert isinstance(fields, list)
    for name, value in changes.items():
        fields[{"y_parity": 9, "r": 10, "s": 11}[name]] = ethereum._be(value)
    return b"\x02" + ethereum.rlp_encode(fields)


def test_given_high_s_twin_when_recovered_then_bad_signature_per_eip2():
    decoded = ethereum.decode(SIGNED)
    # (r, N - s) with the other parity is the same signature's mirror: valid ECDSA, but
    # EIP-2 refuses it so that a transaction has one signature (and one hash).
    twin = ethereum.decode(resigned(s=N - decoded.s, y_parity=1 - decoded.v))
    with pytest.raises(BadSignature, match="high"):
        ethereum.recover(twin)


@pytest.mark.parametrize("changes", [{"r": 0}, {"s": 0}, {"r": N}, {"y_parity": 2}],
                         ids=["r=0", "s=0", "r=N", "y_parity=2"])
def test_given_signature_out_of_range_when_recovered_then_bad_signature(changes):
    with pytest.raises(BadSignature):
        ethereum.recover(ethereum.decode(resigned(**changes)))


@pytest.mark.parametrize(("raw", "says"), [
    (b"", "empty"),
    (b"\x01" + SIGNED[1:], "type"),
    (SIGNED + b"\x00", "after the end"),
    (b"\x02" + rlp(*[b"\x01"] * 11), "12 fields"),
    (rlp(*[b"\x09"] * 3, b"\x35" * 20, b"\x01", b"", b"\x1d", b"\x01", b"\x01"), "v: 29"),
    (rlp(b"\x00\x09", *[b"\x01"] * 8), "leading zeros"),
    (rlp(*[b"\x09"] * 3, b"\x01" * 19, *[b"\x01"] * 5), "20 bytes"),
    (b"\xc2\x81\x05", "single byte"),
    (b"\xf8\x02\x01\x02", "long form"),
])
def test_given_not_canonical_or_not_a_transaction_when_decoded_then_malformed(raw, says):
    with pytest.raises(MalformedTransaction, match=says):
        ethereum.decode(raw)


def test_given_keccak_then_the_known_empty_digest():
    assert ethereum.keccak(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
