"""What sign-tx signs for a request: pure decisions on plain values."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventing.denominations import DEFAULT_REGISTRY, Denomination
from function.decide import (
    ERC20_TRANSFER,
    MAX_CHAIN_ID,
    IdReused,
    PayoutGas,
    Refused,
    Replay,
    SignRequest,
    decide_stored,
    erc20_transfer,
    payout_request,
    tx_request,
)

PAYEE = "0x3535353535353535353535353535353535353535"
GAS = PayoutGas(native_gas_limit=21_000, token_gas_limit=100_000,
                max_fee_per_gas=50 * 10**9, max_priority_fee_per_gas=2 * 10**9)


def a_request(**changes: object) -> SignRequest | Refused:
    fields: dict[str, object] = {
        "request_id": "req-1", "chain_id": 1, "to": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        "value": "0", "data": "0xa9059cbb", "gas_limit": 65_000,
        "max_fee_per_gas": "40000000000", "max_priority_fee_per_gas": "2000000000", **changes}
    return tx_request(**fields)  # type: ignore[arg-type]


def a_payout(denomination: str, amount: str = "100", chain_id: int = 1) -> SignRequest | Refused:
    return payout_request(payout_id="payout-1", to_address=PAYEE, denomination=denomination,
                          amount_base_units=amount, registry=DEFAULT_REGISTRY,
                          chain_id=chain_id, gas=GAS)


def test_given_tx_request_when_decided_then_signed_as_asked_with_address_in_lower_case():
    request = a_request()
    assert request == SignRequest(
        request_id="req-1", chain_id=1, to="0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
        value=0, data=bytes.fromhex("a9059cbb"), gas_limit=65_000,
        max_fee_per_gas=40 * 10**9, max_priority_fee_per_gas=2 * 10**9)
    assert isinstance(request, SignRequest)
    unsigned = request.unsigned(7)
    assert (unsigned.nonce, unsigned.chain_id, unsigned.to, unsigned.data) == (
        7, 1, request.to, request.data)


@pytest.mark.parametrize(("changes", "field"), [
    ({"max_priority_fee_per_gas": "40000000001"}, "data.max_priority_fee_per_gas"),
    ({"value": str(2**256)}, "data.value"),
    ({"max_fee_per_gas": str(2**256), "max_priority_fee_per_gas": "0"},
     "data.max_fee_per_gas"),
    ({"gas_limit": 2**64}, "data.gas_limit"),
    ({"chain_id": MAX_CHAIN_ID + 1}, "data.chain_id"),
])
def test_given_request_that_can_never_be_valid_when_decided_then_refused_naming_field(
        changes, field):
    refused = a_request(**changes)
    assert isinstance(refused, Refused)
    assert refused.field == field


def test_given_priority_fee_equal_to_max_fee_when_decided_then_signed():
    assert isinstance(a_request(max_priority_fee_per_gas="40000000000"), SignRequest)


def test_given_eth_payout_when_decided_then_value_transfer_to_payee_with_native_gas():
    request = a_payout("eth", "500000000000000000")
    assert request == SignRequest(
        request_id="payout-1", chain_id=1, to=PAYEE, value=5 * 10**17, data=b"",
        gas_limit=21_000, max_fee_per_gas=GAS.max_fee_per_gas,
        max_priority_fee_per_gas=GAS.max_priority_fee_per_gas)


def test_given_usdc_payout_when_decided_then_transfer_call_to_the_contract_with_token_gas():
    request = a_payout("USDC", "100000000")
    assert isinstance(request, SignRequest)
    assert request.to == DEFAULT_REGISTRY["USDC"].contracts[1].lower()
    assert (request.value, request.gas_limit) == (0, 100_000)
    assert request.data == erc20_transfer(PAYEE, 100_000_000)


@pytest.mark.parametrize(("denomination", "amount", "chain_id", "field", "says"), [
    ("DOGE", "1", 1, "data.denomination", "not a known denomination"),
    ("USDC", "1", 5, "data.denomination", "no token contract on chain 5"),
    ("ETH", "0", 1, "data.amount_base_units", "more than 0"),
    ("ETH", str(2**256), 1, "data.amount_base_units", "256 bits"),
])
def test_given_payout_that_cannot_be_made_when_decided_then_refused(
        denomination, amount, chain_id, field, says):
    refused = a_payout(denomination, amount, chain_id)
    assert isinstance(refused, Refused)
    assert refused.field == field
    assert says in refused.reason


def test_given_registry_with_a_token_on_another_chain_when_paid_there_then_its_contract():
    registry = MappingProxyType({"TOK": Denomination("TOK", 6, MappingProxyType(
        {5: "0x1111111111111111111111111111111111111111"}))})
    request = payout_request(payout_id="p", to_address=PAYEE, denomination="tok",
                             amount_base_units="1", registry=registry, chain_id=5, gas=GAS)
    assert isinstance(request, SignRequest)
    assert (request.chain_id, request.to) == (5, "0x" + "11" * 20)


def test_given_erc20_transfer_then_selector_of_transfer_address_uint256():
    assert ERC20_TRANSFER.hex() == "a9059cbb"


@given(to=st.binary(min_size=20, max_size=20), amount=st.integers(0, 2**256 - 1))
def test_given_any_payee_and_amount_when_encoded_then_abi_words(to, amount):
    data = erc20_transfer("0x" + to.hex(), amount)
    assert len(data) == 4 + 32 + 32
    assert data[4:36] == bytes(12) + to
    assert int.from_bytes(data[36:], "big") == amount


def test_given_same_ask_when_compared_with_stored_then_replay_and_other_ask_is_id_reused():
    request = a_request()
    other = a_request(value="1")
    assert isinstance(request, SignRequest)
    assert isinstance(other, SignRequest)
    assert decide_stored(request, request.digest()) == Replay()
    reused = decide_stored(other, request.digest())
    assert isinstance(reused, IdReused)
    assert "req-1" in reused.reason


def test_given_any_field_changed_then_the_digest_changes():
    base = a_request()
    assert isinstance(base, SignRequest)
    variants = [a_request(request_id="req-2"), a_request(chain_id=5), a_request(to=PAYEE),
                a_request(value="1"), a_request(data="0x"), a_request(gas_limit=65_001),
                a_request(max_fee_per_gas="40000000001"),
                a_request(max_priority_fee_per_gas="1")]
    digests = {v.digest() for v in variants if isinstance(v, SignRequest)}
    assert len(digests) == len(variants)
    assert base.digest() not in digests
    # Only the address's case differs: the same transaction, the same digest.
    same = a_request(to="0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48")
    assert isinstance(same, SignRequest)
    assert same.digest() == base.digest()
