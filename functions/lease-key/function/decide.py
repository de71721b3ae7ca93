"""Which key a lease gets, and what a renew or release means: pure code on plain values.

The values are what `function.pool` read from etcd in one consistent snapshot; the
decisions are carried out by `function.func` in one etcd transaction each, guarded by the
revisions seen here, so a decision made on a snapshot that has changed since is not
applied (it is made again on a fresh snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# A key usually comes free within milliseconds (a worker releases it when it has signed);
# the holders' lease expiries are only the upper bound. So: ask again in a second.
RETRY_AFTER_SECONDS = 1
# etcd refuses a transaction of more than 128 operations (--max-txn-ops): a lease records
# at most this many expired holders; the next lease records the rest.
MAX_FAILURES_PER_LEASE = 24


@dataclass(frozen=True)
class EventRef:
    """The CloudEvent that asked for a lease: (source, id) is its idempotency key."""

    source: str
    id: str


@dataclass(frozen=True)
class Holding:
    """Who leased a key, for what, and when. Written with the lock, both as the lock's
    value (gone with the etcd lease) and as the key's holder record (kept until the
    release, or until an expiry without release has been recorded as a failure)."""

    address: str
    worker_id: str
    request_id: str | None
    event: EventRef
    lease_id: int
    ttl_seconds: int
    acquired_at: datetime


@dataclass(frozen=True)
class Lock:
    """A lock key, alive while its etcd lease is."""

    address: str
    fencing_token: int  # the lock key's create_revision
    lease_id: int       # the etcd lease the key is bound to
    holding: Holding | None  # None: a value this version cannot read (still locked)


@dataclass(frozen=True)
class Holder:
    """The last acquisition of a key that was not released (yet)."""

    holding: Holding
    # The holder record is written in the lock's transaction and never changed after:
    # its mod_revision is the lock's create_revision, i.e. that lease's fencing token.
    revision: int


@dataclass(frozen=True)
class PoolKey:
    address: str  # EIP-55, as stored
    # mod_revision of the key's last-used entry: etcd's own logical clock, so "least
    # recently used" is the same for every replica of lease-key, whatever their clocks.
    last_used: int


@dataclass(frozen=True)
class Pool:
    """One consistent snapshot of the pool; locks and holders by lower-case address."""

    keys: tuple[PoolKey, ...] = ()
    locks: Mapping[str, Lock] = field(default_factory=dict)
    holders: Mapping[str, Holder] = field(default_factory=dict)


@dataclass(frozen=True)
class LeaseRequest:
    worker_id: str
    ttl_seconds: int
    request_id: str | None
    event: EventRef


# -- decisions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Acquire:
    """Lock `key`; record every holder in `expired` as a failure in the same transaction.
    `replaces` is the chosen key's own expired holder (its record is overwritten)."""

    key: PoolKey
    replaces: Holder | None
    expired: tuple[Holder, ...]


@dataclass(frozen=True)
class Replay:
    """The same event was already given this lock: answer with it again."""

    lock: Lock


@dataclass(frozen=True)
class NoFreeKey:
    reason: str
    retry_after: int = RETRY_AFTER_SECONDS


@dataclass(frozen=True)
class IdInUse:
    """The same event (source, id) holds a lock, asked for with other data."""

    holding: Holding


LeaseDecision = Acquire | Replay | NoFreeKey | IdInUse


def expired_holders(pool: Pool) -> tuple[Holder, ...]:
    """Holders whose lock is gone (or is a newer lock): their lease expired, unreleased.

    A release deletes the holder record in the same transaction as the lock, so a holder
    without its lock can only mean that etcd let the lease run out.
    """
    def lock_gone(address: str, holder: Holder) -> bool:
        lock = pool.locks.get(address)
        return lock is None or lock.fencing_token != holder.revision

    return tuple(sorted((h for a, h in pool.holders.items() if lock_gone(a, h)),
                        key=lambda h: h.revision))


def _same_request(holding: Holding, request: LeaseRequest) -> bool:
    return (holding.worker_id, holding.ttl_seconds, holding.request_id) == (
        request.worker_id, request.ttl_seconds, request.request_id)


def decide_lease(request: LeaseRequest, pool: Pool, *, spread: int = 1,
                 pick: int = 0) -> LeaseDecision:
    """The least recently used free key, or why there is none.

    Ties go to the lowest address, so that every replica decides the same. Under
    contention all contenders read the same snapshot and want the same key, and all but
    one lose its transaction; so a caller that lost `r` times asks again with `spread`
    2^r and a random `pick`: one of the 2^r least recently used free keys. Uncontended,
    the choice is exact LRU; contended, it stays among the least recently used.

    A redelivered request whose event still holds its lock gets that lock again, so that
    a retry never locks a second key.
    """
    for lock in pool.locks.values():
        if lock.holding is not None and lock.holding.event == request.event:
            if _same_request(lock.holding, request):
                return Replay(lock)
            return IdInUse(lock.holding)
    free = [k for k in pool.keys if k.address.lower() not in pool.locks]
    if not free:
        return NoFreeKey("the key pool is empty: import or generate keys" if not pool.keys
                         else f"all {len(pool.keys)} keys of the pool are leased")
    candidates = sorted(free, key=lambda k: (k.last_used, k.address.lower()))[:max(1, spread)]
    key = candidates[pick % len(candidates)]
    expired = expired_holders(pool)
    replaces = next((h for h in expired if h.holding.address.lower() == key.address.lower()),
                    None)
    others = tuple(h for h in expired if h is not replaces)
    chosen = (replaces,) if replaces is not None else ()
    return Acquire(key=key, replaces=replaces,
                   expired=chosen + others[:MAX_FAILURES_PER_LEASE - len(chosen)])


# -- renew and release -------------------------------------------------------------------
@dataclass(frozen=True)
class Renewed:
    lock: Lock
    ttl_seconds: int


@dataclass(frozen=True)
class Gone:
    reason: str


def decide_renew(lease_id: int, ttl_seconds: int, lock: Lock | None) -> Renewed | Gone:
    """`ttl_seconds`: what etcd's keep-alive answered (0: the lease no longer exists)."""
    if ttl_seconds <= 0:
        return Gone(f"lease {lease_id:x} has expired or was released")
    if lock is None or lock.lease_id != lease_id:
        return Gone(f"lease {lease_id:x} holds no key of this pool")
    return Renewed(lock, ttl_seconds)


@dataclass(frozen=True)
class Release:
    lock: Lock


@dataclass(frozen=True)
class NotHeld:
    """The lease does not hold the key (any more): releasing it changes nothing. A
    redelivered release lands here; so does a late one after an expiry, whose failure
    the next lease records."""


def decide_release(lease_id: int, lock: Lock | None) -> Release | NotHeld:
    if lock is None or lock.lease_id != lease_id:
        return NotHeld()
    return Release(lock)


def expires_at(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)
