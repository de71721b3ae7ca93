"""Key leases sign-tx holds across requests (issue 8): one lease signs many transactions.

A lease used to be taken and released for every transaction: two calls to lease-key (six
etcd round trips) and an etcd read and AES-GCM decryption of the key, per transaction,
inside its database transaction; and a key between one request's release and the next
request's lease was "not free", so busy signers got 503s that the broker retried.

Now a request checks a lease out, signs under it and gives it back; the next request
reuses it while it is fresh. Nothing about a signature changes: every transaction is
still fenced by its lease's token in PostgreSQL (store.fence) and counts its nonce under
the nonce row's lock, in its own database transaction. What bounds the reuse:

- A lease is used only in the first half of its TTL (`use_by`, counted from before the
  lease call, on the monotonic clock): the other half is the margin for a transaction
  that started in time and runs long. One whose time is up is released, not reused.
- A request takes an idle lease; if there is none, it leases another key (at most
  `max_held`, the database pool's size: a request holds a connection before it signs);
  when lease-key has no free key, it shares the least busy lease it holds. Requests that
  share a key take turns on its fencing and nonce row locks in PostgreSQL, exactly as
  two requests of one key always did. Only an instance that holds no lease at all
  answers lease-key's 503 with 503 (the broker retries it).
- A lease idle for `idle_seconds` is released, so that other sign-tx instances get the
  key. At stop every lease is released before `release_at_stop` returns (bounded by
  `STOP_RELEASE_SECONDS`): func-python's stop is synchronous and the process exits right
  after it, so a release left to a task would be cancelled and the key stay locked until
  its TTL. A crashed (or SIGKILLed) instance's leases end with their TTL, as before.
- A request that failed gives its lease back to lease-key rather than to the next
  request: a lease whose state is in doubt is not reused.

The decrypted key is kept with its lease, in this process's memory only, and dropped
when the lease is released: still only while the lease is held (README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from eventing import keypool
from eventing.errors import Unavailable
from eventing.events import KeyLeased
from function.lease import LeaseKeyClient

log = logging.getLogger(__name__)

# The share of a lease's TTL in which new transactions may start under it.
USE_FRACTION = 0.5


@dataclass(frozen=True)
class Held:
    leased: KeyLeased
    key: keypool.SigningKey
    use_by: float  # monotonic seconds: no transaction starts under it later


@dataclass
class _Slot:
    held: Held
    users: int = 0
    idle_since: float = 0.0
    doubtful: bool = False  # a request under it failed: not reused, released when idle


# How long stop may wait for its releases: a lease-key that cannot be reached must not
# hold shutdown up (Knative's grace period is for the whole pod); the TTL is the backstop.
STOP_RELEASE_SECONDS = 2.0

# After lease-key said it has no free key, share held leases for this long before asking
# it again (one request would otherwise ask it in vain on every request).
NO_FREE_KEY_SECONDS = 0.5


class HeldLeases:
    """The leases of one sign-tx instance; made in `start`, closed in `aclose`."""

    def __init__(self, client: LeaseKeyClient,
                 read_key: Callable[[KeyLeased], Awaitable[keypool.SigningKey]], *,
                 ttl_seconds: int, max_held: int, idle_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._read_key = read_key
        self._ttl = ttl_seconds
        self._max = max_held
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._slots: list[_Slot] = []
        self._leasing = 0  # lease calls under way
        self._no_free_key_until = 0.0
        # Releases under way, with what they release: stop releases them again, as their
        # tasks may never finish (a second release of a lease changes nothing).
        self._releasing: dict[asyncio.Task[None], KeyLeased] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def held(self) -> int:
        return len(self._slots)

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    @contextlib.asynccontextmanager
    async def checkout(self, request_id: str, traceparent: str | None) -> AsyncIterator[Held]:
        slot = await self._take(request_id, traceparent)
        try:
            yield slot.held
        except BaseException:
            slot.doubtful = True
            raise
        finally:
            slot.users -= 1
            if slot.users == 0:
                slot.idle_since = self._clock()
                if slot.doubtful or slot.idle_since >= slot.held.use_by:
                    self._drop(slot)

    def _usable(self) -> list[_Slot]:
        now = self._clock()
        return [s for s in self._slots if not s.doubtful and now < s.held.use_by]

    async def _take(self, request_id: str, traceparent: str | None) -> _Slot:
        if self._stopped:
            # A lease taken now would outlive the process unreleased, until its TTL.
            raise Unavailable("sign-tx is stopping", retry_after=1)
        usable = self._usable()
        idle = [s for s in usable if s.users == 0]
        if idle:
            return self._use(idle[-1])
        if len(self._slots) + self._leasing < self._max \
                and self._clock() >= self._no_free_key_until:
            try:
                return self._use(await self._lease(request_id, traceparent))
            except Unavailable:
                usable = self._usable()
                if not usable:
                    raise
                self._no_free_key_until = self._clock() + NO_FREE_KEY_SECONDS
        if not usable:
            raise Unavailable(f"all {self._max} key leases of this instance are in use",
                              retry_after=1)
        return self._use(min(usable, key=lambda s: s.users))

    @staticmethod
    def _use(slot: _Slot) -> _Slot:
        slot.users += 1
        return slot

    async def _lease(self, request_id: str, traceparent: str | None) -> _Slot:
        """A new lease from lease-key, its key read and decrypted."""
        self._leasing += 1
        try:
            asked = self._clock()
            leased = await self._client.lease(self._ttl, request_id, traceparent)
            try:
                key = await self._read_key(leased)
            except BaseException:
                self._release(leased)
                raise
        finally:
            self._leasing -= 1
        log.info("key leased", extra={"address": leased.address, "lease_id": leased.lease_id,
                                      "fencing_token": leased.fencing_token})
        slot = _Slot(Held(leased, key, use_by=asked + leased.ttl_seconds * USE_FRACTION))
        self._slots.append(slot)
        return slot

    def _drop(self, slot: _Slot) -> None:
        if slot in self._slots:  # not when stop released it while a request used it
            self._slots.remove(slot)
            self._release(slot.held.leased)

    def _release(self, leased: KeyLeased) -> None:
        task = asyncio.get_running_loop().create_task(self._client.release(leased))
        self._releasing[task] = leased
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._releasing.pop(task, None)

    async def _reap(self) -> None:
        """Give back leases idle for `idle_seconds` or past their use: other instances
        may need the keys."""
        while True:
            await asyncio.sleep(min(self._idle_seconds / 2, 0.1))
            now = self._clock()
            for slot in [s for s in self._slots if s.users == 0 and (
                    now - s.idle_since >= self._idle_seconds or now >= s.held.use_by)]:
                self._drop(slot)

    async def aclose(self) -> None:
        """Release every lease no request uses, and wait for the releases (best effort,
        like each release)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for slot in [s for s in self._slots if s.users == 0]:
            self._drop(slot)
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    def release_at_stop(self, within: float = STOP_RELEASE_SECONDS) -> bool:
        """Release every lease this instance holds, and every release still under way,
        before returning: for func-python's `stop`, which cannot await and after which
        the process exits. Blocks the event loop for at most `within` seconds, which is
        harmless then: hypercorn has closed its sockets and waited for the requests in
        flight before it runs the lifespan shutdown that calls `stop`. True when all were
        released in time; otherwise their TTL ends them.

        Leases a request still uses are released too: the process is going, and a release
        before the commit is safe (the next holder waits on this transaction's fencing
        and nonce row locks, or this write is refused by its fencing token; README.md)."""
        self._stopped = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        leases = [slot.held.leased for slot in self._slots] + list(self._releasing.values())
        self._slots.clear()  # and with them the decrypted keys
        if not leases:
            return True
        started = time.perf_counter()
        done = self._client.release_blocking(leases, within=within)
        took_ms = round((time.perf_counter() - started) * 1000, 1)
        if done:
            log.info("key leases released at stop", extra={"leases": len(leases),
                                                            "ms": took_ms})
        else:
            log.warning("key leases not all released at stop: their TTL frees the keys",
                        extra={"leases": len(leases), "ms": took_ms})
        return done
