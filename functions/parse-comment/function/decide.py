"""What a webhook or a bounty event means for a bounty: pure code on plain values.

Every function here takes what arrived and what parse-comment has stored for it, and
returns one decision; `func.py` acts on it in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from eventing.denominations import Registry
from function.grammar import (
    Amount,
    Problem,
    Reference,
    closing_references,
    find_candidates,
    is_address,
    link_argument,
    read_amount,
)

SourceKind = Literal["comment", "issue", "pull_request"]
Status = Literal["requested", "funded", "claimed", "paid", "cancelled"]
LIVE: frozenset[str] = frozenset({"requested", "funded"})
DONE: frozenset[str] = frozenset({"claimed", "paid"})
CREATED = frozenset({"created", "opened"})
EDITED = frozenset({"edited"})
DELETED = frozenset({"deleted"})


@dataclass(frozen=True)
class Policy:
    """The settings that decide what a bounty may be and who may offer one."""

    registry: Registry
    maximum: Decimal
    associations: frozenset[str]


@dataclass(frozen=True)
class Source:
    """One version of a bounty source (a comment, an issue body, a pull request body)."""

    kind: SourceKind
    action: str
    body: str
    author_type: str
    sender_type: str
    author_association: str
    updated_at: datetime | None


@dataclass(frozen=True)
class Stored:
    """What parse-comment holds about a source."""

    status: Status
    amount: Amount | None
    deleted: bool
    source_updated_at: datetime | None


# -- reading a body -----------------------------------------------------------------------
@dataclass(frozen=True)
class NoPattern:
    pass


Reading = Amount | Problem | NoPattern


def read_bounty(body: str, policy: Policy) -> Reading:
    """One pattern per source: several are ambiguous (a sum? a choice?), so they are
    explained rather than guessed at."""
    candidates = find_candidates(body)
    if not candidates:
        return NoPattern()
    if len(candidates) > 1:
        written = ", ".join(f"`{c.text}`" for c in candidates)
        return Problem(f"{written}: one bounty per comment, please; post each bounty "
                       f"in a comment of its own.")
    return read_amount(candidates[0], policy.registry, policy.maximum)


# -- a source changed ---------------------------------------------------------------------
@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Open:
    """A new bounty (or a cancelled one offered again): bounty.requested."""

    amount: Amount


@dataclass(frozen=True)
class Change:
    """New terms for a live bounty: bounty.updated; a pledge for the old ones lapses."""

    amount: Amount


@dataclass(frozen=True)
class Cancel:
    reason: str


@dataclass(frozen=True)
class Tombstone:
    """Deleted before parse-comment knew of a bounty there: remember it, say nothing,
    so that a late `created` or `edited` does not bring it back."""


@dataclass(frozen=True)
class Explain:
    """No bounty, and the author is told why, once per source."""

    text: str


@dataclass(frozen=True)
class Link:
    address: str


SourceDecision = Ignore | Open | Change | Cancel | Tombstone | Explain | Link

OUTSIDER = ("thanks for the offer! Only the repository's owners, members and collaborators "
            "can put a bounty on an issue here, so this one was not recorded.")


def settled_without_state(source: Source, policy: Policy) -> Ignore | None:
    """Ignore when `decide_source` ignores this version whatever is stored about its source
    (most webhooks: bots, actions that do not change text, a new comment with neither a
    bounty nor a command); None when the answer depends on what is stored. The edge then
    answers without touching the database (func.py)."""
    if "Bot" in (source.author_type, source.sender_type):
        return Ignore("bots are ignored (our own replies among them)")
    if source.action not in DELETED | CREATED | EDITED:
        return Ignore(f"{source.kind} {source.action}: not a change of its text")
    # A new source with no pattern: known already (an edit came first) or not, it is
    # ignored unless it is a command.
    if source.action in CREATED and isinstance(read_bounty(source.body, policy), NoPattern) \
            and (source.kind != "comment" or link_argument(source.body) is None):
        return Ignore("no bounty pattern and no command")
    return None


def decide_source(source: Source, stored: Stored | None, policy: Policy) -> SourceDecision:
    settled = settled_without_state(source, policy)
    if settled is not None:
        return settled
    if source.action in DELETED:
        return _deleted(stored)
    if stored is not None and stored.deleted:
        return Ignore("the source was deleted")
    if stored is not None and source.action in CREATED:
        return Ignore("already known: an edit arrived before its creation")
    if (stored is not None and source.updated_at is not None
            and stored.source_updated_at is not None
            and source.updated_at < stored.source_updated_at):
        return Ignore("stale: a newer version of the source was applied")
    reading = read_bounty(source.body, policy)
    if isinstance(reading, NoPattern):
        if stored is not None and stored.status in LIVE:
            return Cancel("the bounty pattern was removed")
        return _command(source)
    if stored is not None and stored.status in DONE:
        return Ignore("a claimed bounty keeps its terms")
    if source.author_association not in policy.associations:
        return Explain(OUTSIDER) if stored is None or stored.status not in LIVE \
            else Ignore("the author may not change bounties")
    if isinstance(reading, Problem):
        if stored is not None and stored.status in LIVE:
            return Cancel(f"the bounty pattern is no longer valid: {reading.text}")
        return Explain(reading.text)
    if stored is None or stored.status == "cancelled":
        return Open(reading)
    if stored.amount == reading:
        return Ignore("the terms did not change")
    return Change(reading)


def _deleted(stored: Stored | None) -> SourceDecision:
    if stored is None or stored.status == "cancelled":
        return Tombstone()
    if stored.status in DONE:
        return Ignore("a claimed bounty is paid even if its comment is deleted")
    return Cancel("the comment with the bounty was deleted")


def _command(source: Source) -> SourceDecision:
    if source.kind != "comment" or source.action not in CREATED:
        return Ignore("no bounty pattern")
    argument = link_argument(source.body)
    if argument is None:
        return Ignore("no bounty pattern and no command")
    if not is_address(argument):
        return Explain("to link your wallet, write `/link 0x…` with your 40-hex-digit "
                       "Ethereum address on a line of its own.")
    return Link(argument)


# -- funding --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pledged:
    """The terms a `bounty.funded` says the funder signed."""

    repository: str | None
    issue_number: int | None
    denomination: str | None
    amount_base_units: int | None
    chain_id: int | None


@dataclass(frozen=True)
class Terms:
    repository: str
    issue_number: int
    amount: Amount
    chain_id: int


@dataclass(frozen=True)
class Fund:
    """Funded; `claim`: a merge claimed it before the pledge arrived (its claim was
    recorded, `decide_claims`), so the funding also claims it for that pull request."""

    claim: bool = False


@dataclass(frozen=True)
class Refuse:
    """The pledge is not for this bounty's terms: not funded; the funder is told."""

    reason: str


