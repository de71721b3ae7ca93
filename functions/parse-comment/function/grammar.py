"""The bounty grammar and the commands the bot reads: pure text → values.

- `$<DENOM>:<AMOUNT>$` anywhere in a comment, issue body or pull request body, also
  escaped as `\\$USDC:100\\$` (GitHub renders `$…$` as math, so people escape it).
  `find_candidates` finds everything written in that shape, well-formed or not, so that a
  malformed one can be explained; `read_amount` holds one candidate to the registry.
- `/link 0x<address>` on a line of its own.
- closing references of a pull request: `closes #N` (every GitHub closing keyword),
  `/claim #N`, `owner/repo#N` and `https://github.com/owner/repo/issues/N`.

What the values mean is decided in `decide`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from eventing.denominations import EXACT, Registry

# A symbol is letters then letters/digits (USDC, ETH, wBTC2). The amount part is anything
# up to the closing dollar on the same line that holds a digit: `$x:y$` in a formula is not
# a bounty attempt, `$USDC:1,000$` or `$USDC:-5$` is, and gets an explanation.
# Possessive (`*+`): the amount ends at the first `$`, `\` or newline, so nothing need be
# given back. Lazy parts that overlapped the blanks around them backtracked in cubic time
# on an unclosed `$A:1…1 …` (half a minute for 2 KB; an event may be 1 MiB): the
# adversarial inputs of tests/fuzz (seeds.adversarial) keep it linear.
CANDIDATE = re.compile(
    r"\\?\$(?P<denom>[A-Za-z][A-Za-z0-9]{0,15})[ \t]*+:[ \t]*+"
    r"(?P<amount>[^$\\\n0-9]*+[0-9][^$\\\n]*+)\\?\$")
# At most 40 + 40 digits: arithmetic on any amount the grammar admits stays exact.
AMOUNT = re.compile(r"^(?P<whole>[0-9]{1,40})(?:\.(?P<fraction>[0-9]{1,40}))?$")
THOUSANDS = re.compile(r"^[0-9]{1,3}([,' _][0-9]{3})+(\.[0-9]+)?$")
LINK = re.compile(r"^[ \t]*/link(?:[ \t]+(?P<arg>\S+))?[ \t]*$", re.MULTILINE | re.IGNORECASE)
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")

KEYWORDS = ("close", "closes", "closed", "fix", "fixes", "fixed",
            "resolve", "resolves", "resolved")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})"
_REPO = r"[A-Za-z0-9_.-]{1,100}"
REFERENCE = re.compile(
    # `closes #1`, `closes: #1`; possessive blanks: `[ \t]*:?[ \t]+` split a run of
    # blanks every way before failing, quadratic in a long one (tests/fuzz).
    r"(?:(?<![A-Za-z0-9_/])(?:" + "|".join(KEYWORDS) + r")(?:[ \t]*+:[ \t]++|[ \t]++)"
    r"|(?<!\S)/claim[ \t]++)"
    r"(?:https://github\.com/(?P<url_owner>" + _NAME + r")/(?P<url_repo>" + _REPO + r")"
    r"/issues/(?P<url_number>[0-9]{1,9})"
    r"|(?:(?P<owner>" + _NAME + r")/(?P<repo>" + _REPO + r"))?#(?P<number>[0-9]{1,9}))\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    """One `$DENOM:AMOUNT$` as written (the symbol upper-cased, the amount as text)."""

    denomination: str
    amount: str
    text: str


@dataclass(frozen=True)
class Amount:
    """A well-formed amount of a known denomination."""

    denomination: str
    amount: Decimal
    base_units: int
    decimals: int

    @property
    def plain(self) -> str:
        return plain(self.amount)


@dataclass(frozen=True)
class Problem:
    """Why a candidate is no bounty, in words for the person who wrote it."""

    text: str


def find_candidates(body: str) -> tuple[Candidate, ...]:
    return tuple(Candidate(m["denom"].upper(), m["amount"].rstrip(" \t"), m.group(0))
                 for m in CANDIDATE.finditer(body))


def read_amount(candidate: Candidate, registry: Registry, maximum: Decimal) -> Amount | Problem:
    written = f"`{candidate.text}`"
    denomination = registry.get(candidate.denomination)
    if denomination is None:
        known = ", ".join(sorted(registry))
        return Problem(f"{written}: {candidate.denomination} is not a denomination this app "
                       f"pays in (it knows {known}).")
    text = candidate.amount
    if THOUSANDS.match(text):
        digits = re.sub(r"[,' _]", "", text)
        return Problem(f"{written}: write the amount without thousands separators, "
                       f"as `${denomination.symbol}:{digits}$`.")
    if text.startswith("-"):
        return Problem(f"{written}: a bounty must be more than zero.")
    if text.startswith("."):
        text = "0" + text
    match = AMOUNT.match(text.removeprefix("+"))
    if match is None:
        return Problem(f"{written}: the amount must be a plain decimal number such as "
                       f"`100` or `0.5`.")
    amount = Decimal(match.group(0))
    if amount <= 0:
        return Problem(f"{written}: a bounty must be more than zero.")
    if amount > maximum:
        return Problem(f"{written}: a bounty may be at most {plain(maximum)} "
                       f"{denomination.symbol}.")
    base_units = denomination.base_units(amount)
    if base_units is None:
        return Problem(f"{written}: {denomination.symbol} has {denomination.decimals} "
                       f"decimals; the amount has more.")
    return Amount(denomination.symbol, amount, base_units, denomination.decimals)


def link_argument(body: str) -> str | None:
    """What follows `/link` on a line of its own ("" when nothing), None without `/link`."""
    match = LINK.search(body)
    if match is None:
        return None
    return match["arg"] or ""


def is_address(text: str) -> bool:
    return ADDRESS.match(text) is not None


@dataclass(frozen=True)
class Reference:
    """An issue a pull request says it closes or claims; repository None = its own."""

    repository: str | None
    number: int


def closing_references(text: str) -> tuple[Reference, ...]:
    """Every issue the text closes or claims, in order, each once."""
    seen: dict[tuple[str | None, int], Reference] = {}
    for m in REFERENCE.finditer(text):
        if m["url_number"] is not None:
            ref = Reference(f"{m['url_owner']}/{m['url_repo']}", int(m["url_number"]))
        else:
            repository = f"{m['owner']}/{m['repo']}" if m["owner"] else None
            ref = Reference(repository, int(m["number"]))
        if ref.number > 0:
            key = (ref.repository.lower() if ref.repository else None, ref.number)
            seen.setdefault(key, ref)
    return tuple(seen.values())


def plain(amount: Decimal) -> str:
    """A decimal string with no exponent and no trailing zeros: 100, 0.5."""
    return format(amount.normalize(context=EXACT), "f")
