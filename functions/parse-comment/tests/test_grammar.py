"""Tier 1: the bounty grammar, /link and closing references, on plain values."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventing.denominations import DEFAULT_REGISTRY, EXACT
from function.decide import NoPattern, Policy, read_bounty
from function.grammar import (
    Amount,
    Problem,
    Reference,
    closing_references,
    find_candidates,
    link_argument,
    plain,
)

POLICY = Policy(DEFAULT_REGISTRY, Decimal(1_000_000), frozenset({"OWNER"}))


def read(body: str) -> Amount | Problem | NoPattern:
    return read_bounty(body, POLICY)


def test_given_usdc_pattern_when_read_then_symbol_upper_and_amount_exact():
    assert read("I'll pay $usdc:100.50$ for this") == Amount("USDC", Decimal("100.50"),
                                                            100_500_000, 6)


def test_given_escaped_pattern_when_read_then_same_as_plain():
    assert read(r"worth \$USDC:100\$ to us") == read("worth $USDC:100$ to us")


def test_given_eth_fraction_when_read_then_18_decimals():
    assert read("$ETH:0.5$") == Amount("ETH", Decimal("0.5"), 5 * 10**17, 18)


@pytest.mark.parametrize("body", ["no bounty here, just $5 and USDC:100", "$x:y$ in math",
                                  "costs $5 or $10", "", "$USDC$", "USDC:100$"])
def test_given_text_without_a_pattern_when_read_then_no_pattern(body):
    assert read(body) == NoPattern()


@pytest.mark.parametrize(("body", "says"), [
    ("$DOGE:100$", "DOGE is not a denomination"),
    ("$USDC:1,000$", "without thousands separators, as `$USDC:1000$`"),
    ("$USDC:1,000,000.5$", "`$USDC:1000000.5$`"),
    ("$USDC:-5$", "more than zero"),
    ("$USDC:0$", "more than zero"),
    ("$USDC:0.000$", "more than zero"),
    ("$USDC:1e3$", "plain decimal number"),
    ("$USDC:5.$", "plain decimal number"),
    ("$USDC:0.0000001$", "USDC has 6 decimals"),
    ("$USDC:1000001$", "at most 1000000 USDC"),
    ("$USDC:1$ and $ETH:2$", "one bounty per comment"),
])
def test_given_malformed_or_unknown_pattern_when_read_then_problem_says_why(body, says):
    problem = read(body)
    assert isinstance(problem, Problem)
    assert says in problem.text


def test_given_leading_dot_or_plus_when_read_then_accepted_as_the_number():
    assert read("$USDC:.5$") == read("$USDC:0.5$") == read("$USDC:+0.5$")


def test_given_exactly_the_maximum_when_read_then_a_bounty():
    assert isinstance(read("$DAI:1000000$"), Amount)


def test_given_spaces_around_the_colon_when_read_then_tolerated():
    assert read("$USDC : 7$") == read("$USDC:7$")


@given(units=st.integers(min_value=1, max_value=10**24),
       symbol=st.sampled_from(sorted(DEFAULT_REGISTRY)),
       escaped=st.booleans(), prefix=st.text(alphabet=st.characters(exclude_characters="$\\")),
       suffix=st.text(alphabet=st.characters(exclude_characters="$\\")))
def test_given_any_valid_amount_anywhere_when_written_and_read_then_round_trips(
        units, symbol, escaped, prefix, suffix):
    decimals = DEFAULT_REGISTRY[symbol].decimals
    amount = Decimal(units).scaleb(-decimals, context=EXACT)
    dollar = "\\$" if escaped else "$"
    written = f"{prefix} {dollar}{symbol.lower()}:{plain(amount)}{dollar} {suffix}"
    reading = read(written)
    if amount > POLICY.maximum:
        assert isinstance(reading, Problem)
    else:
        assert reading == Amount(symbol, amount, units, decimals)


@given(st.text())
def test_given_any_text_when_read_then_never_raises_and_answers_one_of_three(body):
    assert isinstance(read(body), Amount | Problem | NoPattern)


@given(st.text(alphabet=st.characters(exclude_characters="$")))
def test_given_text_without_dollars_when_read_then_never_a_pattern(body):
    assert find_candidates(body) == ()


@given(amount=st.decimals(min_value=Decimal("0.0000001"), max_value=Decimal(10**6),
                          allow_nan=False, allow_infinity=False, places=7))
def test_given_more_decimals_than_usdc_has_when_read_then_problem_never_rounded(amount):
    reading = read(f"$USDC:{plain(amount)}$")
    if amount == amount.quantize(Decimal("0.000001")):
        assert isinstance(reading, Amount)
        assert Decimal(reading.base_units).scaleb(-6) == amount
    else:
        assert isinstance(reading, Problem)


# -- /link ---------------------------------------------------------------------------------
def test_given_link_command_on_its_own_line_when_read_then_its_argument():
    address = "0x" + "ab" * 20
    assert link_argument(f"hello\n/link {address}\nthanks") == address
    assert link_argument("/link") == ""
    assert link_argument("please /link 0xabc inline") is None


# -- closing references ----------------------------------------------------------------------
@pytest.mark.parametrize(("text", "refs"), [
    ("Fixes #1", [Reference(None, 1)]),
    ("closes #12, resolves #13", [Reference(None, 12), Reference(None, 13)]),
    ("Resolved: #7", [Reference(None, 7)]),
    ("/claim #4", [Reference(None, 4)]),
    ("fixes octo/widgets#9", [Reference("octo/widgets", 9)]),
    ("Closes https://github.com/octo/widgets/issues/21", [Reference("octo/widgets", 21)]),
    ("FIXED #3 and fix #3", [Reference(None, 3)]),
    ("see #5; prefixes #6; suffix#7", []),
    ("fixes #0", []),
])
def test_given_pull_request_text_when_read_then_closing_references(text, refs):
    assert list(closing_references(text)) == refs


@given(keyword=st.sampled_from(["close", "closes", "closed", "fix", "fixes", "fixed",
                                "resolve", "resolves", "resolved"]),
       number=st.integers(min_value=1, max_value=999_999_999))
def test_given_any_closing_keyword_when_read_then_the_issue(keyword, number):
    assert closing_references(f"This {keyword.upper()} #{number}.") == (Reference(None, number),)
