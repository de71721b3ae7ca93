"""sign-tx: turns transaction and payout requests into signed EIP-1559 transactions.

decode (the edge) → decide (pure, function.decide: what to sign) → act, in the edge's
transaction, whose inbox row is already claimed: a request signed before is answered
with its stored transaction; otherwise check out a key lease (function.held: one held
from an earlier request while it is fresh, else a new one from lease-key, its key read
from etcd and decrypted), check the lease's fencing token, allocate the nonce, sign, store
(function.store), give the lease back → answer `tx.signed`.

The nonce and the signed transaction commit with the inbox row or not at all: a crash
before the commit leaves no nonce used and no transaction stored, so the redelivery signs
with that same nonce; a crash after it is answered from the inbox or the stored row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import aetcd
from psycopg import AsyncConnection
from pydantic import Field, SecretStr, field_validator

from eventing import auth, etcd, ethereum, keypool
from eventing.denominations import DEFAULT_REGISTRY, Registry
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.errors import Conflict, InvalidEvent, Unavailable
from eventing.events import (
    PAYOUT_REQUESTED,
    TX_SIGN_REQUESTED,
    TX_SIGNED,
    KeyLeased,
    PayoutRequested,
    TxSigned,
    TxSignRequested,
)

# Before function.lease imports httpx: without its command-line client (cold start).
from eventing.http import httpx  # noqa: F401
from eventing.settings import Settings
from function import store
from function.decide import (
    MAX_CHAIN_ID,
    IdReused,
    PayoutGas,
    Refused,
    SignRequest,
    decide_stored,
    payout_request,
    tx_request,
)
from function.held import HeldLeases
from function.lease import CallerTokens, LeaseKeyClient

log = logging.getLogger(__name__)

GWEI = 10**9
# What etcd answers when it is down, slow or between leaders: try again later.
_ETCD_TRANSIENT = (aetcd.ConnectionFailedError, aetcd.ConnectionTimeoutError,
                   aetcd.InternalError, TimeoutError)


def default_worker_id() -> str:
    """Who holds a lease, as lease-key's failure records name it: host and process."""
    return f"sign-tx@{socket.gethostname()}:{os.getpid()}"


class SignTxSettings(Settings):
    etcd_endpoints: etcd.Endpoints = Field(alias="ETCD_ENDPOINTS")
    etcd_prefix: str = Field(default=keypool.DEFAULT_PREFIX, alias="ETCD_PREFIX",
                             pattern=r"^/eventworks/([A-Za-z0-9._-]+/)+$")
    etcd_timeout_seconds: float = Field(default=5.0, alias="ETCD_TIMEOUT_SECONDS", gt=0, le=60)
    # A Secret given to sign-tx alone; SecretStr keeps it out of every repr and dump.
    key_encryption_key: SecretStr = Field(alias="KEY_ENCRYPTION_KEY")
    lease_key_url: str = Field(alias="LEASE_KEY_URL", pattern=r"^https?://")
    # Shared with lease-key alone: sign-tx's caller tokens are the only calls it answers.
    lease_key_token_secret: auth.Hs256Secret = Field(alias="LEASE_KEY_TOKEN_SECRET")
    lease_timeout_seconds: float = Field(default=5.0, alias="LEASE_TIMEOUT_SECONDS", gt=0,
                                         le=60)
    # A signature takes milliseconds; the TTL only bounds how long a crashed worker's key
    # stays locked.
    lease_ttl_seconds: int = Field(default=15, alias="LEASE_TTL_SECONDS", ge=1, le=600)
    # A held lease unused this long goes back to lease-key, for other sign-tx instances.
    # Short: between requests of a busy instance a lease is idle for milliseconds.
    lease_idle_seconds: float = Field(default=0.25, alias="LEASE_IDLE_SECONDS", gt=0, le=60)
    worker_id: str = Field(default_factory=default_worker_id, alias="SIGNING_WORKER_ID",
                           pattern=r"^[\x21-\x7e]{1,200}$")
    # The chain payouts are made on (a transaction request names its own).
    chain_id: int = Field(default=1, alias="SIGNING_CHAIN_ID", gt=0, le=MAX_CHAIN_ID)
    payout_gas_limit_native: int = Field(default=21_000, alias="PAYOUT_GAS_LIMIT_NATIVE", gt=0)
    # An ERC-20 transfer costs 35-65k gas; the limit is only a ceiling.
    payout_gas_limit_token: int = Field(default=100_000, alias="PAYOUT_GAS_LIMIT_TOKEN", gt=0)
    payout_max_fee_per_gas: int = Field(default=50 * GWEI, alias="PAYOUT_MAX_FEE_PER_GAS", ge=0)
    payout_max_priority_fee_per_gas: int = Field(
        default=2 * GWEI, alias="PAYOUT_MAX_PRIORITY_FEE_PER_GAS", ge=0)

    @field_validator("key_encryption_key")
    @classmethod
    def _a_kek(cls, value: SecretStr) -> SecretStr:
        try:
            keypool.parse_kek(value.get_secret_value())
        except keypool.KeysError as exc:  # its message never holds the key
            raise ValueError(str(exc)) from None
        return value

    @property
    def kek(self) -> bytes:
        return keypool.parse_kek(self.key_encryption_key.get_secret_value())

    @property
    def payout_gas(self) -> PayoutGas:
        return PayoutGas(native_gas_limit=self.payout_gas_limit_native,
                         token_gas_limit=self.payout_gas_limit_token,
                         max_fee_per_gas=self.payout_max_fee_per_gas,
                         max_priority_fee_per_gas=self.payout_max_priority_fee_per_gas)


