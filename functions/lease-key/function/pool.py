"""The key pool in etcd: its layout, its records, and the few operations lease-key does.

Under ETCD_PREFIX (default `/eventworks/keys/`), addresses in lower case:

    keys/<address>        the encrypted private key (`python -m stack.keys`); never read here
    used/<address>        {"address", "last_used_at"}; its mod_revision orders "least recently"
    locks/<address>       the Holding, bound to the etcd lease: gone when the lease is
    holders/<address>     the same Holding, not bound: outlives a lease that expired
    requests/<sha256>     bound to the lease: one lock per requesting event (source, id)
    failures/<address>/<fencing token, 20 digits>   a lease that expired without release

Every write is one etcd transaction whose comparisons are the revisions the decision was
made on; store failures become the edge's 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aetcd
from aetcd.utils import prefix_range_end

from eventing.errors import Unavailable
from function.decide import Acquire, EventRef, Holder, Holding, Lock, Pool, PoolKey

log = logging.getLogger(__name__)

# What etcd answers when it is down, slow or between leaders: try again later. Anything
# else (an invalid transaction, say) is a bug and stays a 500.
_TRANSIENT = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError, aetcd.InternalError,
              TimeoutError)


@contextlib.contextmanager
def etcd_errors() -> Iterator[None]:
    try:
        yield
    except _TRANSIENT as exc:
        raise Unavailable(f"etcd is not reachable: {type(exc).__name__}", retry_after=1) from None


@dataclass(frozen=True)
class Layout:
    prefix: str

    def section(self, name: str) -> bytes:
        return f"{self.prefix}{name}/".encode()

    def _at(self, name: str, address: str) -> bytes:
        return self.section(name) + address.lower().encode()

    def used(self, address: str) -> bytes:
        return self._at("used", address)

    def lock(self, address: str) -> bytes:
        return self._at("locks", address)

    def holder(self, address: str) -> bytes:
        return self._at("holders", address)

    def request(self, event: EventRef) -> bytes:
        digest = hashlib.sha256(f"{event.source}\n{event.id}".encode()).hexdigest()
        return self.section("requests") + digest.encode()

    def failure(self, address: str, fencing_token: int) -> bytes:
        return self._at("failures", address) + f"/{fencing_token:020d}".encode()

    def address_in(self, name: str, key: bytes) -> str | None:
        """The address of a key of section `name`, or None for a key of another section."""
        section = self.section(name)
        return key[len(section):].decode() if key.startswith(section) else None


# -- records ------------------------------------------------------------------------------
def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def encode_holding(h: Holding) -> bytes:
    return _json({"address": h.address, "worker_id": h.worker_id, "request_id": h.request_id,
                  "event_source": h.event.source, "event_id": h.event.id,
                  "lease_id": f"{h.lease_id:x}", "ttl_seconds": h.ttl_seconds,
                  "acquired_at": h.acquired_at.isoformat()})


def decode_holding(raw: bytes) -> Holding | None:
    """None for a record this version cannot read (it is logged, never guessed at)."""
    try:
        d = json.loads(raw)
        return Holding(address=str(d["address"]), worker_id=str(d["worker_id"]),
                       request_id=None if d["request_id"] is None else str(d["request_id"]),
                       event=EventRef(str(d["event_source"]), str(d["event_id"])),
                       lease_id=int(d["lease_id"], 16), ttl_seconds=int(d["ttl_seconds"]),
                       acquired_at=datetime.fromisoformat(d["acquired_at"]))
    except (ValueError, KeyError, TypeError):
        return None


def failure_record(holder: Holder, detected_at: datetime) -> dict[str, Any]:
    """Which worker held which key when its lease expired, on which request, and when
    that was seen (the expiry itself lies between the last renewal + TTL and then)."""
    h = holder.holding
    return {"address": h.address, "worker_id": h.worker_id, "request_id": h.request_id,
            "event_source": h.event.source, "event_id": h.event.id,
            "lease_id": f"{h.lease_id:x}", "fencing_token": holder.revision,
            "ttl_seconds": h.ttl_seconds, "acquired_at": h.acquired_at.isoformat(),
            "detected_at": detected_at.isoformat()}


def _used(address: str, when: datetime | None) -> bytes:
    return _json({"address": address, "last_used_at": None if when is None else when.isoformat()})


@dataclass(frozen=True)
class Grant:
    lease_id: int
    ttl_seconds: int  # as granted: etcd raises a TTL below its minimum (2 s by default)


class KeyPool:
    """lease-key's view of the pool; one etcd client, created in `start`."""

    def __init__(self, client: aetcd.Client, layout: Layout) -> None:
        self.client = client
        self.layout = layout
        self._probe: asyncio.Task[None] | None = None
        self._error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def probe_soon(self) -> None:
        """Check etcd on the running loop (func-python's start hook is synchronous)."""
        self._probe = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        try:
            await self.client.get(self.layout.prefix.encode())
            self._error = None
        except Exception as exc:
            self._error = f"etcd unreachable: {type(exc).__name__}"
            log.error("etcd is not reachable", extra={"error": str(exc)})

    def ready(self) -> tuple[bool, str]:
        if self._probe is None or not self._probe.done():
            return False, "etcd: connecting"
        if self._error is not None:
            self.probe_soon()  # look again, so that readiness follows etcd coming back
            return False, self._error
        return True, "etcd: ok"

    async def close(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self.client.close()

    # -- reads ----------------------------------------------------------------------------
    async def snapshot(self) -> Pool:
        """Keys, locks and holders at one etcd revision (one read-only transaction)."""
        tx = self.client.transactions
        sections = [self.layout.section(name) for name in ("used", "locks", "holders")]
        with etcd_errors():
            _, (used, locks, holders) = await self.client.transaction(
                compare=[],
                success=[tx.get(s, prefix_range_end(s)) for s in sections],
                failure=[])
        return Pool(keys=tuple(self._pool_key(v, kv) for v, kv in used),
                    locks={self._name(kv): self._lock(self._name(kv), v, kv) for v, kv in locks},
                    holders={self._name(kv): h for v, kv in holders
                             if (h := self._holder(v, kv)) is not None})

    @staticmethod
    def _name(kv: Any) -> str:
        return str(kv.key.decode().rsplit("/", 1)[1])

    def _pool_key(self, value: bytes, kv: Any) -> PoolKey:
        try:
            address = str(json.loads(value)["address"])
        except (ValueError, KeyError, TypeError):
            address = self._name(kv)
        return PoolKey(address=address, last_used=int(kv.mod_revision))

    @staticmethod
    def _lock(address: str, value: bytes, kv: Any) -> Lock:
        holding = decode_holding(value)
        if holding is None:
            log.warning("a lock record is unreadable; the key stays locked until its lease "
                        "ends", extra={"address": address})
        return Lock(address=holding.address if holding else address,
                    fencing_token=int(kv.create_revision), lease_id=int(kv.lease),
                    holding=holding)

    @staticmethod
    def _holder(value: bytes, kv: Any) -> Holder | None:
        holding = decode_holding(value)
        if holding is None:
            log.warning("a holder record is unreadable; ignored", extra={"key": kv.key.decode()})
            return None
        return Holder(holding=holding, revision=int(kv.mod_revision))

    async def lock_of(self, address: str) -> Lock | None:
        with etcd_errors():
            kv = await self.client.get(self.layout.lock(address))
        return None if kv is None else self._lock(address.lower(), kv.value, kv)

    async def lease_keys(self, lease_id: int) -> tuple[int, Sequence[bytes]]:
        """The lease's remaining TTL (-1: no such lease) and the keys bound to it."""
        with etcd_errors():
            info = await self.client.get_lease_info(lease_id, keys=True)
        return int(info.TTL), tuple(bytes(k) for k in info.keys)

    # -- writes ---------------------------------------------------------------------------
    async def grant(self, ttl_seconds: int) -> Grant:
        with etcd_errors():
            lease = await self.client.lease(ttl_seconds)
        return Grant(lease_id=int(lease.id), ttl_seconds=int(lease.ttl))

    async def revoke(self, lease_id: int) -> None:
        """Best effort: a lease that is already gone, or an etcd that is down, leaves
        nothing behind that its TTL does not end."""
        try:
            await self.client.revoke_lease(lease_id)
        except (aetcd.ClientError, TimeoutError) as exc:
            log.info("lease not revoked", extra={"lease_id": f"{lease_id:x}",
                                                 "error": type(exc).__name__})

    async def keep_alive(self, lease_id: int) -> int:
        """The TTL the lease runs for again from now; 0 when it no longer exists."""
        with etcd_errors():
            reply = await self.client.refresh_lease(lease_id)
        return 0 if reply is None else int(reply.TTL)

    async def acquire(self, decision: Acquire, holding: Holding, now: datetime) -> Lock | None:
        """Lock the chosen key, bound to the holding's lease, in one transaction with its
        holder record, its last-used entry, the request's idempotency key and the failure
        records of `decision.expired`. None when the pool changed since the snapshot."""
        layout, tx = self.layout, self.client.transactions
        address = decision.key.address
        value = encode_holding(holding)
        seen_holder = decision.replaces.revision if decision.replaces is not None else 0
        compare = [tx.create(layout.lock(address)) == 0,
                   tx.mod(layout.holder(address)) == seen_holder,
                   tx.create(layout.request(holding.event)) == 0]
        success = [tx.put(layout.lock(address), value, lease=holding.lease_id),
                   tx.put(layout.holder(address), value),
                   tx.put(layout.used(address), _used(address, now)),
                   tx.put(layout.request(holding.event),
                          _json({"address": address, "lease_id": f"{holding.lease_id:x}"}),
                          lease=holding.lease_id)]
        for holder in decision.expired:
            lost = holder.holding.address
            success.append(tx.put(layout.failure(lost, holder.revision),
                                  _json(failure_record(holder, now))))
            if holder is not decision.replaces:  # the chosen key's holder is overwritten above
                compare.append(tx.mod(layout.holder(lost)) == holder.revision)
                success.append(tx.delete(layout.holder(lost)))
        success.append(tx.get(layout.lock(address)))
        with etcd_errors():
            succeeded, responses = await self.client.transaction(
                compare=compare, success=success, failure=[])
        if not succeeded:
            return None
        for holder in decision.expired:
            log.warning("a key lease expired without release",
                        extra={"record": failure_record(holder, now)})
        (_, kv), = responses[-1]
        return Lock(address=address, fencing_token=int(kv.create_revision),
                    lease_id=int(kv.lease), holding=holding)

    async def release(self, lock: Lock) -> bool:
        """Delete the lock, its holder record and its request key, if the lock is still
        this one; then end its etcd lease. False when the lock was gone already."""
        layout, tx = self.layout, self.client.transactions
        deletes = [tx.delete(layout.lock(lock.address)), tx.delete(layout.holder(lock.address))]
        if lock.holding is not None:
            deletes.append(tx.delete(layout.request(lock.holding.event)))
        with etcd_errors():
            succeeded, _ = await self.client.transaction(
                compare=[tx.create(layout.lock(lock.address)) == lock.fencing_token],
                success=deletes, failure=[])
        if succeeded:
            await self.revoke(lock.lease_id)
        return bool(succeeded)