FundingDecision = Fund | Refuse | Ignore


def decide_funding(status: Status | None, terms: Terms | None, pledged: Pledged,
                   pending_claim: int | None = None) -> FundingDecision:
    """`pending_claim`: the pull request whose merge claimed the bounty while it was
    requested (the merge and the pledge travel apart, so either may arrive first)."""
    if status is None or terms is None:
        return Ignore("no such bounty here")
    if status in DONE or status == "funded":
        return Ignore(f"the bounty is {status} already")
    if status == "cancelled":  # a pending claim included: a cancelled bounty is never paid
        return Refuse("the bounty was cancelled before the pledge arrived")
    expected = (terms.repository.lower(), terms.issue_number, terms.amount.denomination,
                terms.amount.base_units, terms.chain_id)
    got = ((pledged.repository or "").lower(), pledged.issue_number,
           (pledged.denomination or "").upper(), pledged.amount_base_units, pledged.chain_id)
    if got != expected:
        return Refuse("the signed pledge is not for the bounty's current terms (was the "
                      "bounty edited after it was signed?); please sign again")
    return Fund(claim=pending_claim is not None)


# -- claims ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidacy:
    """A bounty on an issue the merged pull request references."""

    bounty_id: str
    status: Status
    pull_request: int | None  # the pull request that claimed it (pending if requested)


@dataclass(frozen=True)
class Claim:
    bounty_id: str


@dataclass(frozen=True)
class Unfunded:
    """Claimed before it was funded: the claim is recorded and takes effect at funding."""

    bounty_id: str


@dataclass(frozen=True)
class Taken:
    bounty_id: str
    by: int


ClaimOutcome = Claim | Unfunded | Taken


def references(title: str, body: str, repository: str) -> tuple[Reference, ...]:
    """The issues of `repository` or others a merged pull request closes or claims."""
    found = closing_references(f"{title}\n{body}")
    return tuple(Reference(r.repository or repository, r.number) for r in found)


def decide_claims(pull_request: int, bounties: Sequence[Candidacy]) -> tuple[ClaimOutcome, ...]:
    """One claim per bounty: the first merged pull request wins, a later one is reported and
    not paid. A bounty not funded yet is claimed all the same, pending: the pledge may be
    decided already and only arrive after the merge (they travel apart); it is paid when
    the funding arrives. Cancelled bounties are passed by."""
    outcomes: list[ClaimOutcome] = []
    for bounty in bounties:
        if bounty.status == "funded":
            outcomes.append(Claim(bounty.bounty_id))
        elif bounty.status == "requested" and bounty.pull_request in (None, pull_request):
            outcomes.append(Unfunded(bounty.bounty_id))
        elif bounty.status in DONE | {"requested"} \
                and bounty.pull_request not in (None, pull_request):
            outcomes.append(Taken(bounty.bounty_id, bounty.pull_request or 0))
    return tuple(outcomes)
