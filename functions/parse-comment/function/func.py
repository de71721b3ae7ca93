"""parse-comment: the GitHub-facing side of the bounty app.

decode (the edge) → decide (pure, function.decide) → act (one transaction in schema
`parse_comment` with the event's inbox row; the bot's GitHub comment written inside it,
function.bot, a first post announced just before on a connection of its own) → answer (at
most one reply event).

GitHub webhooks: a bounty pattern in a comment, an issue body or a pull request body
opens, changes or cancels that source's bounty; `/link 0x…` starts identity linking; a
merged pull request that closes a bounty's issue claims it (an unfunded one pending, paid
when its `bounty.funded` arrives). Bounty and identity events from verify-tx and
link-identity move the bounty's one bot comment along: requested → funded → claimed →
paid (or cancelled).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from psycopg import AsyncConnection
from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from eventing.database import Database
from eventing.denominations import DEFAULT_REGISTRY, Registry, registry_from_json
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.events import (
    BOUNTY_CANCELLED,
    BOUNTY_CLAIMED,
    BOUNTY_FUNDED,
    BOUNTY_REJECTED,
    BOUNTY_REQUESTED,
    BOUNTY_UPDATED,
    GITHUB_ISSUE_COMMENT,
    GITHUB_ISSUES,
    GITHUB_PULL_REQUEST,
    IDENTITY_CHALLENGED,
    IDENTITY_LINK_STARTED,
    IDENTITY_LINKED,
    IDENTITY_MISSING,
    TX_REJECTED,
    TX_VERIFIED,
    BountyCancelled,
    BountyClaimed,
    BountyFunded,
    BountyRejected,
    BountyRequested,
    BountyUpdated,
    GitHubUser,
    IdentityChallenged,
    IdentityLinked,
    IdentityLinkStarted,
    IdentityMissing,
    IssueCommentEvent,
    IssueRef,
    IssuesEvent,
    PullRequestEvent,
    TxRejected,
    TxVerified,
    bounty_payout_id,
)
from eventing.settings import Settings
from function import render, store
from function.bot import Bot, Credentials
from function.decide import (
    Cancel,
    Change,
    Claim,
    Explain,
    Fund,
    Ignore,
    Link,
    Open,
    Pledged,
    Policy,
    Refuse,
    Source,
    SourceDecision,
    SourceKind,
    Taken,
    Terms,
    Tombstone,
    Unfunded,
    decide_claims,
    decide_funding,
    decide_source,
    references,
    settled_without_state,
)

# bounty_id = uuid5(namespace, repository id + source): stable across edits and renames of
# the repository, the same for every redelivery of the webhook.
BOUNTY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:eventworks:bounty")


def _words(value: object) -> object:
    """A comma-separated list: "OWNER, MEMBER"."""
    if isinstance(value, str):
        return frozenset(part.strip().upper() for part in value.split(",") if part.strip())
    return value


Associations = Annotated[frozenset[str], BeforeValidator(_words), Field(min_length=1)]


class ParseCommentSettings(Settings):
    signing_page_url: str = Field(default="http://127.0.0.1:8080/sign",
                                  alias="SIGNING_PAGE_URL", pattern=r"^https?://")
    # JSON: {"USDC": {"decimals": 6, "contracts": {"1": "0x…"}}, …}; default ETH, USDC, DAI.
    denominations_json: str | None = Field(default=None, alias="BOUNTY_DENOMINATIONS")
    # The largest amount one bounty may offer, in whole units of its denomination.
    max_amount: Decimal = Field(default=Decimal(1_000_000), alias="BOUNTY_MAX_AMOUNT", gt=0)
    # Who may put a bounty on an issue: the GitHub author_association of the source's author.
    associations: Associations = Field(
        default=frozenset({"OWNER", "MEMBER", "COLLABORATOR"}),
        alias="BOUNTY_AUTHOR_ASSOCIATIONS")
    # The chain the signing page asks the funder to sign for (sign-tx's name for it).
    chain_id: int = Field(default=1, alias="SIGNING_CHAIN_ID", gt=0)
    github_api_url: str = Field(default="https://api.github.com", alias="GITHUB_API_URL",
                                pattern=r"^https?://")
    github_token: SecretStr | None = Field(default=None, alias="GITHUB_TOKEN")
    github_app_id: str | None = Field(default=None, alias="GITHUB_APP_ID")
    github_app_private_key: SecretStr | None = Field(default=None,
                                                     alias="GITHUB_APP_PRIVATE_KEY")
    github_app_installation_id: int | None = Field(default=None,
                                                   alias="GITHUB_APP_INSTALLATION_ID")
    github_timeout_seconds: int = Field(default=5, alias="GITHUB_TIMEOUT_SECONDS", ge=1, le=30)
    _registry: Registry = PrivateAttr(default_factory=lambda: DEFAULT_REGISTRY)

    @field_validator("denominations_json")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            registry_from_json(value)
        return value

    @model_validator(mode="after")
    def _has_credentials(self) -> ParseCommentSettings:
        app = (self.github_app_id, self.github_app_private_key, self.github_app_installation_id)
        if self.github_token is None and not all(v is not None for v in app):
            raise ValueError("set GITHUB_TOKEN, or GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY and "
                             "GITHUB_APP_INSTALLATION_ID")
        return self

    def model_post_init(self, context: Any) -> None:
        if self.denominations_json is not None:
            self._registry = registry_from_json(self.denominations_json)

    @property
    def denominations(self) -> Registry:
        return self._registry

    @property
    def policy(self) -> Policy:
        return Policy(self._registry, self.max_amount, self.associations)

    @property
    def credentials(self) -> Credentials:
        return Credentials(
            token=self.github_token.get_secret_value() if self.github_token else None,
            app_id=self.github_app_id,
            private_key=self.github_app_private_key.get_secret_value()
            if self.github_app_private_key else None,
            installation_id=self.github_app_installation_id)


def bounty_id(repository_id: int, source_id: int, kind: SourceKind = "comment") -> str:
    return str(uuid.uuid5(BOUNTY_NAMESPACE, f"github:{repository_id}:{kind}:{source_id}"))


@dataclass(frozen=True)
class Facts:
    """A bounty source as any of the three webhooks describe it."""

    kind: SourceKind
    source_id: int
    repository_id: int
    repository: str
    issue_number: int
    author: GitHubUser
    source: Source

    @property
    def bounty_id(self) -> str:
        return bounty_id(self.repository_id, self.source_id, self.kind)

    @property
    def notice_key(self) -> str:
        return f"notice:{self.kind}:{self.repository_id}:{self.source_id}"


def new() -> Function:
    return Function()


class Function(Edge[ParseCommentSettings]):
    name = "parse-comment"
    schema = "parse_comment"
    outbox = True  # the claims of a merge beyond the first (one reply per delivery)
    settings_type = ParseCommentSettings

    def __init__(self) -> None:
        super().__init__()
        self._bot: Bot | None = None
        self._journal: Database | None = None

    def _start(self, cfg: Mapping[str, str]) -> None:
        super()._start(cfg)
        settings = self.settings
        self._bot = Bot(settings.github_api_url, settings.credentials,
                        timeout=settings.github_timeout_seconds)
        # Announcements of a post commit before the GitHub call, so not in the delivery's
        # transaction: a connection of their own, never one the deliveries wait for.
        assert settings.database_url  # the edge refuses to start a schema without one
        self._journal = Database(settings.database_url, self.schema, pool_size=1)
        self._journal.open_soon()

    def stop(self) -> None:
        bot, self._bot = self._bot, None
        journal, self._journal = self._journal, None
        if bot is not None:
            bot.close()
        if journal is not None:
            journal.close_soon()
        super().stop()

    async def aclose(self) -> None:
        if self._bot is not None:
            self._bot.close()
            self._bot = None
        if self._journal is not None:
            await self._journal.close()
            self._journal = None
        await super().aclose()

    @property
    def bot(self) -> Bot:
        if self._bot is None:
            raise RuntimeError("the function has not been started")
        return self._bot

    def routes(self) -> Mapping[str, Route[Any]]:
        return {
            GITHUB_ISSUE_COMMENT: Route(IssueCommentEvent, self.on_issue_comment,
                                        ignores=self._ignores_comment),
            GITHUB_ISSUES: Route(IssuesEvent, self.on_issues, ignores=self._ignores_issue),
            GITHUB_PULL_REQUEST: Route(PullRequestEvent, self.on_pull_request,
                                       ignores=self._ignores_pull_request),
            BOUNTY_FUNDED: Route(BountyFunded, self.on_funded),
            BOUNTY_REJECTED: Route(BountyRejected, self.on_rejected),
            IDENTITY_CHALLENGED: Route(IdentityChallenged, self.on_challenged),
            IDENTITY_LINKED: Route(IdentityLinked, self.on_linked),
            IDENTITY_MISSING: Route(IdentityMissing, self.on_missing),
            TX_VERIFIED: Route(TxVerified, self.on_tx_verified),
            TX_REJECTED: Route(TxRejected, self.on_tx_rejected),
        }

    # -- GitHub: bounty sources ------------------------------------------------------------
    async def on_issue_comment(self, delivery: Delivery[IssueCommentEvent]) -> Reply | None:
        return await self._source(_tx(delivery), _comment_facts(delivery.data))

    async def on_issues(self, delivery: Delivery[IssuesEvent]) -> Reply | None:
        return await self._source(_tx(delivery), _issue_facts(delivery.data))

    async def on_pull_request(self, delivery: Delivery[PullRequestEvent]) -> Reply | None:
        event = delivery.data
        if event.action == "closed":
            return await self._claims(delivery) if event.pull_request.merged else None
        return await self._source(_tx(delivery), _pull_request_facts(event))

    # What the edge may answer with no I/O at all (Route.ignores): most webhooks.
    def _ignores_comment(self, event: IssueCommentEvent) -> bool:
        return self._settled(_comment_facts(event))

    def _ignores_issue(self, event: IssuesEvent) -> bool:
        return self._settled(_issue_facts(event))

    def _ignores_pull_request(self, event: PullRequestEvent) -> bool:
        if event.action == "closed":
            return not event.pull_request.merged
        return self._settled(_pull_request_facts(event))

    def _settled(self, facts: Facts) -> bool:
        return settled_without_state(facts.source, self.settings.policy) is not None

    async def _source(self, tx: AsyncConnection, facts: Facts) -> Reply | None:
        row = await store.load(tx, facts.bounty_id)
        decision = decide_source(facts.source, row.stored() if row else None,
                                 self.settings.policy)
        return await self._apply(tx, facts, row, decision)

    async def _apply(self, tx: AsyncConnection, facts: Facts, row: store.Bounty | None,
                     decision: SourceDecision) -> Reply | None:
        seen = _newest(row.source_updated_at if row else None, facts.source.updated_at)
        if isinstance(decision, Ignore):
            return None
        if isinstance(decision, Tombstone):
            base = row or self._new_row(facts, "cancelled")
            await store.save(tx, dataclasses.replace(
                base, status="cancelled", deleted=True, source_updated_at=seen))
            return None
        if isinstance(decision, Explain):
            await self._write(tx, facts.notice_key, facts.repository, facts.issue_number,
                              render.notice(facts.author.login, decision.text))
            return None
        if isinstance(decision, Link):
            return Reply(IDENTITY_LINK_STARTED, IdentityLinkStarted(
                github_login=facts.author.login, github_id=facts.author.id,
                address=decision.address,
                where=IssueRef(repository=facts.repository, issue_number=facts.issue_number)),
                subject=facts.author.login)
        if isinstance(decision, Cancel):
            assert row is not None  # decide cancels only a stored bounty
            # Cancellation wins over a claim still waiting for funding: it is dropped,
            # and a bounty offered again later is claimed by a merge after that.
            bounty = dataclasses.replace(
                row, status="cancelled", deleted=facts.source.action == "deleted",
                source_updated_at=seen, note=decision.reason, solver_login=None,
                solver_id=None, pull_request=None, pull_request_url=None)
            await self._record(tx, bounty)
            return Reply(BOUNTY_CANCELLED, BountyCancelled(
                bounty_id=bounty.bounty_id, repository=bounty.repository,
                issue_number=bounty.issue_number, reason=decision.reason),
                subject=_subject(bounty))
        amount = decision.amount
        lapsed = row is not None and row.status == "funded" and isinstance(decision, Change)
        bounty = dataclasses.replace(
            row or self._new_row(facts, "requested"), status="requested",
            funder_login=facts.author.login, funder_id=facts.author.id,
            chain_id=self.settings.chain_id, source_updated_at=seen, funder_address=None,
            note="The terms changed after the pledge was signed: please sign again."
            if lapsed else None, **store.amount_columns(amount))
        await self._record(tx, bounty)
        if isinstance(decision, Open):
            return Reply(BOUNTY_REQUESTED, self._requested(BountyRequested, bounty),
                         subject=_subject(bounty))
        return Reply(BOUNTY_UPDATED, self._requested(BountyUpdated, bounty),
                     subject=_subject(bounty))

    def _new_row(self, facts: Facts, status: Any) -> store.Bounty:
        return store.Bounty(bounty_id=facts.bounty_id, source_kind=facts.kind,
                            source_id=facts.source_id, repository_id=facts.repository_id,
                            repository=facts.repository, issue_number=facts.issue_number,
                            status=status)

    def _requested(self, model: type[BountyRequested], bounty: store.Bounty) -> BountyRequested:
        terms = bounty.terms
        assert terms is not None
        assert bounty.funder_login is not None
        assert bounty.funder_id is not None
        return model(
            bounty_id=bounty.bounty_id, repository=bounty.repository,
            issue_number=bounty.issue_number, comment_id=bounty.source_id,
            funder_login=bounty.funder_login, funder_id=bounty.funder_id,
            denomination=terms.denomination, amount=terms.plain,
            amount_base_units=str(terms.base_units), decimals=terms.decimals,
            sign_url=self._sign_url(bounty), source_kind=bounty.source_kind,
            chain_id=bounty.chain_id or self.settings.chain_id)

    def _sign_url(self, bounty: store.Bounty) -> str:
        terms = bounty.terms
        assert terms is not None
        return render.SignLink(
            page=self.settings.signing_page_url, bounty_id=bounty.bounty_id,
            repository=bounty.repository, issue_number=bounty.issue_number,
            denomination=terms.denomination, amount=terms.plain,
            amount_base_units=terms.base_units, decimals=terms.decimals,
            chain_id=bounty.chain_id or self.settings.chain_id).url()

    # -- GitHub: claims ---------------------------------------------------------------------
    async def _claims(self, delivery: Delivery[PullRequestEvent]) -> Reply | None:
        tx, event = _tx(delivery), delivery.data
        pr = event.pull_request
        if pr.user.type == "Bot":
            return None  # a bot's pull request earns nobody a bounty
        refs = references(pr.title, pr.body or "", event.repository.full_name)
        bounties: dict[str, store.Bounty] = {}
        for ref in refs:
            for bounty in await store.on_issue(tx, ref.repository or "", ref.number):
                bounties.setdefault(bounty.bounty_id, bounty)
        outcomes = decide_claims(pr.number, [b.candidacy() for b in bounties.values()])
        reply: Reply | None = None
        for outcome in outcomes:
            bounty = bounties[outcome.bounty_id]
            if isinstance(outcome, Claim):
                # One reply per delivery: the first claim is the reply; any other bounty
                # this merge claims leaves through the outbox, in the same transaction.
                claimed = dataclasses.replace(
                    bounty, status="claimed", solver_login=pr.user.login, solver_id=pr.user.id,
                    pull_request=pr.number, pull_request_url=pr.html_url,
                    payout_id=bounty_payout_id(bounty.bounty_id), claim_published=True)
                await self._record(tx, claimed)
                if reply is None:
                    reply = Reply(BOUNTY_CLAIMED, self._claimed(claimed), subject=_subject(claimed))
                else:
                    await self.publish(delivery, BOUNTY_CLAIMED, self._claimed(claimed),
                                       subject=_subject(claimed))
            elif isinstance(outcome, Unfunded):
                if bounty.pull_request is None:
                    # The claim waits for the funding (on_funded), which may be decided
                    # already and only be on its way: recorded, not published.
                    pending = dataclasses.replace(
                        bounty, solver_login=pr.user.login, solver_id=pr.user.id,
                        pull_request=pr.number, pull_request_url=pr.html_url)
                    await self._record(tx, pending)
                await self._write(tx, f"claim:{bounty.bounty_id}:{pr.id}", bounty.repository,
                                  bounty.issue_number,
                                  render.unfunded_claim(pr.user.login, pr.number))
            elif isinstance(outcome, Taken):
                await self._write(tx, f"claim:{bounty.bounty_id}:{pr.id}", bounty.repository,
                                  bounty.issue_number,
                                  render.taken_claim(pr.user.login, pr.number, outcome.by))
        return reply

    @staticmethod
    def _claimed(bounty: store.Bounty) -> BountyClaimed:
        terms = bounty.terms
        assert terms is not None
        assert bounty.solver_login is not None
        assert bounty.solver_id is not None
        assert bounty.pull_request is not None
        return BountyClaimed(
            bounty_id=bounty.bounty_id, repository=bounty.repository,
            issue_number=bounty.issue_number, solver_login=bounty.solver_login,
            solver_id=bounty.solver_id, pull_request=bounty.pull_request,
            pull_request_url=bounty.pull_request_url or "", denomination=terms.denomination,
            amount=terms.plain, amount_base_units=str(terms.base_units),
            decimals=terms.decimals)

    # -- bounty events ---------------------------------------------------------------------
    async def on_funded(self, delivery: Delivery[BountyFunded]) -> Reply | None:
        data, tx = delivery.data, _tx(delivery)
        row = await store.load(tx, data.bounty_id)
        terms = None
        if row is not None and row.terms is not None:
            terms = Terms(row.repository, row.issue_number, row.terms,
                          row.chain_id or self.settings.chain_id)
        decision = decide_funding(row.status if row else None, terms, Pledged(
            repository=data.repository, issue_number=data.issue_number,
            denomination=data.denomination,
            amount_base_units=int(data.amount_base_units)
            if data.amount_base_units is not None else None, chain_id=data.chain_id),
            pending_claim=row.pull_request if row and row.status == "requested" else None)
        if row is None or isinstance(decision, Ignore):
            return None
        reply: Reply | None = None
        if isinstance(decision, Fund) and decision.claim:
            # A merge claimed it before this pledge arrived: funded and claimed at once.
            # This is the funded event's only reply, so the claim is it (no outbox needed).
            bounty = dataclasses.replace(
                row, status="claimed", funder_address=data.funder_address, note=None,
                payout_id=bounty_payout_id(row.bounty_id), claim_published=True)
            reply = Reply(BOUNTY_CLAIMED, self._claimed(bounty), subject=_subject(bounty))
        elif isinstance(decision, Fund):
            bounty = dataclasses.replace(row, status="funded",
                                         funder_address=data.funder_address, note=None)
        else:
            assert isinstance(decision, Refuse)
            bounty = dataclasses.replace(row, note=f"A pledge was not accepted: "
                                                   f"{decision.reason}.")
        await self._record(tx, bounty)
        return reply

    async def on_rejected(self, delivery: Delivery[BountyRejected]) -> Reply | None:
        data, tx = delivery.data, _tx(delivery)
        row = await store.load(tx, data.bounty_id)
        if row is None or row.status != "requested":
            return None
        bounty = dataclasses.replace(
            row, note=f"The signed pledge was rejected ({data.reason.replace('_', ' ')}): "
                      f"please sign again.")
        await self._record(tx, bounty)
        return None

    async def on_tx_verified(self, delivery: Delivery[TxVerified]) -> Reply | None:
        data, tx = delivery.data, _tx(delivery)
        row = await store.by_payout(tx, data.request_id)
        if row is None or row.status != "claimed":
            return None  # not a bounty payout (or reported already)
        bounty = dataclasses.replace(row, status="paid", tx_hash=data.tx_hash, note=None)
        await self._record(tx, bounty)
        return None

    async def on_tx_rejected(self, delivery: Delivery[TxRejected]) -> Reply | None:
        data, tx = delivery.data, _tx(delivery)
        row = await store.by_payout(tx, data.request_id)
        if row is None or row.status != "claimed":
            return None
        bounty = dataclasses.replace(
            row, note=f"The payout transaction was rejected ({data.reason.replace('_', ' ')}); "
                      f"the maintainers have been told.")
        await self._record(tx, bounty)
        return None

    # -- identity events -------------------------------------------------------------------
    async def on_challenged(self, delivery: Delivery[IdentityChallenged]) -> Reply | None:
        data = delivery.data
        if data.where is not None:
            await self._write(_tx(delivery), _link_key(data.github_login, data.address),
                              data.where.repository, data.where.issue_number,
                              render.challenge(data.github_login, data.address, data.sign_url))
        return None

    async def on_linked(self, delivery: Delivery[IdentityLinked]) -> Reply | None:
        data = delivery.data
        if data.where is not None:  # edits the challenge comment into "linked"
            await self._write(_tx(delivery), _link_key(data.github_login, data.address),
                              data.where.repository, data.where.issue_number,
                              render.linked(data.github_login, data.address))
        return None

    async def on_missing(self, delivery: Delivery[IdentityMissing]) -> Reply | None:
        data, tx = delivery.data, _tx(delivery)
        where = data.where
        if where is None:  # a bounty payout: ask on the bounty's issue
            row = await store.by_payout(tx, data.ref) or await store.load(tx, data.ref)
            if row is None:
                return None
            where = IssueRef(repository=row.repository, issue_number=row.issue_number)
        await self._write(tx, f"missing:{data.github_login.lower()}:{data.ref}",
                          where.repository, where.issue_number, render.missing(data.github_login))
        return None

    # -- the bot's comments ----------------------------------------------------------------
    async def _record(self, tx: AsyncConnection, bounty: store.Bounty) -> None:
        """Store what the bounty now is, and say it in its one bot comment."""
        await store.save(tx, bounty)
        terms = bounty.terms
        if terms is None:
            return
        view = render.BountyView(
            status=bounty.status, amount=terms.plain, denomination=terms.denomination,
            funder_login=bounty.funder_login or "", sign_url=self._sign_url(bounty),
            funder_address=bounty.funder_address, solver_login=bounty.solver_login,
            pull_request=bounty.pull_request, tx_hash=bounty.tx_hash, note=bounty.note)
        await self._write(tx, f"bounty:{bounty.bounty_id}", bounty.repository,
                          bounty.issue_number, render.bounty_comment(view))

    async def _write(self, tx: AsyncConnection, key: str, repository: str, issue_number: int,
                     body: str) -> None:
        """The bot's comment `key` says `body`, in this transaction (see function.bot)."""
        known = await store.bot_comment(tx, key)
        if known is not None and known.body == body:
            return
        # A first post is announced (and committed) before it is made: only an announced
        # post that was never recorded can exist on GitHub without our knowing its id.
        unsure = known is None and not await self._announce(key, repository, issue_number)
        comment_id = await self.bot.write(repository, issue_number, key, body,
                                          known.comment_id if known else None, unsure=unsure)
        await store.save_bot_comment(tx, key, repository, issue_number, comment_id, body)
        if known is None:
            await store.posted(tx, key)

    async def _announce(self, key: str, repository: str, issue_number: int) -> bool:
        if self._journal is None:
            raise RuntimeError("the function has not been started")
        async with self._journal.transaction() as conn:
            return await store.announce_post(conn, key, repository, issue_number)


