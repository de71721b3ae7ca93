"""Whether a funder's signed EIP-712 pledge funds the bounty its event names: pure code
on plain values (what the typed data says and who signed it, read by `func.read_pledge`).

The first failing check is the reason, in this order: the typed data must hash at all
(malformed); it must be a Pledge in our domain on an allowed chain (domain_mismatch);
its message must be the bounty's terms (terms_mismatch); then the signature must recover
(bad_signature), to the funder (signer_mismatch). What was signed comes before who signed
it: a pledge of other terms funds nothing whoever signed it, and those checks need no
cryptography to explain.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

from eventing.events import BountyRejectReason

# The pledge a funder signs (`eth_signTypedData_v4`); the signing page produces exactly
# this, and any other type, domain or version is another application's signature.
PLEDGE_TYPE = ("Pledge(string bountyId,string repository,uint256 issueNumber,"
               "string denomination,uint256 amountBaseUnits)")
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId)"
DOMAIN_NAME = "eventworks bounty"
DOMAIN_VERSION = "1"


@dataclass(frozen=True)
class Terms:
    """A bounty's terms, in the order of the pledge's message fields (`MESSAGE_FIELDS`)."""

    bounty_id: str
    repository: str
    issue_number: int
    denomination: str
    amount_base_units: int


# The message's own names of the Terms fields, in order: details name what was signed.
MESSAGE_FIELDS = ("bountyId", "repository", "issueNumber", "denomination", "amountBaseUnits")


@dataclass(frozen=True)
class Expected:
    """What the `bounty.signed` event says the pledge must be (the funder lower-case)."""

    funder: str
    chain_id: int
    terms: Terms


@dataclass(frozen=True)
class Unreadable:
    """The typed data is not EIP-712 typed data that can be hashed."""

    why: str


@dataclass(frozen=True)
class Domain:
    name: str
    version: str
    chain_id: int


@dataclass(frozen=True)
class Signed:
    """What the typed data says, and who signed it. `domain` and `terms` are None when
    their types (given here by their encodeType) are not the pledge's."""

    domain_type: str
    primary_type: str
    domain: Domain | None
    terms: Terms | None
    signer: str | None  # lower-case; None when the signature recovers no key
    why_unsigned: str = ""


Reading = Unreadable | Signed


@dataclass(frozen=True)
class Funded:
    bounty_id: str
    funder: str


@dataclass(frozen=True)
class Reject:
    reason: BountyRejectReason
    detail: str


Verdict = Funded | Reject


def _chains(allowed: frozenset[int]) -> str:
    return ", ".join(str(c) for c in sorted(allowed))


def _domain_mismatch(expected: Expected, signed: Signed, allowed: frozenset[int]) -> str | None:
    if signed.domain_type != DOMAIN_TYPE or signed.domain is None:
        return f"the domain is {signed.domain_type}, not {DOMAIN_TYPE}"
    if signed.primary_type != PLEDGE_TYPE or signed.terms is None:
        return f"signed {signed.primary_type}, not {PLEDGE_TYPE}"
    domain = signed.domain
    if (domain.name, domain.version) != (DOMAIN_NAME, DOMAIN_VERSION):
        return (f"domain {domain.name!r} version {domain.version!r}, "
                f"not {DOMAIN_NAME!r} version {DOMAIN_VERSION!r}")
    if domain.chain_id != expected.chain_id:
        return f"signed for chain {domain.chain_id}, the bounty is on chain {expected.chain_id}"
    if expected.chain_id not in allowed:
        return (f"chain {expected.chain_id} is not one of the allowed chains "
                f"{_chains(allowed)}")
    return None


def _terms_mismatch(expected: Terms, signed: Terms) -> str | None:
    differ = [f"{name}: signed {theirs!r}, the bounty's is {ours!r}"
              for name, theirs, ours in zip(MESSAGE_FIELDS, astuple(signed), astuple(expected),
                                            strict=True)
              if theirs != ours]
    return "; ".join(differ) or None


def judge(expected: Expected, reading: Reading, allowed_chains: frozenset[int]) -> Verdict:
    """The pledge against its event's terms: the first failing check, or funded."""
    if isinstance(reading, Unreadable):
        return Reject("malformed", f"typed_data is not EIP-712 typed data: {reading.why}")
    why = _domain_mismatch(expected, reading, allowed_chains)
    if why is not None:
        return Reject("domain_mismatch", why)
    assert reading.terms is not None  # _domain_mismatch refuses a message of another type
    why = _terms_mismatch(expected.terms, reading.terms)
    if why is not None:
        return Reject("terms_mismatch", why)
    if reading.signer is None:
        return Reject("bad_signature", f"the signature does not recover: {reading.why_unsigned}")
    if reading.signer != expected.funder:
        return Reject("signer_mismatch",
                      f"signed by {reading.signer}, the event says funder {expected.funder}")
    return Funded(bounty_id=expected.terms.bounty_id, funder=expected.funder)
