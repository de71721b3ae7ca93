"""The event catalog: type names and typed models of every event's data (DESIGN §4).

Models of what arrives from outside (GitHub) ignore fields they do not use;
models of our own events are what consumers can rely on. All are frozen.
Amounts travel as decimal strings plus integer base units as strings, never floats.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

# -- types --------------------------------------------------------------------------------
GITHUB_ISSUE_COMMENT = "dev.knative.source.github.issue_comment"
BOUNTY_REQUESTED = "dev.eventworks.bounty.requested"
KEY_LEASE = "dev.eventworks.key.lease"
KEY_RENEW = "dev.eventworks.key.renew"
KEY_RELEASE = "dev.eventworks.key.release"
KEY_LEASED = "dev.eventworks.key.leased"
KEY_RELEASED = "dev.eventworks.key.released"

DecimalString = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")]
BaseUnits = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]*)$")]
RepositoryName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


# -- GitHub webhooks, as GitHubSource emits them ------------------------------------------
class GitHubUser(Model):
    login: str
    id: int
    type: str = "User"


# GitHub's ISO 8601 timestamps (`2019-05-15T15:20:33Z`); the newest version of a comment or
# body wins when deliveries arrive out of order.
GitHubTime = AwareDatetime


class GitHubRepository(Model):
    id: int
    full_name: RepositoryName


class GitHubIssue(Model):
    number: int = Field(gt=0)
    html_url: str
    # Present when the "issue" is a pull request: GitHub models PR comments as issue comments.
    pull_request: dict[str, object] | None = None
    id: int = 0
    body: str | None = None
    user: GitHubUser | None = None
    author_association: str = "NONE"
    updated_at: GitHubTime | None = None


class GitHubComment(Model):
    id: int
    body: str | None = None
    user: GitHubUser
    author_association: str = "NONE"
    html_url: str = ""
    updated_at: GitHubTime | None = None


class IssueCommentEvent(Model):
    """`issue_comment` webhook payload (the parts eventworks reads)."""

    action: str
    issue: GitHubIssue
    comment: GitHubComment
    repository: GitHubRepository
    sender: GitHubUser


class IssuesEvent(Model):
    """`issues` webhook payload: the issue body is a bounty source too."""

    action: str
    issue: GitHubIssue
    repository: GitHubRepository
    sender: GitHubUser


class GitHubPullRequest(Model):
    id: int
    number: int = Field(gt=0)
    html_url: str = ""
    title: str = ""
    body: str | None = None
    user: GitHubUser
    author_association: str = "NONE"
    merged: bool | None = None
    updated_at: GitHubTime | None = None


class PullRequestEvent(Model):
    """`pull_request` webhook payload: its body is a bounty source; a merge may claim."""

    action: str
    pull_request: GitHubPullRequest
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
    # What `comment_id` is the id of: an issue comment, or the body of an issue or a
    # pull request (then it is that issue's or pull request's id).
    source_kind: Literal["comment", "issue", "pull_request"] = "comment"
    chain_id: int = Field(default=1, gt=0)


# -- key pool (sign-tx ↔ lease-key, CloudEvents request/reply over HTTP) ------------------
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
# etcd lease ids are positive int64s, beyond the 2^53 that JSON numbers carry exactly in every
# language: they travel as lowercase hex, the way etcdctl prints them (1 … 7fffffffffffffff).
LeaseId = Annotated[str, StringConstraints(
    pattern=r"^([1-7][0-9a-f]{15}|[1-9a-f][0-9a-f]{0,14})$")]
# Visible ASCII, no spaces: these end up in etcd records, failure records and logs.
Token = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]


class KeyLease(Model):
    """Lease the least recently used free key of the pool for `ttl_seconds`."""

    worker_id: Token
    # etcd grants at least its minimum lease TTL (2 s by default): see `KeyLeased.ttl_seconds`.
    ttl_seconds: int = Field(ge=1, le=600)
    request_id: Token | None = None


class KeyRenew(Model):
    lease_id: LeaseId


class KeyRelease(Model):
    lease_id: LeaseId
    address: Address


class KeyLeased(Model):
    """The key `address` is locked for this lease until `expires_at` unless renewed.
    Never the private key or its ciphertext: sign-tx reads those from etcd itself."""

    address: Address
    lease_id: LeaseId
    # The etcd revision that created the lock: higher for every later lease of any key.
    fencing_token: int = Field(gt=0)
    expires_at: AwareDatetime
    ttl_seconds: int = Field(gt=0)  # as granted by etcd (it may raise a smaller request)


class KeyReleased(Model):
    address: Address
    lease_id: LeaseId


# -- signing pipeline (batch reader / link-identity → sign-tx → verify-tx) -----------------
TX_SIGN_REQUESTED = "dev.eventworks.tx.sign.requested"
TX_SIGNED = "dev.eventworks.tx.signed"
TX_VERIFIED = "dev.eventworks.tx.verified"
TX_REJECTED = "dev.eventworks.tx.rejected"
PAYOUT_REQUESTED = "dev.eventworks.payout.requested"

HexData = Annotated[str, StringConstraints(pattern=r"^0x([0-9a-fA-F]{2})*$")]
Hash32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
RequestId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]
RejectReason = Literal["bad_signature", "sender_mismatch", "chain_mismatch", "double_sign",
                       "stale_lease", "malformed"]


class TxSignRequested(Model):
    """Sign an EIP-1559 transaction. Amounts are integer base units as decimal strings."""

    request_id: RequestId
    chain_id: int = Field(gt=0)
    to: Address
    value: BaseUnits
    data: HexData = "0x"
    gas_limit: int = Field(gt=0)
    max_fee_per_gas: BaseUnits
    max_priority_fee_per_gas: BaseUnits


class TxSigned(Model):
    """A signed transaction; `from` is the key's address, `fencing_token` its lease's."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    request_id: RequestId
    sender: Address = Field(alias="from")
    chain_id: int = Field(gt=0)
    nonce: int = Field(ge=0)
    tx_hash: Hash32
    raw_tx: HexData
    fencing_token: int = Field(gt=0)