def _comment_facts(event: IssueCommentEvent) -> Facts:
    comment = event.comment
    return Facts(
        kind="comment", source_id=comment.id, repository_id=event.repository.id,
        repository=event.repository.full_name, issue_number=event.issue.number,
        author=comment.user,
        source=Source(kind="comment", action=event.action, body=comment.body or "",
                      author_type=comment.user.type, sender_type=event.sender.type,
                      author_association=comment.author_association,
                      updated_at=comment.updated_at))


def _issue_facts(event: IssuesEvent) -> Facts:
    issue = event.issue
    author = issue.user or event.sender
    return Facts(
        kind="issue", source_id=issue.id, repository_id=event.repository.id,
        repository=event.repository.full_name, issue_number=issue.number, author=author,
        source=Source(kind="issue", action=event.action, body=issue.body or "",
                      author_type=author.type, sender_type=event.sender.type,
                      author_association=issue.author_association,
                      updated_at=issue.updated_at))


def _pull_request_facts(event: PullRequestEvent) -> Facts:
    pr = event.pull_request
    return Facts(
        kind="pull_request", source_id=pr.id, repository_id=event.repository.id,
        repository=event.repository.full_name, issue_number=pr.number, author=pr.user,
        source=Source(kind="pull_request", action=event.action, body=pr.body or "",
                      author_type=pr.user.type, sender_type=event.sender.type,
                      author_association=pr.author_association,
                      updated_at=pr.updated_at))


def _tx(delivery: Delivery[Any]) -> AsyncConnection:
    assert delivery.tx is not None  # parse-comment keeps state: the edge always opens one
    return delivery.tx


def _subject(bounty: store.Bounty) -> str:
    return f"{bounty.repository}#{bounty.issue_number}"


def _link_key(login: str, address: str) -> str:
    return f"link:{login.lower()}:{address.lower()}"


def _newest(a: datetime | None, b: datetime | None) -> datetime | None:
    return max((t for t in (a, b) if t is not None), default=None)
