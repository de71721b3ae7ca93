"""The event catalog: type names and typed models of every event's data (DESIGN §4).

Models of what arrives from outside (GitHub) ignore fields they do not use;
models of our own events are what consumers can rely on. All are frozen.
Amounts travel as decimal strings plus integer base units as strings, never floats.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# -- types --------------------------------------------------------------------------------
GITHUB_ISSUE_COMMENT = "dev.knative.source.github.issue_comment"
BOUNTY_REQUESTED = "dev.eventworks.bounty.requested"

DecimalString = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")]
BaseUnits = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]*)$")]
RepositoryName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# -- GitHub webhooks, as GitHubSource emits them ------------------------------------------
class GitHubUser(Model):
    login: str
    id: int
    type: str = "User"


class GitHubRepository(Model):
    id: int
    full_name: RepositoryName


class GitHubIssue(Model):
    number: int = Field(gt=0)
    html_url: str
    # Present when the "issue" is a pull request: GitHub models PR comments as issue comments.
    pull_request: dict[str, object] | None = None


class GitHubComment(Model):
    id: int
    body: str | None = None
    user: GitHubUser
    author_association: str = "NONE"
    html_url: str = ""


class IssueCommentEvent(Model):
    """`issue_comment` webhook payload (the parts eventworks reads)."""

    action: str
    issue: GitHubIssue
    comment: GitHubComment
    repository: GitHubRepository
    sender: GitHubUser


# -- bounty -------------------------------------------------------------------------------
class BountyRequested(Model):
    bounty_id: str
    repository: RepositoryName
    issue_number: int = Field(gt=0)
    comment_id: int
    funder_login: str
    funder_id: int
    denomination: str
    amount: DecimalString
    amount_base_units: BaseUnits
    decimals: int = Field(ge=0)
    sign_url: str
