"""The event catalog: type names and typed models of every event's data (DESIGN §4).

Models of what arrives from outside (GitHub) ignore fields they do not use;
models of our own events are what consumers can rely on. All are frozen.
Amounts travel as decimal strings plus integer base units as strings, never floats.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

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
    bounty_id: str
    funder_address: Address


class BountyRejected(Model):
    bounty_id: str
    reason: BountyRejectReason
    detail: str = ""

