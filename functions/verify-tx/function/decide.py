"""Whether a signed transaction is what its event claims, and whether it may stand:
pure code on plain values.

Two steps, because only the second needs the database:

- `screen` compares the claim (the `tx.signed` event) with what the raw transaction says
  about itself: malformed, bad signature, sender or chain mismatch. The first failing
  check of `CHECKS`, in order, is the reason.
- `decide` weighs a transaction that passed against what verify-tx recorded before for
  its sender: the same payload again, a stale fencing token, a double sign, or new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventing.events import RejectReason

# EIP-2681: a nonce is at most 2^64 - 1 (no account can ever use one beyond).
MAX_NONCE = 2**64 - 1
# A fencing token is an etcd revision, an int64: a larger one names no lease.
MAX_FENCING_TOKEN = 2**63 - 1


@dataclass(frozen=True)
class Claim:
    """What a `tx.signed` event says about its transaction (addresses lower-case)."""

    request_id: str
    sender: str
    chain_id: int
    nonce: int
    tx_hash: bytes
    fencing_token: int


@dataclass(frozen=True)
class Undecodable:
    """The raw transaction is no transaction at all."""

    why: str


@dataclass(frozen=True)
class Decoded:
    """What the raw transaction says about itself."""

    tx_hash: bytes
    signing_hash: bytes          # the payload: what the key signed
    chain_id: int | None         # None: signed before EIP-155, valid on every chain
    nonce: int
    signer: str | None           # lower-case; None when the signature does not recover
    why_unsigned: str = ""


Reading = Undecodable | Decoded


@dataclass(frozen=True)
class Reject:
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class Slot:
    """A transaction that is what its event claims: the (sender, chain id, nonce) it
    takes, the payload it puts there, and the lease it claims to be written under."""

    sender: str
    chain_id: int
    nonce: int
    signing_hash: bytes
    fencing_token: int


@dataclass(frozen=True)
class Seen:
    """What verify-tx recorded before: the highest fencing token of a payload it recorded
    for the sender at this nonce or a lower one (None: none yet), and the payload recorded
    in the slot (None: free). Nonces are allocated in order under the leases, so a token
    recorded at a LATER nonce says nothing about this one: that signature may simply have
    arrived first."""

    highest_token: int | None
    signing_hash: bytes | None


@dataclass(frozen=True)
class Record:
    """A new payload in a free slot, under a current lease: keep it, raise the fence."""

    slot: Slot


@dataclass(frozen=True)
class Again:
    """The payload already recorded in this slot, delivered again: verified again."""

    slot: Slot


Decision = Record | Again | Reject

# -- screen: the claim against the bytes ---------------------------------------------------
# A check answers None when it passes, else why it fails.
Check = Callable[[Claim, Decoded, frozenset[int]], str | None]


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _hash_differs(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    return None if tx.tx_hash == claim.tx_hash else (
        f"raw_tx hashes to {_hex(tx.tx_hash)}, not to tx_hash {_hex(claim.tx_hash)}")


def _nonce_differs(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    return None if tx.nonce == claim.nonce else (
        f"raw_tx has nonce {tx.nonce}, the event says {claim.nonce}")


def _nonce_beyond_eip2681(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    return None if tx.nonce <= MAX_NONCE else f"nonce {tx.nonce} is above 2^64 - 1 (EIP-2681)"


def _token_no_revision(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    return None if claim.fencing_token <= MAX_FENCING_TOKEN else (
        f"fencing_token {claim.fencing_token} is above 2^63 - 1: no etcd revision")


def _unsigned(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    return None if tx.signer is not None else f"the signature does not recover: {tx.why_unsigned}"


def _other_signer(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    return None if tx.signer == claim.sender else (
        f"signed by {tx.signer}, the event says from {claim.sender}")


def _unprotected(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    # A pre-EIP-155 transaction names no chain and is valid on every one: it can be
    # replayed anywhere, so it is never "on" the event's chain (which always has an id).
    return None if tx.chain_id is not None else (
        "signed without a chain id (pre-EIP-155): replayable on every chain")


def _other_chain(claim: Claim, tx: Decoded, _: frozenset[int]) -> str | None:
    return None if tx.chain_id == claim.chain_id else (
        f"signed for chain {tx.chain_id}, the event says chain {claim.chain_id}")


def _chain_not_allowed(claim: Claim, tx: Decoded, allowed: frozenset[int]) -> str | None:
    return None if claim.chain_id in allowed else (
        f"chain {claim.chain_id} is not one of the allowed chains "
        f"{', '.join(str(c) for c in sorted(allowed))}")


# In order: what the bytes are (malformed), whether they are signed at all, by whom, for
# which chain. The first failing check is the reason: a tampered signature that recovers
# to some other address is a sender mismatch, one that recovers to nothing a bad signature.
CHECKS: tuple[tuple[RejectReason, Check], ...] = (
    ("malformed", _hash_differs),
    ("malformed", _nonce_differs),
    ("malformed", _nonce_beyond_eip2681),
    ("malformed", _token_no_revision),
    ("bad_signature", _unsigned),
    ("sender_mismatch", _other_signer),
    ("chain_mismatch", _unprotected),
    ("chain_mismatch", _other_chain),
    ("chain_mismatch", _chain_not_allowed),
)


def screen(claim: Claim, reading: Reading, allowed_chains: frozenset[int]) -> Reject | Slot:
    """The claim against the raw transaction: the first failing check, or its slot."""
    if isinstance(reading, Undecodable):
        return Reject("malformed", f"raw_tx is not a transaction: {reading.why}")
    for reason, check in CHECKS:
        why = check(claim, reading, allowed_chains)
        if why is not None:
            return Reject(reason, why)
    return Slot(sender=claim.sender, chain_id=claim.chain_id, nonce=claim.nonce,
                signing_hash=reading.signing_hash, fencing_token=claim.fencing_token)


# -- decide: the slot against what was recorded --------------------------------------------
def decide(slot: Slot, seen: Seen) -> Decision:
    """Web3Signer's rule for a (key, slot): the same payload may be signed again, another
    one never; and a write under a lease older than one already used is refused.

    The same payload comes first: it was accepted under its lease when it was new, so a
    redelivery (even one whose lease has since been superseded) writes nothing new.
    A stale lease comes before a double sign: it is the cause, the collision its effect.
    """
    if seen.signing_hash == slot.signing_hash:
        return Again(slot)
    if seen.highest_token is not None and slot.fencing_token < seen.highest_token:
        return Reject("stale_lease", f"fencing_token {slot.fencing_token} is below "
                      f"{seen.highest_token}, already used for {slot.sender}: the lease "
                      "had expired and the key was leased again")
    if seen.signing_hash is not None:
        return Reject("double_sign", f"{slot.sender} already signed another payload "
                      f"({_hex(seen.signing_hash)}) for chain {slot.chain_id}, "
                      f"nonce {slot.nonce}")
    return Record(slot)