class TxVerified(Model):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    request_id: RequestId
    tx_hash: Hash32
    sender: Address = Field(alias="from")


class TxRejected(Model):
    request_id: RequestId
    tx_hash: Hash32 | None = None
    reason: RejectReason
    detail: str = ""


class PayoutRequested(Model):
    """Pay `amount_base_units` of `denomination` to `to_address` (link-identity → sign-tx)."""

    payout_id: RequestId
    to_address: Address
    denomination: str
    amount_base_units: BaseUnits
    reason: Literal["bounty", "earnings"]
    ref: str


# -- bounty pledges (signing page → verify-tx → parse-comment) ------------------------------
BOUNTY_SIGNED = "dev.eventworks.bounty.signed"
BOUNTY_FUNDED = "dev.eventworks.bounty.funded"
BOUNTY_REJECTED = "dev.eventworks.bounty.rejected"

# 65 bytes r ‖ s ‖ v, as eth_signTypedData_v4 returns it (v 27/28, or 0/1).
Signature = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]
BountyRejectReason = Literal["bad_signature", "signer_mismatch", "terms_mismatch",
                             "domain_mismatch", "malformed"]


class BountySigned(Model):
    """A funder's EIP-712 pledge (`typed_data` as signed, and its `signature`) with the
    terms it must pledge: the bounty's, as `bounty.requested` gave them to the signing
    page. They travel with the pledge because verify-tx cannot read parse-comment's
    records; verify-tx holds the signed message to them. So `bounty.funded` means "this
    funder signed these terms for `bounty_id`": the consumer that holds the bounty's own
    terms (parse-comment) still compares them, since the page is not trusted for them."""

    bounty_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    funder_address: Address
    typed_data: dict[str, Any]
    signature: Signature
    repository: RepositoryName
    issue_number: int = Field(gt=0)
    denomination: Annotated[str, StringConstraints(min_length=1)]
    amount_base_units: BaseUnits
    chain_id: int = Field(gt=0)


