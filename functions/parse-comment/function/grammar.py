"""The bounty grammar: `$<DENOM>:<AMOUNT>$` anywhere in a comment.

Pure text → values; what the values mean is decided in `decide`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from eventing.denominations import EXACT

# A symbol is letters then letters/digits (USDC, ETH, wBTC2); an amount is digits with
# an optional fraction, at most 40 + 40 digits so that arithmetic on it stays exact.
# Anything else between the dollars is not a bounty pattern.
PATTERN = re.compile(
    r"\$(?P<denom>[A-Za-z][A-Za-z0-9]{0,15}):(?P<amount>[0-9]{1,40}(?:\.[0-9]{1,40})?)\$")


@dataclass(frozen=True)
class Pattern:
    """One `$DENOM:AMOUNT$` as written: the symbol upper-cased, the amount exact."""

    denomination: str
    amount: Decimal
    text: str


def find_patterns(body: str) -> tuple[Pattern, ...]:
    found = []
    for match in PATTERN.finditer(body):
        try:
            amount = Decimal(match["amount"])
        except InvalidOperation:  # pragma: no cover - the regex admits only digits
            continue
        found.append(Pattern(match["denom"].upper(), amount, match.group(0)))
    return tuple(found)


def plain(amount: Decimal) -> str:
    """A decimal string with no exponent and no trailing zeros: 100, 0.5."""
    return format(amount.normalize(context=EXACT), "f")
