"""What a request asks sign-tx to sign, and whether it may: pure code on plain values.

Both inputs, `tx.sign.requested` and `payout.requested`, become one `SignRequest`: the
EIP-1559 transaction to sign, less the nonce (allocated when it is signed) and the key
(leased then). Anything that can never be signed is a `Refused` naming the event field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventing.denominations import Registry
from eventing.ethereum import UnsignedTx, address_bytes, keccak

UINT256_LIMIT = 2**256
# EIP-2681 bounds a nonce to 2^64 - 1; gas limits are uint64 in every client.
UINT64_LIMIT = 2**64
# sign-tx stores chain ids and nonces as PostgreSQL bigint; every chain in use has an id
# far below this (EIP-155 ids are small integers; EIP-2294 proposes 2^64 / 2 - 1 at most).
MAX_CHAIN_ID = 2**63 - 1
# The 4-byte selector of ERC-20's `transfer(address,uint256)`.
ERC20_TRANSFER = keccak(b"transfer(address,uint256)")[:4]


@dataclass(frozen=True)
class SignRequest:
    """One transaction to sign: what was asked, before a key and a nonce are chosen."""

    request_id: str
    chain_id: int
    to: str  # lower case
    value: int
    data: bytes
    gas_limit: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    def unsigned(self, nonce: int) -> UnsignedTx:
        return UnsignedTx(chain_id=self.chain_id, nonce=nonce,
                          max_priority_fee_per_gas=self.max_priority_fee_per_gas,
                          max_fee_per_gas=self.max_fee_per_gas, gas_limit=self.gas_limit,
                          to=self.to, value=self.value, data=self.data)

    def digest(self) -> bytes:
        """What makes two asks for one request id 'the same': a redelivery of the same
        ask gets the stored transaction, another ask under that id is a conflict."""
        canonical = {"request_id": self.request_id, "chain_id": self.chain_id, "to": self.to,
                     "value": str(self.value), "data": self.data.hex(),
                     "gas_limit": self.gas_limit, "max_fee_per_gas": str(self.max_fee_per_gas),
                     "max_priority_fee_per_gas": str(self.max_priority_fee_per_gas)}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).digest()


@dataclass(frozen=True)
class Refused:
    """The request can never be signed as it is (answered 400, dead-lettered)."""

    reason: str
    field: str


@dataclass(frozen=True)
class PayoutGas:
    """The configured gas of payout transactions (a transaction request brings its own)."""

    native_gas_limit: int
    token_gas_limit: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


# -- checks: (field, holds, why not), each on the request about to be signed ---------------
Check = tuple[str, Callable[[SignRequest], bool], str]
CHECKS: Sequence[Check] = (
    ("data.chain_id", lambda r: 0 < r.chain_id <= MAX_CHAIN_ID,
     f"the chain id must be between 1 and {MAX_CHAIN_ID}"),
    ("data.value", lambda r: 0 <= r.value < UINT256_LIMIT, "the value must fit in 256 bits"),
    ("data.gas_limit", lambda r: 0 < r.gas_limit < UINT64_LIMIT,
     "the gas limit must fit in 64 bits"),
    ("data.max_fee_per_gas", lambda r: r.max_fee_per_gas < UINT256_LIMIT,
     "the max fee per gas must fit in 256 bits"),
    # EIP-1559: a transaction whose priority fee exceeds its max fee is invalid on chain.
    ("data.max_priority_fee_per_gas", lambda r: r.max_priority_fee_per_gas <= r.max_fee_per_gas,
     "the max priority fee per gas must not exceed the max fee per gas"),
)


def checked(request: SignRequest) -> SignRequest | Refused:
    for field, holds, why_not in CHECKS:
        if not holds(request):
            return Refused(why_not, field)
    return request


def tx_request(*, request_id: str, chain_id: int, to: str, value: str, data: str,
               gas_limit: int, max_fee_per_gas: str,
               max_priority_fee_per_gas: str) -> SignRequest | Refused:
    """`tx.sign.requested` as the event model gives it (amounts as decimal strings, data
    as 0x-hex), to be signed as it is."""
    return checked(SignRequest(
        request_id=request_id, chain_id=chain_id, to=to.lower(), value=int(value),
        data=bytes.fromhex(data.removeprefix("0x")), gas_limit=gas_limit,
        max_fee_per_gas=int(max_fee_per_gas),
        max_priority_fee_per_gas=int(max_priority_fee_per_gas)))


def erc20_transfer(to: str, amount: int) -> bytes:
    """The calldata of `transfer(to, amount)`: selector, then each argument in 32 bytes."""
    return ERC20_TRANSFER + address_bytes(to).rjust(32, b"\0") + amount.to_bytes(32, "big")


def payout_request(*, payout_id: str, to_address: str, denomination: str,
                   amount_base_units: str, registry: Registry, chain_id: int,
                   gas: PayoutGas) -> SignRequest | Refused:
    """A payout as the transaction that makes it, on the configured chain: a value transfer
    of the chain's native coin (a denomination with no token contracts, ETH), or an
    ERC-20 `transfer` call to the denomination's token contract on that chain."""
    found = registry.get(denomination.upper())
    if found is None:
        return Refused(f"{denomination!r} is not a known denomination", "data.denomination")
    amount = int(amount_base_units)
    if not 0 < amount < UINT256_LIMIT:
        return Refused("a payout is more than 0 and fits in 256 bits",
                       "data.amount_base_units")
    if found.contracts:  # a token: the denomination's contract on this chain is called
        contract = found.contracts.get(chain_id)
        if contract is None:
            return Refused(f"{found.symbol} has no token contract on chain {chain_id}",
                           "data.denomination")
        to, value, data = contract, 0, erc20_transfer(to_address, amount)
        gas_limit = gas.token_gas_limit
    else:  # the chain's native coin: a plain value transfer
        to, value, data, gas_limit = to_address, amount, b"", gas.native_gas_limit
    return checked(SignRequest(
        request_id=payout_id, chain_id=chain_id, to=to.lower(), value=value, data=data,
        gas_limit=gas_limit, max_fee_per_gas=gas.max_fee_per_gas,
        max_priority_fee_per_gas=gas.max_priority_fee_per_gas))


# -- a request that was signed before --------------------------------------------------------
@dataclass(frozen=True)
class Replay:
    """The same ask again (a redelivery, or the same request published twice): answer
    with the transaction stored for it, byte for byte."""


@dataclass(frozen=True)
class IdReused:
    """Another ask under a request id that is already signed: never sign a second one."""

    reason: str


def decide_stored(request: SignRequest, stored_digest: bytes) -> Replay | IdReused:
    if request.digest() == stored_digest:
        return Replay()
    return IdReused(f"request {request.request_id!r} was already signed with other data")
