"""verify-tx: recovers the signer of every signed transaction and rejects what is not
what its event claims, or may not stand; and checks funders' EIP-712 bounty pledges.

decode (the edge, then `read`: the raw transaction's own facts) → decide (pure,
function.decide) → act (one transaction in schema `verify`, with the event's inbox row)
→ answer: `tx.verified`, or `tx.rejected` with a reason. A rejection is a verdict,
answered 200 with its event like a verification; only data that fails its model is a 400.

`bounty.signed`: read (`read_pledge`: the typed data's types, domain and message, and its
signer) → judge (pure, function.pledge) → `bounty.funded` or `bounty.rejected`. It writes
nothing but the inbox row, which makes a redelivery get the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from psycopg import AsyncConnection
from pydantic import BeforeValidator, Field

from eventing import eip712, ethereum
from eventing.edge import AnyRoute, Delivery, Edge, Envelope, Reply, Route
from eventing.errors import NotBuilt
from eventing.events import (
    BOUNTY_FUNDED,
    BOUNTY_REJECTED,
    BOUNTY_SIGNED,
    TX_REJECTED,
    TX_SIGNED,
    TX_VERIFIED,
    BountyFunded,
    BountyRejected,
    BountySigned,
    TxRejected,
    TxSigned,
    TxVerified,
)
from eventing.settings import Settings
from function import pledge
from function.decide import (
    Again,
    Claim,
    Decision,
    Decoded,
    Reading,
    Record,
    Reject,
    Seen,
    Slot,
    Undecodable,
    decide,
    screen,
)

# Types this function will answer once their issue is built: 501 until then, which the
# broker retries, rather than the 400 of an unknown type, which it dead-letters. None now.
NOT_BUILT_YET: Mapping[str, str] = {}


def _chain_ids(value: object) -> object:
    """`VERIFY_CHAIN_IDS` is a comma-separated list: "1" or "1, 11155111"."""
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    return value


ChainIds = Annotated[frozenset[Annotated[int, Field(gt=0, lt=2**256)]],
                     BeforeValidator(_chain_ids), Field(min_length=1)]


class VerifySettings(Settings):
    # The chains whose transactions and pledges verify-tx accepts; anything else is
    # chain_mismatch (a transaction) or domain_mismatch (a pledge).
    chain_ids: ChainIds = Field(default=frozenset({1}), alias="VERIFY_CHAIN_IDS")


def read(raw_tx: str) -> Reading:
    """What the raw transaction says about itself, and who signed it (if anyone)."""
    try:
        tx = ethereum.decode(bytes.fromhex(raw_tx.removeprefix("0x")))
    except ethereum.MalformedTransaction as exc:
        return Undecodable(str(exc))
    try:
        signer: str | None = ethereum.recover(tx)
        why_unsigned = ""
    except ethereum.BadSignature as exc:
        signer, why_unsigned = None, str(exc)
    return Decoded(tx_hash=tx.tx_hash, signing_hash=tx.signing_hash, chain_id=tx.chain_id,
                   nonce=tx.nonce, signer=signer, why_unsigned=why_unsigned)


def read_pledge(typed_data: Mapping[str, Any], signature: str) -> pledge.Reading:
    """What the typed data says (its types as their encodeType, its domain and message
    when they are of the pledge's types) and who signed it, if anyone."""
    try:
        digest = eip712.digest(typed_data)  # first: it checks every value against its type
        types = eip712.struct_types(typed_data)
        domain_type = eip712.encode_type(eip712.DOMAIN, types)
        primary_type = eip712.encode_type(typed_data["primaryType"], types)
    except eip712.MalformedTypedData as exc:
        return pledge.Unreadable(str(exc))
    domain, message = typed_data["domain"], typed_data["message"]
    try:
        signer: str | None = eip712.recover_digest(digest, bytes.fromhex(signature[2:]))
        why_unsigned = ""
    except ethereum.BadSignature as exc:
        signer, why_unsigned = None, str(exc)
    return pledge.Signed(
        domain_type=domain_type, primary_type=primary_type,
        domain=pledge.Domain(name=domain["name"], version=domain["version"],
                             chain_id=eip712.integer(domain["chainId"]))
        if domain_type == pledge.DOMAIN_TYPE else None,
        terms=pledge.Terms(bounty_id=message["bountyId"], repository=message["repository"],
                           issue_number=eip712.integer(message["issueNumber"]),
                           denomination=message["denomination"],
                           amount_base_units=eip712.integer(message["amountBaseUnits"]))
        if primary_type == pledge.PLEDGE_TYPE else None,
        signer=signer, why_unsigned=why_unsigned)


def expected_of(data: BountySigned) -> pledge.Expected:
    return pledge.Expected(
        funder=data.funder_address.lower(), chain_id=data.chain_id,
        terms=pledge.Terms(bounty_id=data.bounty_id, repository=data.repository,
                           issue_number=data.issue_number, denomination=data.denomination,
                           amount_base_units=int(data.amount_base_units)))


def claim_of(data: TxSigned) -> Claim:
    return Claim(request_id=data.request_id, sender=data.sender.lower(), chain_id=data.chain_id,
                 nonce=data.nonce, tx_hash=bytes.fromhex(data.tx_hash[2:]),
                 fencing_token=data.fencing_token)


def sender_lock(sender: str) -> int:
    """The advisory lock key of a sender: a stable 64-bit hash (a collision only makes two
    senders wait for each other, never mixes their records)."""
    digest = hashlib.sha256(f"eventworks:verify:{sender}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def new() -> Function:
    return Function()


class Function(Edge[VerifySettings]):
    name = "verify-tx"
    schema = "verify"
    settings_type = VerifySettings

    def __init__(self) -> None:
        super().__init__()
        # What each decision answers: a rejection is a verdict, not an error.
        self._answers: Mapping[type[Decision], Callable[[TxSigned, Any], Reply]] = {
            Record: self._verified, Again: self._verified, Reject: self._rejected}

    def routes(self) -> Mapping[str, Route[Any]]:
        return {TX_SIGNED: Route(TxSigned, self.on_tx_signed),
                BOUNTY_SIGNED: Route(BountySigned, self.on_bounty_signed)}

    def route_for(self, event_type: str) -> AnyRoute:
        if event_type in NOT_BUILT_YET:
            raise NotBuilt(f"{self.name} does not handle {event_type} yet: "
                           f"{NOT_BUILT_YET[event_type]}")
        return super().route_for(event_type)

    # -- tx.signed ------------------------------------------------------------------------
    async def on_tx_signed(self, delivery: Delivery[TxSigned]) -> Reply:
        data, tx = delivery.data, delivery.tx
        assert tx is not None  # the function has a schema: the edge opened its transaction
        claim = claim_of(data)
        screened = screen(claim, read(data.raw_tx), self.settings.chain_ids)
        decision: Decision = screened if isinstance(screened, Reject) else decide(
            screened, await self._seen(tx, screened))
        if isinstance(decision, Record):  # Again and Reject write nothing but the inbox row
            await self._record(tx, decision.slot, claim, delivery.envelope)
        return self._answers[type(decision)](data, decision)

    # -- bounty.signed ----------------------------------------------------------------------
    async def on_bounty_signed(self, delivery: Delivery[BountySigned]) -> Reply:
        # Nothing to record: the verdict depends on the event alone, and the edge's inbox
        # (in the transaction it opened) answers a redelivery with the same bytes.
        data = delivery.data
        verdict = pledge.judge(expected_of(data), read_pledge(data.typed_data, data.signature),
                               self.settings.chain_ids)
        if isinstance(verdict, pledge.Funded):
            # Echoed as the event spelled it (it matched): consumers join on it.
            # The terms too: the consumer that holds the bounty (parse-comment) compares
            # them with its own, since the page that sent them is not trusted for them.
            return Reply(BOUNTY_FUNDED, BountyFunded(
                bounty_id=data.bounty_id, funder_address=data.funder_address,
                repository=data.repository, issue_number=data.issue_number,
                denomination=data.denomination, amount_base_units=data.amount_base_units,
                chain_id=data.chain_id), subject=data.bounty_id)
        return Reply(BOUNTY_REJECTED, BountyRejected(bounty_id=data.bounty_id,
                                                     reason=verdict.reason,
                                                     detail=verdict.detail),
                     subject=data.bounty_id)

    @staticmethod
    def _verified(data: TxSigned, decision: Record | Again) -> Reply:
        # Echoed as the event spelled them (they matched): consumers join on them.
        return Reply(TX_VERIFIED, TxVerified(request_id=data.request_id, tx_hash=data.tx_hash,
                                             sender=data.sender), subject=data.request_id)

    @staticmethod
    def _rejected(data: TxSigned, decision: Reject) -> Reply:
        return Reply(TX_REJECTED, TxRejected(request_id=data.request_id, tx_hash=data.tx_hash,
                                             reason=decision.reason, detail=decision.detail),
                     subject=data.request_id)

    @staticmethod
    async def _seen(tx: AsyncConnection, slot: Slot) -> Seen:
        # One verification per sender at a time, until this transaction ends: the fence
        # and the slot read here must not change before the decision on them is written.
        # (Its own statement: a statement's snapshot is taken before it waits for a lock.)
        await tx.execute("SELECT pg_advisory_xact_lock(%s)", (sender_lock(slot.sender),))
        # The fence of a slot is the highest token recorded at this nonce or below: a lease
        # that signed a later nonce took the key after this signature's lease may have,
        # and tx.signed events arrive in any order (redeliveries, unordered Triggers).
        cur = await tx.execute(
            "SELECT (SELECT max(fencing_token) FROM signed"
            "         WHERE sender = %(sender)s AND chain_id = %(chain_id)s"
            "           AND nonce <= %(nonce)s),"
            "       (SELECT signing_hash FROM signed"
            "         WHERE sender = %(sender)s AND chain_id = %(chain_id)s"
            "           AND nonce = %(nonce)s)",
            {"sender": slot.sender, "chain_id": slot.chain_id, "nonce": slot.nonce})
        row = await cur.fetchone()
        assert row is not None  # a SELECT without FROM returns one row
        highest, signing_hash = row
        return Seen(highest_token=highest,
                    signing_hash=None if signing_hash is None else bytes(signing_hash))

    @staticmethod
    async def _record(tx: AsyncConnection, slot: Slot, claim: Claim, envelope: Envelope) -> None:
        await tx.execute(
            "INSERT INTO signed (sender, chain_id, nonce, signing_hash, tx_hash, request_id,"
            "                    fencing_token, event_source, event_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (slot.sender, slot.chain_id, slot.nonce, slot.signing_hash, claim.tx_hash,
             claim.request_id, slot.fencing_token, envelope.source, envelope.id))
