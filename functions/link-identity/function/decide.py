"""What link-identity decides, as pure code on plain values (no database, no clock).

Three decisions, one per kind of event:

- `challenge`: the EIP-4361 message to issue for a `/link` (identity.link.started).
- `screen` then `judge`: whether a signed message (identity.link) proves that the GitHub
  account the nonce was issued for controls the message's address. `screen` needs only
  the text, the signature and the settings (it is where the signature is recovered);
  `judge` weighs the message against the challenge stored under its nonce.
- `resolve`: a payout (bounty.claimed, accounting.payout.due) against what was recorded
  for it and the account's current link: pay an address, or wait for a link.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import quote

from eventing import ethereum, siwe
from eventing.siwe import SiweMessage

# Why a signed message is refused; func.py maps each to a problem type and status.
Reason = Literal["malformed", "bad_signature", "expired", "not_yet_valid", "wrong_domain",
                 "wrong_chain", "unknown_nonce", "replay", "nonce_mismatch", "altered"]


@dataclass(frozen=True)
class Terms:
    """What link-identity issues and accepts (its settings)."""

    domain: str
    uri: str
    chain_id: int
    statement: str          # a template naming the login as {login}
    ttl: timedelta
    signing_page_url: str


# -- challenge ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Challenge:
    message: SiweMessage
    text: str               # what the wallet signs, byte for byte
    issued_at: datetime
    expires_at: datetime
    sign_url: str


def rfc3339(at: datetime) -> str:
    """Whole seconds, UTC, `Z`: one spelling, so the stored text and the signed one agree."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def statement_for(terms: Terms, login: str) -> str:
    return terms.statement.replace("{login}", login)


def sign_url(signing_page_url: str, text: str) -> str:
    """`{SIGNING_PAGE_URL}?link=<the message, percent-encoded>` (the signing page's
    contract); `&link=` when the page's URL already has a query."""
    joiner = "&" if "?" in signing_page_url else "?"
    return f"{signing_page_url}{joiner}link={quote(text, safe='')}"


def challenge(terms: Terms, *, login: str, address: str, nonce: str,
              now: datetime) -> Challenge:
    issued = now.astimezone(UTC).replace(microsecond=0)
    expires = issued + terms.ttl
    message = SiweMessage(domain=terms.domain, address=siwe.eip55(address),
                          statement=statement_for(terms, login), uri=terms.uri,
                          chain_id=terms.chain_id, nonce=nonce, issued_at=rfc3339(issued),
                          expiration_time=rfc3339(expires))
    text = siwe.format(message)
    return Challenge(message=message, text=text, issued_at=issued, expires_at=expires,
                     sign_url=sign_url(terms.signing_page_url, text))


# -- link ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    reason: Reason
    detail: str
    field: str = "data.message"


@dataclass(frozen=True)
class Issued:
    """A challenge as stored under its nonce."""

    nonce: str
    github_login: str
    github_id: int
    address: str            # lower-case
    text: str
    expires_at: datetime
    used: bool


@dataclass(frozen=True)
class Link:
    """The signed message proves the challenge: link its account to its address."""

    issued: Issued
    address: str            # EIP-55, as the message spells it


# siwe.verify's refusals, in the order it checks them.
_SIWE_REASONS: tuple[tuple[type[Exception], Reason, str], ...] = (
    (siwe.InvalidSiweMessage, "malformed", "data.message"),
    (ethereum.BadSignature, "bad_signature", "data.signature"),
    (siwe.SignatureMismatch, "bad_signature", "data.signature"),
    (siwe.WrongDomain, "wrong_domain", "data.message"),
    (siwe.NotYetValid, "not_yet_valid", "data.message"),
    (siwe.Expired, "expired", "data.message"),
)


def screen(text: str, signature: bytes, *, now: datetime, terms: Terms) -> Refusal | SiweMessage:
    """The message, when it is an EIP-4361 text its own address signed, for our domain, URI
    and chain, and valid now; else the first reason it is not. A message changed after it
    was signed recovers another key: `bad_signature`, whatever field changed."""
    try:
        message = siwe.verify(text, signature, now=now, expected_domain=terms.domain,
                              expected_uri=terms.uri)
    except (siwe.SiweError, ethereum.BadSignature) as exc:
        for kind, reason, field in _SIWE_REASONS:
            if isinstance(exc, kind):
                where = f"{field}.{exc.field}" if isinstance(exc, siwe.InvalidSiweMessage) \
                    else field
                return Refusal(reason, str(exc), where)
        raise  # pragma: no cover - a SiweError without a reason here is a bug
    if message.chain_id != terms.chain_id:
        return Refusal("wrong_chain", f"chain id {message.chain_id} is not {terms.chain_id}")
    return message


