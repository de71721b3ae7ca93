"""Tier 1: screening a claim against its transaction, and the slot's decision, on plain
values (no cryptography, no database)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from function.decide import (
    MAX_FENCING_TOKEN,
    MAX_NONCE,
    Again,
    Claim,
    Decoded,
    Record,
    Reject,
    Seen,
    Slot,
    Undecodable,
    decide,
    screen,
)

SENDER = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20
TX_HASH = bytes(range(32))
PAYLOAD = bytes(range(32, 64))
OTHER_PAYLOAD = bytes(range(64, 96))
MAINNET = frozenset({1})

CLAIM = Claim(request_id="req-1", sender=SENDER, chain_id=1, nonce=7, tx_hash=TX_HASH,
              fencing_token=10)
TX = Decoded(tx_hash=TX_HASH, signing_hash=PAYLOAD, chain_id=1, nonce=7, signer=SENDER)
SLOT = Slot(sender=SENDER, chain_id=1, nonce=7, signing_hash=PAYLOAD, fencing_token=10)


def reason(outcome: object) -> str:
    assert isinstance(outcome, Reject), outcome
    return outcome.reason


# -- screen -----------------------------------------------------------------------------
def test_given_matching_claim_and_tx_when_screened_then_its_slot():
    assert screen(CLAIM, TX, MAINNET) == SLOT


def test_given_undecodable_raw_tx_when_screened_then_malformed_with_why():
    outcome = screen(CLAIM, Undecodable("not RLP"), MAINNET)
    assert outcome == Reject("malformed", "raw_tx is not a transaction: not RLP")


@pytest.mark.parametrize(("claim", "tx", "expected"), [
    (CLAIM, replace(TX, tx_hash=bytes(32)), "malformed"),
    (CLAIM, replace(TX, nonce=8), "malformed"),
    (replace(CLAIM, nonce=MAX_NONCE + 1), replace(TX, nonce=MAX_NONCE + 1), "malformed"),
    (replace(CLAIM, fencing_token=MAX_FENCING_TOKEN + 1), TX, "malformed"),
    (CLAIM, replace(TX, signer=None, why_unsigned="high s"), "bad_signature"),
    (CLAIM, replace(TX, signer=OTHER), "sender_mismatch"),
    (CLAIM, replace(TX, chain_id=5), "chain_mismatch"),
    (CLAIM, replace(TX, chain_id=None), "chain_mismatch"),
    (replace(CLAIM, chain_id=5), replace(TX, chain_id=5), "chain_mismatch"),
], ids=["hash", "nonce", "nonce-beyond-eip2681", "token-beyond-int64", "unrecoverable",
        "other-signer", "other-chain", "pre-eip155", "chain-not-allowed"])
def test_given_one_fault_when_screened_then_its_reason(claim, tx, expected):
    assert reason(screen(claim, tx, MAINNET)) == expected


def test_given_chain_in_allowed_set_when_screened_then_slot_on_that_chain():
    outcome = screen(replace(CLAIM, chain_id=5), replace(TX, chain_id=5), frozenset({1, 5}))
    assert outcome == replace(SLOT, chain_id=5)


def test_given_highest_allowed_nonce_and_token_when_screened_then_slot():
    claim = replace(CLAIM, nonce=MAX_NONCE, fencing_token=MAX_FENCING_TOKEN)
    outcome = screen(claim, replace(TX, nonce=MAX_NONCE), MAINNET)
    assert outcome == replace(SLOT, nonce=MAX_NONCE, fencing_token=MAX_FENCING_TOKEN)


def test_given_tampered_hash_and_bad_signature_when_screened_then_malformed_comes_first():
    tx = replace(TX, tx_hash=bytes(32), signer=None)
    assert reason(screen(CLAIM, tx, MAINNET)) == "malformed"


def test_given_unrecoverable_tx_of_other_chain_when_screened_then_bad_signature_first():
    tx = replace(TX, signer=None, chain_id=5)
    assert reason(screen(CLAIM, tx, MAINNET)) == "bad_signature"


def test_given_other_signer_and_other_chain_when_screened_then_sender_mismatch_first():
    # Who signed is checked before where: the detail names the recovered address.
    outcome = screen(CLAIM, replace(TX, signer=OTHER, chain_id=5), MAINNET)
    assert outcome == Reject("sender_mismatch", f"signed by {OTHER}, the event says from {SENDER}")


def test_given_pre_eip155_tx_when_screened_then_rejected_whatever_chains_are_allowed():
    outcome = screen(CLAIM, replace(TX, chain_id=None), frozenset({1, 5, 11155111}))
    assert reason(outcome) == "chain_mismatch"
    assert "pre-EIP-155" in outcome.detail  # type: ignore[union-attr]


# -- decide -----------------------------------------------------------------------------
def test_given_free_slot_and_no_fence_when_decided_then_record():
    assert decide(SLOT, Seen(highest_token=None, signing_hash=None)) == Record(SLOT)


def test_given_free_slot_and_token_equal_to_fence_when_decided_then_record():
    assert decide(SLOT, Seen(highest_token=10, signing_hash=None)) == Record(SLOT)


def test_given_free_slot_and_token_above_fence_when_decided_then_record():
    assert decide(SLOT, Seen(highest_token=3, signing_hash=None)) == Record(SLOT)


def test_given_token_below_fence_when_decided_then_stale_lease():
    assert reason(decide(SLOT, Seen(highest_token=11, signing_hash=None))) == "stale_lease"


def test_given_other_payload_in_slot_when_decided_then_double_sign():
    outcome = decide(SLOT, Seen(highest_token=10, signing_hash=OTHER_PAYLOAD))
    assert reason(outcome) == "double_sign"
    assert OTHER_PAYLOAD.hex() in outcome.detail  # type: ignore[union-attr]


def test_given_same_payload_in_slot_when_decided_then_verified_again():
    assert decide(SLOT, Seen(highest_token=10, signing_hash=PAYLOAD)) == Again(SLOT)


def test_given_same_payload_under_a_since_superseded_lease_when_decided_then_again():
    # A redelivery of what was accepted under its lease is no new write: not stale.
    assert decide(SLOT, Seen(highest_token=99, signing_hash=PAYLOAD)) == Again(SLOT)


def test_given_other_payload_under_stale_lease_when_decided_then_stale_lease_is_the_cause():
    outcome = decide(SLOT, Seen(highest_token=11, signing_hash=OTHER_PAYLOAD))
    assert reason(outcome) == "stale_lease"


@given(token=st.integers(1, MAX_FENCING_TOKEN),
       highest=st.none() | st.integers(1, MAX_FENCING_TOKEN),
       recorded=st.sampled_from([None, PAYLOAD, OTHER_PAYLOAD]))
def test_given_any_state_when_decided_then_a_new_payload_is_recorded_only_when_allowed(
        token, highest, recorded):
    slot = replace(SLOT, fencing_token=token)
    outcome = decide(slot, Seen(highest_token=highest, signing_hash=recorded))
    assert isinstance(outcome, Record) == (
        recorded is None and (highest is None or token >= highest))
    assert isinstance(outcome, Again) == (recorded == PAYLOAD)
