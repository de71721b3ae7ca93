"""link-identity: links GitHub accounts to wallet addresses with Sign-In with Ethereum
(EIP-4361, signed with EIP-191 personal_sign), and resolves people to addresses for payouts.

- `identity.link.started` (parse-comment, from a `/link 0x…` comment whose sender GitHub
  authenticated) → a challenge: an EIP-4361 message with a single-use nonce, stored in
  schema `identity` → `identity.challenged` with the signing page's link.
- `identity.link` (the signing page: message + signature) → screen (signature, domain,
  URI, chain, validity window; pure) → judge (the stored challenge of its nonce; pure) →
  link (history kept), the nonce spent → `identity.linked`; payouts that waited for this
  account go out through the outbox in the same transaction. A refusal is a 4xx problem.
- `bounty.claimed`, `accounting.payout.due` → resolve (pure) → `payout.requested` to the
  linked address, or `identity.missing` (the payout waits in schema `identity`).

Every handler acts in the edge's transaction, with the event's inbox row: a redelivery
gets the first answer byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from psycopg import AsyncConnection
from pydantic import Field, TypeAdapter, ValidationError, model_validator

from eventing import siwe
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.errors import EventworksError, Forbidden, InvalidEvent, Unauthorized
from eventing.events import (
    ACCOUNTING_PAYOUT_DUE,
    BOUNTY_CLAIMED,
    IDENTITY_CHALLENGED,
    IDENTITY_LINK,
    IDENTITY_LINK_STARTED,
    IDENTITY_LINKED,
    IDENTITY_MISSING,
    PAYOUT_REQUESTED,
    BountyClaimed,
    IdentityChallenged,
    IdentityLink,
    IdentityLinked,
    IdentityLinkStarted,
    IdentityMissing,
    IssueRef,
    Login,
    PayoutDue,
    PayoutRequested,
    bounty_payout_id,
)
from eventing.settings import Settings
from function import decide
from function.decide import (
    Current,
    Differs,
    Issued,
    Known,
    Link,
    Pay,
    Payout,
    Refusal,
    Terms,
    Wait,
)

_LOGIN: TypeAdapter[str] = TypeAdapter(Login)
DEFAULT_STATEMENT = "Link the GitHub account {login} to this Ethereum address."


# -- refusals: the edge's vocabulary (its class sets the status), one problem type each ------
# 400: never an EIP-4361 message; 401: it proves nothing (no valid signature by its
# address, a nonce we never issued, outside its validity window); 403: proven, but not
# acceptable here (another site or chain, a spent nonce, someone else's challenge).
REFUSALS: Mapping[decide.Reason, tuple[type[EventworksError], str, str]] = {
    "malformed": (InvalidEvent, "siwe-malformed", "Not an EIP-4361 message"),
    "bad_signature": (Unauthorized, "bad-signature", "Bad signature"),
    "unknown_nonce": (Unauthorized, "unknown-nonce", "Unknown nonce"),
    "expired": (Unauthorized, "expired", "Expired"),
    "not_yet_valid": (Unauthorized, "not-yet-valid", "Not yet valid"),
    "wrong_domain": (Forbidden, "wrong-domain", "Made for another site"),
    "wrong_chain": (Forbidden, "wrong-chain", "Chain not allowed"),
    "replay": (Forbidden, "nonce-used", "Nonce already used"),
    "nonce_mismatch": (Forbidden, "nonce-mismatch",
                       "Nonce issued for another account or address"),
    "altered": (Forbidden, "message-altered", "Not the message issued"),
}
PAYOUT_TERMS_DIFFER = (InvalidEvent, "payout-terms-differ",
                       "Payout already asked with other terms")


def problem(kind: tuple[type[EventworksError], str, str], detail: str,
            field: str) -> EventworksError:
    """An error of the vocabulary's class (which the edge maps to a status) carrying its
    own problem type, so a client can tell a replay from an unknown nonce."""
    base, slug, title = kind
    error = base(detail, field=field)
    error.slug, error.title = slug, title
    return error


def refused(refusal: Refusal) -> EventworksError:
    return problem(REFUSALS[refusal.reason], refusal.detail, refusal.field)


# -- settings -----------------------------------------------------------------------------
class LinkSettings(Settings):
    # The signing page (its contract: `?link=<the percent-encoded message>`).
    signing_page_url: str = Field(alias="SIGNING_PAGE_URL", pattern=r"^https?://[^\s#]+$")
    # EIP-4361 domain and URI: a wallet compares the domain with the origin of the page
    # that asks it to sign, so both default to the signing page's.
    siwe_domain: str | None = Field(default=None, alias="SIWE_DOMAIN")
    siwe_uri: str | None = Field(default=None, alias="SIWE_URI")
    siwe_chain_id: int = Field(default=1, alias="SIWE_CHAIN_ID", gt=0, lt=2**256)
    siwe_statement: str = Field(default=DEFAULT_STATEMENT, alias="SIWE_STATEMENT")
    siwe_nonce_ttl_seconds: int = Field(default=900, alias="SIWE_NONCE_TTL_SECONDS",
                                        ge=60, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _issuable(self) -> LinkSettings:
        if "{login}" not in self.siwe_statement:
            raise ValueError("SIWE_STATEMENT must name the GitHub login as {login}")
        try:  # what the settings would issue must be a valid message (siwe checks it)
            decide.challenge(self.terms, login="octocat", address="0x" + "00" * 20,
                             nonce=siwe.new_nonce(), now=datetime.now(UTC))
        except siwe.InvalidSiweMessage as exc:
            raise ValueError(f"SIWE_DOMAIN, SIWE_URI or SIWE_STATEMENT: {exc}") from None
        return self

    @property
    def terms(self) -> Terms:
        return Terms(domain=self.siwe_domain or urlsplit(self.signing_page_url).netloc,
                     uri=self.siwe_uri or self.signing_page_url, chain_id=self.siwe_chain_id,
                     statement=self.siwe_statement,
                     ttl=timedelta(seconds=self.siwe_nonce_ttl_seconds),
                     signing_page_url=self.signing_page_url)


def account_lock(login: str) -> int:
    """The advisory lock key of a GitHub login (case-insensitive, as GitHub's are): a link
    and a payout of one account are decided one at a time, so a payout recorded as waiting
    is never missed by a link committing at the same moment."""
    digest = hashlib.sha256(f"eventworks:identity:{login.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def where_of(repository: str | None, issue: int | None) -> IssueRef | None:
    if repository is None or issue is None:
        return None
    return IssueRef(repository=repository, issue_number=issue)


def earnings_ref(data: PayoutDue) -> str:
    return f"{data.user}/{data.day}"


def new() -> Function:
    return Function()


class Function(Edge[LinkSettings]):
    name = "link-identity"
    schema = "identity"
    outbox = True  # payouts that waited for a link are published when it comes
    settings_type = LinkSettings

    def routes(self) -> Mapping[str, Route[Any]]:
        return {IDENTITY_LINK_STARTED: Route(IdentityLinkStarted, self.on_link_started),
                IDENTITY_LINK: Route(IdentityLink, self.on_link),
                BOUNTY_CLAIMED: Route(BountyClaimed, self.on_bounty_claimed),
                ACCOUNTING_PAYOUT_DUE: Route(PayoutDue, self.on_payout_due)}

    # -- identity.link.started → identity.challenged ----------------------------------------
    async def on_link_started(self, delivery: Delivery[IdentityLinkStarted]) -> Reply:
        data, tx = delivery.data, delivery.tx
        assert tx is not None  # the function has a schema: the edge opened its transaction
        issued = decide.challenge(self.settings.terms, login=data.github_login,
                                  address=data.address, nonce=siwe.new_nonce(),
                                  now=datetime.now(UTC))
        where = data.where
        await tx.execute(
            "INSERT INTO challenges (nonce, github_login, github_id, address, message,"
            "  issued_at, expires_at, where_repository, where_issue, event_source, event_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (issued.message.nonce, data.github_login, data.github_id, data.address.lower(),
             issued.text, issued.issued_at, issued.expires_at,
             where.repository if where else None, where.issue_number if where else None,
             delivery.envelope.source, delivery.envelope.id))
        return Reply(IDENTITY_CHALLENGED, IdentityChallenged(
            github_login=data.github_login, address=issued.message.address,
            message=issued.text, expires_at=issued.expires_at, sign_url=issued.sign_url,
            where=where), subject=data.github_login)

    # -- identity.link → identity.linked (or a 4xx) -----------------------------------------
    async def on_link(self, delivery: Delivery[IdentityLink]) -> Reply:
        data, tx = delivery.data, delivery.tx
        assert tx is not None
        terms, now = self.settings.terms, datetime.now(UTC)
        screened = decide.screen(data.message, bytes.fromhex(data.signature[2:]), now=now,
                                 terms=terms)
        if isinstance(screened, Refusal):
            raise refused(screened)
        issued = await self._issued(tx, screened.nonce)
        verdict = decide.judge(screened, data.message, issued, now=now, terms=terms)
        if isinstance(verdict, Refusal):
            raise refused(verdict)
        where = await self._link(tx, verdict)
        for payout in await self._release(tx, verdict):
            await self.publish(delivery, PAYOUT_REQUESTED, payout, subject=payout.payout_id)
        return Reply(IDENTITY_LINKED, IdentityLinked(
            github_login=verdict.issued.github_login, github_id=verdict.issued.github_id,
            address=verdict.address, where=where), subject=verdict.issued.github_login)

    @staticmethod
    async def _issued(tx: AsyncConnection, nonce: str) -> Issued | None:
        """The challenge of the nonce, locked for this transaction, with its account's lock
        taken first (the order every link and payout of the account takes them in)."""
        query = ("SELECT github_login, github_id, address, message, expires_at,"
                 " used_at IS NOT NULL FROM challenges WHERE nonce = %s")
        cur = await tx.execute(query, (nonce,))
        row = await cur.fetchone()
        if row is None:
            return None
        await tx.execute("SELECT pg_advisory_xact_lock(%s)", (account_lock(row[0]),))
        cur = await tx.execute(query + " FOR UPDATE", (nonce,))
        row = await cur.fetchone()
        assert row is not None  # challenges are never deleted
        login, github_id, address, text, expires_at, used = row
        return Issued(nonce=nonce, github_login=login, github_id=github_id, address=address,
                      text=text, expires_at=expires_at, used=used)

    @staticmethod
    async def _link(tx: AsyncConnection, link: Link) -> IssueRef | None:
        """Spend the nonce (and void the account's other open challenges: a signature
        over an older one must not relink it later), close the account's current link
        and add the new one. Returns where the challenge was asked for."""
        issued = link.issued
        cur = await tx.execute(
            "UPDATE challenges SET used_at = now() WHERE nonce = %s"
            " RETURNING where_repository, where_issue", (issued.nonce,))
        spent = await cur.fetchone()
        assert spent is not None
        await tx.execute(
            "UPDATE challenges SET used_at = now()"
            " WHERE used_at IS NULL AND (github_id = %s OR lower(github_login) = lower(%s))",
            (issued.github_id, issued.github_login))
        await tx.execute(
            "UPDATE links SET superseded_at = now() WHERE superseded_at IS NULL"
            " AND (github_id = %s OR lower(github_login) = lower(%s))",
            (issued.github_id, issued.github_login))
        await tx.execute(
            "INSERT INTO links (github_login, github_id, address, nonce)"
            " VALUES (%s, %s, %s, %s)",
            (issued.github_login, issued.github_id, issued.address, issued.nonce))
        return where_of(*spent)

    @staticmethod
    async def _release(tx: AsyncConnection, link: Link) -> list[PayoutRequested]:
        """The payouts that waited for this account, now resolved to its new address."""
        cur = await tx.execute(
            "UPDATE payouts SET to_address = %s, resolved_at = now()"
            " WHERE to_address IS NULL AND lower(github_login) = lower(%s)"
            "   AND (github_id IS NULL OR github_id = %s)"
            " RETURNING payout_id, denomination, amount_base_units, reason, ref",
            (link.issued.address, link.issued.github_login, link.issued.github_id))
        return [PayoutRequested(payout_id=payout_id, to_address=link.address,
                                denomination=denomination,
                                amount_base_units=str(amount_base_units), reason=reason,
                                ref=ref)
                for payout_id, denomination, amount_base_units, reason, ref
                in sorted(await cur.fetchall())]

    # -- bounty.claimed, accounting.payout.due → payout.requested or identity.missing -------
    async def on_bounty_claimed(self, delivery: Delivery[BountyClaimed]) -> Reply:
        data = delivery.data
        asked = Payout(payout_id=bounty_payout_id(data.bounty_id), reason="bounty",
                       ref=data.bounty_id, github_login=data.solver_login,
                       github_id=data.solver_id, denomination=data.denomination,
                       amount_base_units=int(data.amount_base_units))
        where = IssueRef(repository=data.repository, issue_number=data.issue_number)
        return await self._resolve(delivery, asked, where)

    async def on_payout_due(self, delivery: Delivery[PayoutDue]) -> Reply:
        data = delivery.data
        # A todo user is their token's subject, which is their GitHub login (decisions.md):
        # one that is not a GitHub login can never link an address.
        if not _is_login(data.user):
            raise InvalidEvent(f"user {data.user!r} is not a GitHub login: no address can "
                               "ever be linked to it", field="data.user")
        asked = Payout(payout_id=data.payout_id, reason="earnings", ref=earnings_ref(data),
                       github_login=data.user, github_id=None, denomination=data.denomination,
                       amount_base_units=int(data.amount_base_units))
        return await self._resolve(delivery, asked, None)

    async def _resolve(self, delivery: Delivery[Any], asked: Payout,
                       where: IssueRef | None) -> Reply:
        tx = delivery.tx
        assert tx is not None
        await tx.execute("SELECT pg_advisory_xact_lock(%s)", (account_lock(asked.github_login),))
        resolution = decide.resolve(asked, await self._known(tx, asked.payout_id),
                                    await self._current(tx, asked.github_login))
        if isinstance(resolution, Differs):
            raise problem(PAYOUT_TERMS_DIFFER, resolution.detail, f"data.{resolution.field}")
        if resolution.record:
            await self._record(tx, asked, where,
                               resolution.address if isinstance(resolution, Pay) else None)
        if isinstance(resolution, Wait):
            return Reply(IDENTITY_MISSING, IdentityMissing(
                github_login=asked.github_login, ref=asked.ref, where=where,
                reason="no wallet address is linked to this GitHub account: the payout "
                       "waits for one (comment `/link 0x…`)"), subject=asked.github_login)
        return Reply(PAYOUT_REQUESTED, PayoutRequested(
            payout_id=asked.payout_id, to_address=siwe.eip55(resolution.address),
            denomination=asked.denomination, amount_base_units=str(asked.amount_base_units),
            reason=asked.reason, ref=asked.ref), subject=asked.payout_id)

    @staticmethod
    async def _known(tx: AsyncConnection, payout_id: str) -> Known | None:
        cur = await tx.execute(
            "SELECT reason, ref, github_login, github_id, denomination, amount_base_units,"
            " to_address FROM payouts WHERE payout_id = %s", (payout_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        reason, ref, login, github_id, denomination, amount, to_address = row
        return Known(Payout(payout_id=payout_id, reason=reason, ref=ref, github_login=login,
                            github_id=github_id, denomination=denomination,
                            amount_base_units=int(amount)), to_address)

    @staticmethod
    async def _current(tx: AsyncConnection, login: str) -> Current | None:
        cur = await tx.execute(
            "SELECT github_id, address FROM links"
            " WHERE superseded_at IS NULL AND lower(github_login) = lower(%s)", (login,))
        row = await cur.fetchone()
        return None if row is None else Current(github_id=row[0], address=row[1])

    @staticmethod
    async def _record(tx: AsyncConnection, asked: Payout, where: IssueRef | None,
                      address: str | None) -> None:
        await tx.execute(
            "INSERT INTO payouts (payout_id, reason, ref, github_login, github_id,"
            "  denomination, amount_base_units, where_repository, where_issue, to_address,"
            "  resolved_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            "         CASE WHEN %s::text IS NULL THEN NULL ELSE now() END)"
            " ON CONFLICT (payout_id) DO UPDATE"
            "   SET to_address = EXCLUDED.to_address, resolved_at = EXCLUDED.resolved_at"
            "   WHERE payouts.to_address IS NULL",
            (asked.payout_id, asked.reason, asked.ref, asked.github_login, asked.github_id,
             asked.denomination, asked.amount_base_units,
             where.repository if where else None, where.issue_number if where else None,
             address, address))


def _is_login(user: str) -> bool:
    try:
        _LOGIN.validate_python(user)
    except ValidationError:
        return False
    return True
