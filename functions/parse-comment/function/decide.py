"""What a comment means for bounties: pure code on plain values."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from eventing.denominations import Registry
from function.grammar import find_patterns, plain


@dataclass(frozen=True)
class Comment:
    """The facts of a GitHub comment that decide a bounty."""

    action: str
    body: str
    author_type: str


@dataclass(frozen=True)
class Bounty:
    denomination: str
    amount: str
    amount_base_units: str
    decimals: int


@dataclass(frozen=True)
class NoBounty:
    reason: str


Decision = Bounty | NoBounty


def decide(comment: Comment, registry: Registry) -> Decision:
    """The first well-formed pattern with a known denomination is the bounty.

    This slice handles new comments only; edits, deletes, issue bodies and the
    replies for malformed patterns come with the full bounty app.
    """
    if comment.action != "created":
        return NoBounty(f"comment {comment.action}: only new comments are read")
    if comment.author_type == "Bot":
        return NoBounty("comments from bots are ignored")
    for pattern in find_patterns(comment.body):
        denomination = registry.get(pattern.denomination)
        if denomination is None:
            continue
        if pattern.amount <= Decimal(0):
            continue
        base_units = denomination.base_units(pattern.amount)
        if base_units is None:
            continue
        return Bounty(
            denomination=denomination.symbol,
            amount=plain(pattern.amount),
            amount_base_units=str(base_units),
            decimals=denomination.decimals,
        )
    return NoBounty("no bounty pattern with a known denomination")