def _first_difference(issued: SiweMessage, signed: SiweMessage) -> str | None:
    for field in fields(SiweMessage):
        if getattr(issued, field.name) != getattr(signed, field.name):
            return field.name
    return None


def judge(message: SiweMessage, text: str, issued: Issued | None, *, now: datetime,
          terms: Terms) -> Refusal | Link:
    """A screened message against the challenge stored under its nonce (None: none is).

    The nonce must be ours, unused, issued for the message's address and for the login
    the statement names, and the text must be the one issued byte for byte; a signature
    over any other text (even one its key signed willingly) links nothing."""
    if issued is None:
        return Refusal("unknown_nonce", f"nonce {message.nonce} was never issued here")
    if issued.used:
        return Refusal("replay", f"nonce {message.nonce} was already used (or made void by "
                                 "a later link of the same account)")
    if now >= issued.expires_at:
        return Refusal("expired", f"the challenge expired at {rfc3339(issued.expires_at)}")
    if message.address.lower() != issued.address:
        return Refusal("nonce_mismatch", f"nonce {message.nonce} was issued for another "
                                         "address")
    if message.statement != statement_for(terms, issued.github_login):
        return Refusal("nonce_mismatch", f"nonce {message.nonce} was issued for another "
                                         "GitHub login than the statement names")
    if text != issued.text:
        original = siwe.parse(issued.text)
        field = _first_difference(original, message) or "message"
        return Refusal("altered", f"the message differs from the one issued for nonce "
                                  f"{message.nonce} ({field})")
    return Link(issued=issued, address=message.address)


# -- resolve ------------------------------------------------------------------------------
PayoutReason = Literal["bounty", "earnings"]


@dataclass(frozen=True)
class Payout:
    """What a claim or a due asks to be paid, and to whom (by GitHub login; a bounty
    claim also knows the solver's GitHub id)."""

    payout_id: str
    reason: PayoutReason
    ref: str
    github_login: str
    github_id: int | None
    denomination: str
    amount_base_units: int


@dataclass(frozen=True)
class Known:
    """A payout as recorded before: its terms, and its address once resolved."""

    payout: Payout
    to_address: str | None


@dataclass(frozen=True)
class Current:
    """The account's current link."""

    github_id: int
    address: str            # lower-case


@dataclass(frozen=True)
class Pay:
    address: str            # lower-case
    record: bool            # new or waiting until now: record it as resolved


@dataclass(frozen=True)
class Wait:
    record: bool            # a new payout: record it as waiting for a link


@dataclass(frozen=True)
class Differs:
    """The payout id was recorded with other terms: never paid twice, nor differently."""

    field: str
    detail: str


Resolution = Pay | Wait | Differs


def _terms_differ(known: Payout, asked: Payout) -> str | None:
    for field in ("reason", "denomination", "amount_base_units", "github_id"):
        if getattr(known, field) != getattr(asked, field):
            return field
    if known.github_login.lower() != asked.github_login.lower():
        return "github_login"
    return None


def resolve(asked: Payout, known: Known | None, current: Current | None) -> Resolution:
    """A payout goes to the address it was first resolved to, ever after (the same
    payout id is one transaction downstream); a new one to the current link's address;
    with no link (or a link of another GitHub id under this login: a renamed account's
    login taken by someone else) it waits for one."""
    if known is not None:
        differs = _terms_differ(known.payout, asked)
        if differs is not None:
            return Differs(differs, f"payout {asked.payout_id} was already asked with another "
                                    f"{differs}")
        if known.to_address is not None:
            return Pay(known.to_address, record=False)
    if current is None or (asked.github_id is not None and current.github_id != asked.github_id):
        return Wait(record=known is None)
    return Pay(current.address, record=True)  # new, or waiting until now
