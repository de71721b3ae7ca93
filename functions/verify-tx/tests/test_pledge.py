"""Tier 1: judging a bounty pledge against its event's terms, on plain values (no
cryptography, no database)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from function.pledge import (
    DOMAIN_NAME,
    DOMAIN_TYPE,
    DOMAIN_VERSION,
    PLEDGE_TYPE,
    Domain,
    Expected,
    Funded,
    Reject,
    Signed,
    Terms,
    Unreadable,
    judge,
)

FUNDER = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20
MAINNET = frozenset({1})

TERMS = Terms(bounty_id="b-1", repository="octo/repo", issue_number=7, denomination="USDC",
              amount_base_units=100_000_000)
EXPECTED = Expected(funder=FUNDER, chain_id=1, terms=TERMS)
SIGNED = Signed(domain_type=DOMAIN_TYPE, primary_type=PLEDGE_TYPE,
                domain=Domain(name=DOMAIN_NAME, version=DOMAIN_VERSION, chain_id=1),
                terms=TERMS, signer=FUNDER)


def rejected(verdict: object) -> tuple[str, str]:
    assert isinstance(verdict, Reject), verdict
    return verdict.reason, verdict.detail


def test_given_pledge_of_the_bounty_signed_by_its_funder_when_judged_then_funded():
    assert judge(EXPECTED, SIGNED, MAINNET) == Funded(bounty_id="b-1", funder=FUNDER)


def test_given_unreadable_typed_data_when_judged_then_malformed_with_why():
    assert judge(EXPECTED, Unreadable("message is missing"), MAINNET) == Reject(
        "malformed", "typed_data is not EIP-712 typed data: message is missing")


@pytest.mark.parametrize(("signed", "expected", "allowed", "says"), [
    (replace(SIGNED, domain=Domain("other app", "1", 1)), EXPECTED, MAINNET, "'other app'"),
    (replace(SIGNED, domain=Domain(DOMAIN_NAME, "2", 1)), EXPECTED, MAINNET, "version '2'"),
    (replace(SIGNED, domain=Domain(DOMAIN_NAME, "1", 5)), EXPECTED, MAINNET,
     "signed for chain 5, the bounty is on chain 1"),
    (replace(SIGNED, domain=Domain(DOMAIN_NAME, "1", 5)), replace(EXPECTED, chain_id=5),
     MAINNET, "chain 5 is not one of the allowed chains 1"),
    (replace(SIGNED, domain_type="EIP712Domain(string name,string version,uint256 chainId,"
                                 "address verifyingContract)", domain=None),
     EXPECTED, MAINNET, "verifyingContract"),
    (replace(SIGNED, primary_type="Mail(string contents)", terms=None), EXPECTED, MAINNET,
     "signed Mail(string contents), not Pledge("),
    (replace(SIGNED, signer=None, terms=replace(TERMS, amount_base_units=1),
             domain=Domain(DOMAIN_NAME, "1", 5)), EXPECTED, MAINNET, "chain 5"),
], ids=["name", "version", "other chain", "chain not allowed", "domain type", "not a pledge",
        "before terms and signature"])
def test_given_other_domain_or_type_when_judged_then_domain_mismatch(
        signed, expected, allowed, says):
    reason, detail = rejected(judge(expected, signed, allowed))
    assert reason == "domain_mismatch"
    assert says in detail


def test_given_chain_among_several_allowed_when_judged_then_funded():
    signed = replace(SIGNED, domain=Domain(DOMAIN_NAME, "1", 11155111))
    expected = replace(EXPECTED, chain_id=11155111)
    assert isinstance(judge(expected, signed, frozenset({1, 11155111})), Funded)


@pytest.mark.parametrize(("change", "names"), [
    ({"bounty_id": "b-2"}, "bountyId: signed 'b-2', the bounty's is 'b-1'"),
    ({"repository": "Octo/repo"}, "repository: signed 'Octo/repo', the bounty's is 'octo/repo'"),
    ({"issue_number": 8}, "issueNumber: signed 8, the bounty's is 7"),
    ({"denomination": "DAI"}, "denomination: signed 'DAI', the bounty's is 'USDC'"),
    ({"amount_base_units": 99_999_999}, "amountBaseUnits: signed 99999999, "
                                        "the bounty's is 100000000"),
])
def test_given_pledge_of_other_terms_when_judged_then_terms_mismatch_naming_the_field(
        change, names):
    signed = replace(SIGNED, terms=replace(TERMS, **change))
    assert rejected(judge(EXPECTED, signed, MAINNET)) == ("terms_mismatch", names)


def test_given_several_terms_differ_when_judged_then_each_is_named():
    signed = replace(SIGNED, terms=replace(TERMS, issue_number=8, amount_base_units=1))
    _, detail = rejected(judge(EXPECTED, signed, MAINNET))
    assert detail.startswith("issueNumber: ")
    assert "; amountBaseUnits: " in detail


def test_given_other_terms_and_no_signer_when_judged_then_terms_come_first():
    signed = replace(SIGNED, terms=replace(TERMS, amount_base_units=1), signer=None)
    assert rejected(judge(EXPECTED, signed, MAINNET))[0] == "terms_mismatch"


def test_given_signature_recovering_no_key_when_judged_then_bad_signature_with_why():
    signed = replace(SIGNED, signer=None, why_unsigned="s is zero or high (EIP-2)")
    assert judge(EXPECTED, signed, MAINNET) == Reject(
        "bad_signature", "the signature does not recover: s is zero or high (EIP-2)")


def test_given_pledge_signed_by_someone_else_when_judged_then_signer_mismatch_naming_both():
    assert judge(EXPECTED, replace(SIGNED, signer=OTHER), MAINNET) == Reject(
        "signer_mismatch", f"signed by {OTHER}, the event says funder {FUNDER}")