class BountyFunded(Model):
    """`funder_address` signed these terms for `bounty_id` (echoed from the pledge, as
    verify-tx checked them): parse-comment compares them with the bounty's own terms."""

    bounty_id: str
    funder_address: Address
    repository: RepositoryName | None = None
    issue_number: int | None = Field(default=None, gt=0)
    denomination: str | None = None
    amount_base_units: BaseUnits | None = None
    chain_id: int | None = Field(default=None, gt=0)


class BountyRejected(Model):
    bounty_id: str
    reason: BountyRejectReason
    detail: str = ""



# -- bounty lifecycle (parse-comment → link-identity, verify-tx, the signing page) ----------
GITHUB_ISSUES = "dev.knative.source.github.issues"
GITHUB_PULL_REQUEST = "dev.knative.source.github.pull_request"
BOUNTY_UPDATED = "dev.eventworks.bounty.updated"
BOUNTY_CANCELLED = "dev.eventworks.bounty.cancelled"
BOUNTY_CLAIMED = "dev.eventworks.bounty.claimed"

# GitHub logins: alphanumerics and single hyphens, at most 39; apps end in "[bot]".
Login = Annotated[str, StringConstraints(
    pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?$")]


class BountyUpdated(BountyRequested):
    """The bounty after an edit of its source (same `bounty_id`, the new terms)."""


class BountyCancelled(Model):
    bounty_id: str
    repository: RepositoryName
    issue_number: int = Field(gt=0)
    reason: str = ""


class BountyClaimed(Model):
    """A merged pull request closed a funded bounty's issue: pay `solver_login`.

    It carries the terms link-identity needs for the payout, because link-identity cannot
    read parse-comment's records."""

    bounty_id: str
    repository: RepositoryName
    issue_number: int = Field(gt=0)
    solver_login: Login
    solver_id: int
    pull_request: int = Field(gt=0)
    pull_request_url: str = ""
    denomination: str
    amount: DecimalString
    amount_base_units: BaseUnits
    decimals: int = Field(ge=0)


def bounty_payout_id(bounty_id: str) -> str:
    """The payout (and so the transaction request) id of a bounty: one payout per bounty,
    whoever asks twice. parse-comment finds the bounty of a `tx.verified` by it."""
    return f"bounty:{bounty_id}"


# -- identity (parse-comment /link → link-identity ↔ signing page) -------------------------
IDENTITY_LINK_STARTED = "dev.eventworks.identity.link.started"
IDENTITY_CHALLENGED = "dev.eventworks.identity.challenged"
IDENTITY_LINK = "dev.eventworks.identity.link"
IDENTITY_LINKED = "dev.eventworks.identity.linked"
IDENTITY_MISSING = "dev.eventworks.identity.missing"


class IssueRef(Model):
    """Where on GitHub a conversation happens, so that the answer lands there."""

    repository: RepositoryName
    issue_number: int = Field(gt=0)


class IdentityLinkStarted(Model):
    github_login: Login
    github_id: int
    address: Address
    where: IssueRef | None = None


class IdentityChallenged(Model):
    github_login: Login
    address: Address
    message: str  # the EIP-4361 text to sign
    expires_at: AwareDatetime
    sign_url: str
    where: IssueRef | None = None


class IdentityLink(Model):
    message: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    signature: Signature


class IdentityLinked(Model):
    github_login: Login
    github_id: int | None = None
    address: Address
    where: IssueRef | None = None


class IdentityMissing(Model):
    """No linked address for `github_login`: the payout `ref` waits for a link."""

    github_login: Login
    reason: str
    ref: str
    where: IssueRef | None = None


# -- todo (client → todo-crud; its facts → accrue-payment) -----------------------------------
TODO_RESULT = "dev.eventworks.todo.result"
TODO_LIST_CREATED = "dev.eventworks.todo.list.created"
TODO_LIST_RENAMED = "dev.eventworks.todo.list.renamed"
TODO_LIST_DELETED = "dev.eventworks.todo.list.deleted"
TODO_TASK_CREATED = "dev.eventworks.todo.task.created"
TODO_TASK_UPDATED = "dev.eventworks.todo.task.updated"
TODO_TASK_ASSIGNED = "dev.eventworks.todo.task.assigned"
TODO_TASK_COMPLETED = "dev.eventworks.todo.task.completed"
TODO_TASK_REOPENED = "dev.eventworks.todo.task.reopened"
TODO_TASK_DELETED = "dev.eventworks.todo.task.deleted"

# A user is the `authid` a trusted edge set from a verified token's subject.
UserId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]
SignedDecimalString = Annotated[
    str, StringConstraints(pattern=r"^(0|-?[1-9][0-9]*(\.[0-9]*[1-9])?|-?0\.[0-9]*[1-9])$")]


class TodoList(Model):
    """A list as todo-crud publishes it (in results and `todo.list.*` facts)."""

    list_id: str
    owner: UserId
    title: str
    version: int = Field(ge=1)
    created_at: AwareDatetime
    updated_at: AwareDatetime


class TodoTask(Model):
    """A task after a change. Every `todo.task.*` fact carries the whole task, its price
    included, so a consumer needs no earlier fact to act on a later one."""

    task_id: str
    list_id: str
    owner: UserId
    title: str
    notes: str = ""
    status: Literal["open", "done"]
    assignee: UserId | None = None
    assign_fee: DecimalString
    reward: DecimalString
    denomination: str
    decimals: int = Field(ge=0)
    version: int = Field(ge=1)
    actor: UserId
    created_at: AwareDatetime
    updated_at: AwareDatetime


# -- accounting (accrue-payment) -------------------------------------------------------------
ACCOUNTING_BALANCE_GET = "dev.eventworks.accounting.balance.get"
ACCOUNTING_BALANCE = "dev.eventworks.accounting.balance"
ACCOUNTING_PAYOUT_DUE = "dev.eventworks.accounting.payout.due"
PING = "dev.knative.sources.ping"


class BalanceGet(Model):
    user: UserId | None = None  # None: the caller's own balance
    # None: accrue-payment's ACCOUNTING_DENOMINATION.
    denomination: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,20}$")