@contextlib.contextmanager
def etcd_errors() -> Iterator[None]:
    try:
        yield
    except _ETCD_TRANSIENT as exc:
        raise Unavailable(f"etcd is not reachable: {type(exc).__name__}", retry_after=1) from None


def tx_signed(signed: store.Signed) -> TxSigned:
    return TxSigned(request_id=signed.request_id, sender=signed.sender,
                    chain_id=signed.chain_id, nonce=signed.nonce,
                    tx_hash="0x" + signed.tx_hash.hex(), raw_tx="0x" + signed.raw_tx.hex(),
                    fencing_token=signed.fencing_token)


def new() -> Function:
    return Function()


class Function(Edge[SignTxSettings]):
    name = "sign-tx"
    schema = "signing"
    settings_type = SignTxSettings
    registry: Registry = DEFAULT_REGISTRY

    def __init__(self) -> None:
        super().__init__()
        self._etcd: aetcd.Client | None = None
        self._lease_key: LeaseKeyClient | None = None
        self._leases: HeldLeases | None = None
        self._probe: asyncio.Task[None] | None = None
        self._etcd_error: str | None = None

    def routes(self) -> Mapping[str, Route[Any]]:
        return {TX_SIGN_REQUESTED: Route(TxSignRequested, self.on_sign_requested),
                PAYOUT_REQUESTED: Route(PayoutRequested, self.on_payout_requested)}

    # -- lifecycle: clients made in start, closed in stop, reported by ready ---------------
    def _start(self, cfg: Mapping[str, str]) -> None:
        super()._start(cfg)
        settings = self.settings
        self._etcd = keypool.client_for(settings.etcd_endpoints, settings.etcd_timeout_seconds)
        self._lease_key = LeaseKeyClient(settings.lease_key_url, settings.worker_id,
                                         CallerTokens(settings.lease_key_token_secret),
                                         timeout=settings.lease_timeout_seconds)
        # As many keys as requests can sign at once: each holds a database connection.
        self._leases = HeldLeases(self._lease_key, self.signing_key,
                                  ttl_seconds=settings.lease_ttl_seconds,
                                  max_held=settings.database_pool_size,
                                  idle_seconds=settings.lease_idle_seconds)
        self._leases.start()
        self._probe_soon()

    def _probe_soon(self) -> None:
        self._probe = asyncio.get_running_loop().create_task(self._probe_etcd())

    async def _probe_etcd(self) -> None:
        try:
            await self.etcd.get(self.settings.etcd_prefix.encode())
            self._etcd_error = None
        except Exception as exc:
            self._etcd_error = f"etcd unreachable: {type(exc).__name__}"
            log.error("etcd is not reachable", extra={"error": str(exc)})

    def ready(self) -> tuple[bool, str]:
        ok, why = super().ready()
        if not ok:
            return ok, why
        if self._probe is None or not self._probe.done():
            return False, "etcd: connecting"
        if self._etcd_error is not None:
            self._probe_soon()  # look again, so that readiness follows etcd coming back
            return False, self._etcd_error
        return True, "ready"

    def stop(self) -> None:
        # The held leases go back before stop returns, not in the task below: func-python
        # calls stop synchronously from hypercorn's lifespan shutdown, and then the process
        # exits (asyncio.run cancels what is still pending), so a release left to a task
        # rarely reached lease-key and the key stayed locked until its TTL, refusing the
        # next instance (503 no free key). function.held says how it is bounded.
        if self._leases is not None:
            self._leases.release_at_stop()
        super().stop()
        with contextlib.suppress(RuntimeError):  # no loop left: nothing to close on
            asyncio.get_running_loop().create_task(self._close_clients())

    async def aclose(self) -> None:
        await super().aclose()
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        # Each client is taken before it is awaited: stop's task and aclose may both run.
        leases, self._leases = self._leases, None
        if leases is not None:
            await leases.aclose()
        etcd_client, self._etcd = self._etcd, None
        if etcd_client is not None:
            await etcd_client.close()
        lease_key, self._lease_key = self._lease_key, None
        if lease_key is not None:
            await lease_key.aclose()

    @property
    def etcd(self) -> aetcd.Client:
        if self._etcd is None:
            raise RuntimeError("the function has not been started")
        return self._etcd

    @property
    def leases(self) -> HeldLeases:
        if self._leases is None:
            raise RuntimeError("the function has not been started")
        return self._leases

    # -- decode → decide ------------------------------------------------------------------
    async def on_sign_requested(self, delivery: Delivery[TxSignRequested]) -> Reply:
        d = delivery.data
        return await self.sign(delivery, tx_request(
            request_id=d.request_id, chain_id=d.chain_id, to=d.to, value=d.value, data=d.data,
            gas_limit=d.gas_limit, max_fee_per_gas=d.max_fee_per_gas,
            max_priority_fee_per_gas=d.max_priority_fee_per_gas))

    async def on_payout_requested(self, delivery: Delivery[PayoutRequested]) -> Reply:
        d = delivery.data
        return await self.sign(delivery, payout_request(
            payout_id=d.payout_id, to_address=d.to_address, denomination=d.denomination,
            amount_base_units=d.amount_base_units, registry=self.registry,
            chain_id=self.settings.chain_id, gas=self.settings.payout_gas))

    # -- act → answer ---------------------------------------------------------------------
    async def sign(self, delivery: Delivery[Any], request: SignRequest | Refused) -> Reply:
        if isinstance(request, Refused):
            raise InvalidEvent(request.reason, field=request.field)
        tx = delivery.tx
        assert tx is not None  # sign-tx keeps state: the edge always opens a transaction
        await store.lock_request(tx, request.request_id)
        signed = await store.find(tx, request.request_id)
        if signed is None:
            signed = await self.sign_new(tx, request, delivery.envelope.traceparent)
        else:
            decision = decide_stored(request, signed.request_digest)
            if isinstance(decision, IdReused):
                raise Conflict(decision.reason, field="data.request_id")
            log.info("request signed before: answered with its transaction",
                     extra={"request_id": request.request_id, "tx_hash": signed.tx_hash.hex()})
        return Reply(TX_SIGNED, tx_signed(signed), subject=request.request_id)

    async def sign_new(self, tx: AsyncConnection, request: SignRequest,
                       traceparent: str | None) -> store.Signed:
        settings = self.settings
        # A lease held from an earlier request, or a new one (function.held). The release
        # of a lease may come before this transaction's commit, and that is safe: the next
        # holder of the key waits for this transaction's nonce row lock and then counts on
        # from its nonce.
        async with self.leases.checkout(request.request_id, traceparent) as held:
            leased, key = held.leased, held.key
            stale = await store.fence(tx, key.address, leased.fencing_token, leased.lease_id,
                                      settings.worker_id)
            if stale is not None:
                raise Conflict(
                    f"the lease of {key.address} (fencing token {leased.fencing_token}) ran "
                    f"out and the key was leased again (token {stale}): nothing was signed")
            nonce = await store.next_nonce(tx, key.address, request.chain_id)
            raw, tx_hash, signing_hash = ethereum.sign(request.unsigned(nonce), key.secret)
            signed = store.Signed(
                request_id=request.request_id, request_digest=request.digest(),
                sender=key.address, chain_id=request.chain_id, nonce=nonce,
                signing_hash=signing_hash, tx_hash=tx_hash, raw_tx=raw,
                fencing_token=leased.fencing_token, lease_id=leased.lease_id,
                worker_id=settings.worker_id)
            await store.insert(tx, signed)
        log.info("transaction signed", extra={
            "request_id": signed.request_id, "from": signed.sender, "chain_id": signed.chain_id,
            "nonce": signed.nonce, "tx_hash": "0x" + signed.tx_hash.hex(),
            "fencing_token": signed.fencing_token, "lease_id": signed.lease_id})
        return signed

    async def signing_key(self, leased: KeyLeased) -> keypool.SigningKey:
        """The leased key, read from etcd and decrypted here: it is in plain text only in
        this process's memory, only while the lease is held (function.held keeps it with
        its lease)."""
        with etcd_errors():
            return await keypool.read_key(self.etcd, keypool.Pool(self.settings.etcd_prefix),
                                          self.settings.kek, leased.address)
