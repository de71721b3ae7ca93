"""Tier 1: the bounty grammar and the decision, on plain values."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from eventing.denominations import DEFAULT_REGISTRY, EXACT
from function.decide import Bounty, Comment, NoBounty, decide
from function.grammar import find_patterns, plain


def comment(body: str, action: str = "created", author_type: str = "User") -> Comment:
    return Comment(action=action, body=body, author_type=author_type)


def test_given_usdc_pattern_when_found_then_symbol_upper_and_amount_exact():
    (pattern,) = find_patterns("I'll pay $usdc:100.50$ for this")
    assert pattern.denomination == "USDC"
    assert pattern.amount == Decimal("100.50")


def test_given_text_without_dollars_when_found_then_nothing():
    assert find_patterns("no bounty here, just $5 and USDC:100") == ()


def test_given_pattern_with_sign_or_exponent_when_found_then_not_a_pattern():
    assert find_patterns("$USDC:-1$ $USDC:1e3$ $USDC:.5$ $USDC:5.$") == ()


def test_given_usdc_100_when_decided_then_bounty_with_base_units():
    assert decide(comment("Bounty: $USDC:100$"), DEFAULT_REGISTRY) == Bounty(
        denomination="USDC", amount="100", amount_base_units="100000000", decimals=6)


def test_given_eth_fraction_when_decided_then_18_decimals():
    decision = decide(comment("$ETH:0.5$"), DEFAULT_REGISTRY)
    assert decision == Bounty("ETH", "0.5", "500000000000000000", 18)


def test_given_more_decimals_than_denomination_when_decided_then_no_bounty():
    assert isinstance(decide(comment("$USDC:0.0000001$"), DEFAULT_REGISTRY), NoBounty)


def test_given_unknown_denomination_when_decided_then_no_bounty():
    assert isinstance(decide(comment("$DOGE:100$"), DEFAULT_REGISTRY), NoBounty)


def test_given_zero_amount_when_decided_then_no_bounty():
    assert isinstance(decide(comment("$DAI:0$"), DEFAULT_REGISTRY), NoBounty)


def test_given_unknown_then_known_pattern_when_decided_then_first_known_counts():
    decision = decide(comment("$DOGE:5$ or $DAI:7$ or $ETH:1$"), DEFAULT_REGISTRY)
    assert decision == Bounty("DAI", "7", "7000000000000000000", 18)


def test_given_bot_author_when_decided_then_ignored():
    assert decide(comment("$USDC:1$", author_type="Bot"), DEFAULT_REGISTRY) == NoBounty(
        "comments from bots are ignored")


def test_given_edited_comment_when_decided_then_not_read_in_this_slice():
    assert isinstance(decide(comment("$USDC:1$", action="edited"), DEFAULT_REGISTRY), NoBounty)


@given(units=st.integers(min_value=1, max_value=10**30),
       symbol=st.sampled_from(sorted(DEFAULT_REGISTRY)))
def test_given_any_positive_base_amount_when_written_and_decided_then_round_trips(units, symbol):
    decimals = DEFAULT_REGISTRY[symbol].decimals
    amount = Decimal(units).scaleb(-decimals, context=EXACT)
    written = f"pay ${symbol.lower()}:{plain(amount)}$ please"
    decision = decide(comment(written), DEFAULT_REGISTRY)
    assert decision == Bounty(symbol, plain(amount), str(units), decimals)


@given(st.text())
def test_given_any_text_when_decided_then_never_raises(body):
    assert isinstance(decide(comment(body), DEFAULT_REGISTRY), Bounty | NoBounty)
