"""parse-comment: GitHub comments → bounties.

decode (the edge) → decide (pure, function.decide) → act → answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from pydantic import Field, PrivateAttr, field_validator

from eventing.denominations import DEFAULT_REGISTRY, Registry, registry_from_json
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.events import (
    BOUNTY_REQUESTED,
    GITHUB_ISSUE_COMMENT,
    BountyRequested,
    IssueCommentEvent,
)
from eventing.settings import Settings
from function.decide import Bounty, Comment, decide

# bounty_id = uuid5(namespace, repository id + comment id): stable across edits and
# renames of the repository, the same for every redelivery of the webhook.
BOUNTY_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:eventworks:bounty")


class ParseCommentSettings(Settings):
    signing_page_url: str = Field(default="http://127.0.0.1:8080/sign",
                                  alias="SIGNING_PAGE_URL", pattern=r"^https?://")
    # JSON: {"USDC": {"decimals": 6, "contracts": {"1": "0x…"}}, …}; default ETH, USDC, DAI.
    denominations_json: str | None = Field(default=None, alias="BOUNTY_DENOMINATIONS")
    _registry: Registry = PrivateAttr(default_factory=lambda: DEFAULT_REGISTRY)

    @field_validator("denominations_json")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            registry_from_json(value)
        return value

    def model_post_init(self, context: Any) -> None:
        if self.denominations_json is not None:
            self._registry = registry_from_json(self.denominations_json)

    @property
    def denominations(self) -> Registry:
        return self._registry


def bounty_id(repository_id: int, comment_id: int) -> str:
    return str(uuid.uuid5(BOUNTY_NAMESPACE, f"github:{repository_id}:comment:{comment_id}"))


def new() -> Function:
    return Function()


class Function(Edge[ParseCommentSettings]):
    name = "parse-comment"
    schema = "parse_comment"
    settings_type = ParseCommentSettings

    def routes(self) -> Mapping[str, Route[Any]]:
        return {GITHUB_ISSUE_COMMENT: Route(IssueCommentEvent, self.on_issue_comment)}

    async def on_issue_comment(self, delivery: Delivery[IssueCommentEvent]) -> Reply | None:
        event = delivery.data
        decision = decide(
            Comment(action=event.action, body=event.comment.body or "",
                    author_type=event.sender.type),
            self.settings.denominations,
        )
        if not isinstance(decision, Bounty):
            return None
        return Reply(BOUNTY_REQUESTED, self.requested(event, decision),
                     subject=f"{event.repository.full_name}#{event.issue.number}")

    def requested(self, event: IssueCommentEvent, bounty: Bounty) -> BountyRequested:
        the_id = bounty_id(event.repository.id, event.comment.id)
        return BountyRequested(
            bounty_id=the_id,
            repository=event.repository.full_name,
            issue_number=event.issue.number,
            comment_id=event.comment.id,
            funder_login=event.comment.user.login,
            funder_id=event.comment.user.id,
            denomination=bounty.denomination,
            amount=bounty.amount,
            amount_base_units=bounty.amount_base_units,
            decimals=bounty.decimals,
            sign_url=f"{self.settings.signing_page_url}?{urlencode({'bounty': the_id})}",
        )