class LedgerEntry(Model):
    entry_id: str
    at: AwareDatetime
    kind: str
    amount: SignedDecimalString  # + credits the user, - debits them
    ref: str


class Balance(Model):
    user: UserId
    balance: SignedDecimalString
    denomination: str
    entries: list[LedgerEntry]


class PayoutDue(Model):
    """The daily close moved a positive balance into a payout (→ link-identity)."""

    payout_id: RequestId
    user: UserId
    denomination: str
    amount: DecimalString
    amount_base_units: BaseUnits
    decimals: int = Field(ge=0)
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


# -- todo commands (client → todo-crud, answered with `todo.result`) -------------------------
# The facts above (`todo.list.*`, `todo.task.*`) are what happened; these are what a user
# asks for. The actor is never in the data: it is the Auth Context (eventing/auth.py).
TODO_LIST_CREATE = "dev.eventworks.todo.list.create"
TODO_LIST_RENAME = "dev.eventworks.todo.list.rename"
TODO_LIST_DELETE = "dev.eventworks.todo.list.delete"
TODO_LIST_GET = "dev.eventworks.todo.list.get"
TODO_LISTS_QUERY = "dev.eventworks.todo.lists.query"
TODO_TASKS_QUERY = "dev.eventworks.todo.tasks.query"
TODO_TASK_CREATE = "dev.eventworks.todo.task.create"
TODO_TASK_UPDATE = "dev.eventworks.todo.task.update"
TODO_TASK_ASSIGN = "dev.eventworks.todo.task.assign"
TODO_TASK_COMPLETE = "dev.eventworks.todo.task.complete"
TODO_TASK_REOPEN = "dev.eventworks.todo.task.reopen"
TODO_TASK_DELETE = "dev.eventworks.todo.task.delete"
TODO_COMMANDS = (TODO_LIST_CREATE, TODO_LIST_RENAME, TODO_LIST_DELETE, TODO_LIST_GET,
                 TODO_LISTS_QUERY, TODO_TASKS_QUERY, TODO_TASK_CREATE, TODO_TASK_UPDATE,
                 TODO_TASK_ASSIGN, TODO_TASK_COMPLETE, TODO_TASK_REOPEN, TODO_TASK_DELETE)

