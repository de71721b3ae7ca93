"""lease-key: hands out one signing key of the pool in etcd at a time.

admit (sign-tx's caller token, nothing else: eventing.callers.Callers) → decode (the edge)
→ decide (pure, function.decide) → act (one etcd transaction, function.pool) → answer:
`key.leased` / `key.released`, or a problem.

It keeps no state in PostgreSQL and so has no inbox: every operation is idempotent by
itself (a redelivered `key.lease` gets the lock its event already holds; a repeated
renew renews; a repeated release finds nothing to release). The reply never carries a
private key or its ciphertext: sign-tx reads and decrypts those itself (README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, NoReturn

import aetcd
from pydantic import Field

from eventing import auth, callers, etcd
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.errors import Conflict, NotFound, Unavailable
from eventing.etcd import first_endpoint
from eventing.events import (
    KEY_LEASE,
    KEY_LEASED,
    KEY_RELEASE,
    KEY_RELEASED,
    KEY_RENEW,
    KeyLease,
    KeyLeased,
    KeyRelease,
    KeyReleased,
    KeyRenew,
)
from eventing.settings import Settings
from function.decide import (
    Acquire,
    EventRef,
    Gone,
    Holding,
    IdInUse,
    LeaseDecision,
    LeaseRequest,
    Lock,
    NoFreeKey,
    Release,
    Replay,
    decide_lease,
    decide_release,
    decide_renew,
    expires_at,
)
from function.pool import Grant, KeyPool, Layout

log = logging.getLogger(__name__)

# Who may call lease-key (issue 7): sign-tx, the only function that signs. The broker
# never delivers to lease-key.
CALLERS: Final = frozenset({"sign-tx"})

# A lease decided on a snapshot that changed before its transaction (another request took
# the key first) is decided again on a fresh one, with a wider choice each time; past this
# many rounds the pool is too contended for this request, which gets 503 and comes back.
ATTEMPTS = 8


class LeaseKeySettings(Settings):
    # http://host:port[,…]; aetcd speaks to one endpoint: the first.
    etcd_endpoints: etcd.Endpoints = Field(alias="ETCD_ENDPOINTS")
    # Tests give every case a prefix of its own; a cluster keeps the default.
    etcd_prefix: str = Field(default="/eventworks/keys/", alias="ETCD_PREFIX",
                             pattern=r"^/eventworks/([A-Za-z0-9._-]+/)+$")
    etcd_timeout_seconds: float = Field(default=5.0, alias="ETCD_TIMEOUT_SECONDS", gt=0, le=60)
    # Shared with sign-tx alone (a Secret mounted into these two): its caller tokens are
    # the only calls answered. Required: without it lease-key would answer anyone.
    caller_secret: auth.Hs256Secret = Field(alias="LEASE_KEY_TOKEN_SECRET")

    @property
    def etcd_host_port(self) -> tuple[str, int]:
        endpoint = first_endpoint(self.etcd_endpoints)
        if endpoint is None:  # pragma: no cover - the validator refused it
            raise ValueError("ETCD_ENDPOINTS")
        return endpoint


def now() -> datetime:
    return datetime.now(UTC)


def new() -> Function:
    return Function()


class Function(Edge[LeaseKeySettings]):
    name = "lease-key"
    schema = None  # etcd only: no PostgreSQL, no inbox
    settings_type = LeaseKeySettings

    def __init__(self) -> None:
        super().__init__()
        self._pool: KeyPool | None = None
        self._callers: callers.Callers | None = None
        # What a lease decision other than Acquire answers (None: decide again).
        self._lease_answers: Mapping[type[LeaseDecision], Callable[[Any], Awaitable[
            Reply | None]]] = {Replay: self._replay, NoFreeKey: self._no_free_key,
                               IdInUse: self._id_in_use}

    def routes(self) -> Mapping[str, Route[Any]]:
        return {KEY_LEASE: Route(KeyLease, self.on_lease),
                KEY_RENEW: Route(KeyRenew, self.on_renew),
                KEY_RELEASE: Route(KeyRelease, self.on_release)}

    # -- lifecycle: the etcd client is made in start, reported by ready --------------------
    def _start(self, cfg: Mapping[str, str]) -> None:
        super()._start(cfg)
        self._callers = callers.Callers(self.settings.caller_secret, self.name, CALLERS)
        host, port = self.settings.etcd_host_port
        client = aetcd.Client(host=host, port=port, timeout=self.settings.etcd_timeout_seconds)
        self._pool = KeyPool(client, Layout(self.settings.etcd_prefix))
        self._pool.probe_soon()

    async def admit(self, authorization: str | None) -> None:
        if self._callers is None:  # not started: nothing is answered
            raise Unavailable("lease-key has not started", retry_after=1)
        self._callers.admit(authorization)

    @property
    def pool(self) -> KeyPool:
        if self._pool is None:
            raise RuntimeError("the function has not been started")
        return self._pool

    def ready(self) -> tuple[bool, str]:
        ok, why = super().ready()
        if not ok or self._pool is None:
            return ok, why
        return self._pool.ready()

    def stop(self) -> None:
        super().stop()
        if self._pool is not None:
            with contextlib.suppress(RuntimeError):  # no loop left: nothing to close on
                asyncio.get_running_loop().create_task(self._pool.close())

    async def aclose(self) -> None:
        await super().aclose()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- key.lease ------------------------------------------------------------------------
    async def on_lease(self, delivery: Delivery[KeyLease]) -> Reply:
        data, envelope = delivery.data, delivery.envelope
        request = LeaseRequest(worker_id=data.worker_id, ttl_seconds=data.ttl_seconds,
                               request_id=data.request_id,
                               event=EventRef(envelope.source, envelope.id))
        grant: Grant | None = None
        granted_at = now()
        try:
            for lost in range(ATTEMPTS):
                spread = 2 ** lost  # see decide_lease: widen the choice after each lost race
                decision = decide_lease(request, await self.pool.snapshot(), spread=spread,
                                        pick=secrets.randbelow(spread))
                if not isinstance(decision, Acquire):
                    reply = await self._lease_answers[type(decision)](decision)
                    if reply is not None:
                        return reply
                    continue
                # Granted once, kept across rounds; revoked below unless a lock took it.
                if grant is None:
                    granted_at = now()
                    grant = await self.pool.grant(request.ttl_seconds)
                locked_at = now()
                holding = Holding(address=decision.key.address, worker_id=request.worker_id,
                                  request_id=request.request_id, event=request.event,
                                  lease_id=grant.lease_id, ttl_seconds=grant.ttl_seconds,
                                  acquired_at=locked_at)
                lock = await self.pool.acquire(decision, holding, locked_at)
                if lock is not None:
                    grant = None
                    log.info("key leased", extra={
                        "address": lock.address, "worker_id": request.worker_id,
                        "request_id": request.request_id, "lease_id": f"{lock.lease_id:x}",
                        "fencing_token": lock.fencing_token})
                    return self._leased(lock, holding.ttl_seconds, holding.ttl_seconds,
                                        granted_at)
            raise Unavailable("the key pool is contended: try again", retry_after=1)
        finally:
            if grant is not None:
                await self.pool.revoke(grant.lease_id)

    async def _replay(self, decision: Replay) -> Reply | None:
        asked = now()
        ttl_left, _ = await self.pool.lease_keys(decision.lock.lease_id)
        if ttl_left <= 0 or decision.lock.holding is None:
            return None  # the lease ended since the snapshot: decide again
        return self._leased(decision.lock, ttl_left, decision.lock.holding.ttl_seconds, asked)

    async def _no_free_key(self, decision: NoFreeKey) -> NoReturn:
        raise Unavailable(decision.reason, retry_after=decision.retry_after)

    async def _id_in_use(self, decision: IdInUse) -> NoReturn:
        raise Conflict(f"this event already leased {decision.holding.address} for worker "
                       f"{decision.holding.worker_id!r} with other data", field="id")

    # -- key.renew ------------------------------------------------------------------------
    async def on_renew(self, delivery: Delivery[KeyRenew]) -> Reply:
        lease_id = int(delivery.data.lease_id, 16)
        asked = now()
        lock = await self._lock_bound_to(lease_id)
        ttl = await self.pool.keep_alive(lease_id) if lock is not None else 0
        decision = decide_renew(lease_id, ttl, lock)
        if isinstance(decision, Gone):
            raise NotFound(decision.reason, field="data.lease_id")
        return self._leased(decision.lock, decision.ttl_seconds, decision.ttl_seconds, asked)

    async def _lock_bound_to(self, lease_id: int) -> Lock | None:
        _, keys = await self.pool.lease_keys(lease_id)
        address = next((a for key in keys
                        if (a := self.pool.layout.address_in("locks", key)) is not None), None)
        return None if address is None else await self.pool.lock_of(address)

    # -- key.release ----------------------------------------------------------------------
    async def on_release(self, delivery: Delivery[KeyRelease]) -> Reply:
        data = delivery.data
        decision = decide_release(int(data.lease_id, 16), await self.pool.lock_of(data.address))
        address = data.address
        if isinstance(decision, Release):
            released = await self.pool.release(decision.lock)  # False: it expired meanwhile
            address = decision.lock.address
            log.info("key released" if released else "key lease expired before its release",
                     extra={"address": address, "lease_id": data.lease_id,
                            "fencing_token": decision.lock.fencing_token})
        return Reply(KEY_RELEASED, KeyReleased(address=address, lease_id=data.lease_id),
                     subject=address)

    # -- answers --------------------------------------------------------------------------
    @staticmethod
    def _leased(lock: Lock, ttl_left: int, ttl_granted: int, asked: datetime) -> Reply:
        return Reply(KEY_LEASED, KeyLeased(
            address=lock.address, lease_id=f"{lock.lease_id:x}",
            fencing_token=lock.fencing_token,
            # Measured from before the etcd call: the real expiry is never earlier than this.
            expires_at=expires_at(asked, ttl_left), ttl_seconds=ttl_granted),
            subject=lock.address)