MAX_TITLE = 200
MAX_NOTES = 4000
MAX_PAGE = 100


def _no_control_characters(value: str, allowed: str = "") -> str:
    # Unicode category Cc (C0, DEL, C1): they break terminals, logs and GitHub comments.
    bad = next((c for c in value if (c < " " or "\x7f" <= c <= "\x9f") and c not in allowed),
               None)
    if bad is not None:
        raise ValueError(f"must not contain control characters (found U+{ord(bad):04X})")
    return value


def _title(value: str) -> str:
    _no_control_characters(value)
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _notes(value: str) -> str:
    return _no_control_characters(value, allowed="\n\t")


Title = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE),
                  AfterValidator(_title)]
Notes = Annotated[str, StringConstraints(max_length=MAX_NOTES), AfterValidator(_notes)]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]
ResourceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-"
                                                      r"[0-9a-f]{4}-[0-9a-f]{12}$")]
Cursor = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE)]


class Command(Model):
    # A command with a field it does not know is refused: a typo must not be ignored.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class ListCreate(Command):
    title: Title


class ListRename(Command):
    list_id: ResourceId
    title: Title
    version: Version  # the version the client read: another one is a 409


class ListDelete(Command):
    list_id: ResourceId
    version: Version


class ListGet(Command):
    """A list and a page of its tasks, oldest first."""

    list_id: ResourceId
    cursor: Cursor | None = None
    limit: PageSize = 50


class ListsQuery(Command):
    """The caller's own lists, oldest first, a page at a time."""

    cursor: Cursor | None = None
    limit: PageSize = 50


class TasksQuery(Command):
    """The tasks assigned to the caller, in any list, oldest first."""

    cursor: Cursor | None = None
    limit: PageSize = 50


class TaskCreate(Command):
    list_id: ResourceId
    title: Title
    notes: Notes = ""
    # Only a manager or an admin may set them; otherwise both are drawn at random.
    assign_fee: DecimalString | None = None
    reward: DecimalString | None = None


class TaskUpdate(Command):
    task_id: ResourceId
    version: Version
    title: Title | None = None
    notes: Notes | None = None


class TaskAssign(Command):
    task_id: ResourceId
    version: Version
    assignee: UserId  # a user id: a GitHub login (eventing/auth.py)


class TaskComplete(Command):
    task_id: ResourceId
    version: Version


class TaskReopen(Command):
    task_id: ResourceId
    version: Version


class TaskDelete(Command):
    task_id: ResourceId
    version: Version


class TodoResult(Model):
    """The answer to every todo command (`todo.result`): the resource after it, or a page.

    `command` is the command's type without its prefix (`task.create`) and `command_id`
    its CloudEvent id, so that a client reading results off the broker finds its own;
    `deleted` says
    that `list`/`task` is what was deleted; `next_cursor` (queries, `list.get`) asks for
    the next page, None on the last."""

    command: str
    command_id: str = ""
    list: TodoList | None = None
    task: TodoTask | None = None
    lists: tuple[TodoList, ...] = ()
    tasks: tuple[TodoTask, ...] = ()
    next_cursor: str | None = None
    deleted: bool = False
