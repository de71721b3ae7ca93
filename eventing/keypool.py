"""The signing keys' pool in etcd: its layout, its encrypted records, the key-encryption key.

One module for the record's writer (`python -m stack.keys`, the stack's dev pool) and its
reader (sign-tx), so that the two cannot drift apart. lease-key never reads `keys/`.

Under ETCD_PREFIX (default `/eventworks/keys/`), addresses in lower case
(functions/lease-key/README.md has the whole layout):

    keys/<address>   {"version": 1, "address" (EIP-55), "cipher": "AES-256-GCM",
                      "kek": <id of the key-encryption key>, "ciphertext", "created_at"}
    used/<address>   {"address", "last_used_at"}: lease-key's least-recently-used clock

The ciphertext is `base64(nonce ‖ ciphertext ‖ tag)`, AES-256-GCM under the key-encryption
key (KEY_ENCRYPTION_KEY: 32 bytes, base64) with the address as associated data, so a
ciphertext copied onto another address does not decrypt. Decrypting costs about 0.1 ms,
not a scrypt second. A private key is never printed, logged, put in an error message or
shown by a repr: errors name the address only, and `SigningKey` hides its secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aetcd

from eventing import ethereum
from eventing.etcd import first_endpoint
from eventing.pycryptodome import AES

DEFAULT_PREFIX = "/eventworks/keys/"
CIPHER = "AES-256-GCM"
RECORD_VERSION = 1
NONCE_BYTES = 12  # GCM's standard nonce; random per encryption (the 2^-32 collision bound
#                   holds far beyond any pool size)
TAG_BYTES = 16
KEK_VARIABLE = "KEY_ENCRYPTION_KEY"


class KeysError(Exception):
    """What went wrong, in words that never contain a key."""


@dataclass(frozen=True)
class SigningKey:
    """A decrypted private key and its address. The secret is left out of repr and
    comparison, so that no log line, traceback or assertion message can show it."""

    address: str  # lower case
    secret: bytes = field(repr=False, compare=False)


# -- addresses ---------------------------------------------------------------------------
def checksum_address(address: str) -> str:
    """EIP-55 mixed-case checksum of a 0x-prefixed 20-byte hex address."""
    plain = address.lower().removeprefix("0x")
    digest = ethereum.keccak(plain.encode()).hex()[:len(plain)]
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c
                          for c, d in zip(plain, digest, strict=True))


def address_of(private_key: bytes) -> str:
    """The EIP-55 address of a secp256k1 private key (as the pool's records store it)."""
    return checksum_address(ethereum.address_of(private_key))


# -- the key-encryption key --------------------------------------------------------------
def parse_kek(text: str) -> bytes:
    """KEY_ENCRYPTION_KEY: 32 bytes in base64 (standard or URL-safe alphabet)."""
    cleaned = text.strip()
    try:
        alphabet = "-_" if ("-" in cleaned or "_" in cleaned) else "+/"
        kek = base64.b64decode(cleaned, altchars=alphabet.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise KeysError(f"{KEK_VARIABLE} is not base64") from None
    if len(kek) != 32:
        raise KeysError(f"{KEK_VARIABLE} must be 32 bytes (AES-256), not {len(kek)}")
    return kek


def kek_from_env(env: Mapping[str, str]) -> bytes:
    text = env.get(KEK_VARIABLE)
    if not text:
        raise KeysError(f"set {KEK_VARIABLE} (32 bytes, base64)")
    return parse_kek(text)


def kek_id(kek: bytes) -> str:
    """Which key-encryption key sealed a record (for rotation), without revealing it."""
    return hashlib.sha256(b"eventworks-kek-id:" + kek).hexdigest()[:16]


# -- encryption at rest ------------------------------------------------------------------
def _associated_data(address: str) -> bytes:
    return b"eventworks-key:v1:" + address.lower().encode()


def encrypt(kek: bytes, private_key: bytes, address: str) -> str:
    """base64(nonce ‖ ciphertext ‖ tag)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    cipher = AES.new(kek, AES.MODE_GCM, nonce=nonce)
    cipher.update(_associated_data(address))
    sealed, tag = cipher.encrypt_and_digest(private_key)
    return base64.b64encode(nonce + sealed + tag).decode()


def decrypt(kek: bytes, ciphertext: str, address: str) -> bytes:
    """The private key, or KeysError when the KEK, the address or the bytes are wrong."""
    try:
        raw = base64.b64decode(ciphertext, validate=True)
        if len(raw) <= NONCE_BYTES + TAG_BYTES:
            raise ValueError("too short")
        nonce, sealed, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
        cipher = AES.new(kek, AES.MODE_GCM, nonce=nonce)
        cipher.update(_associated_data(address))
        return cipher.decrypt_and_verify(sealed, tag)
    except (binascii.Error, ValueError):
        raise KeysError(f"the key of {address} does not decrypt: wrong key-encryption key "
                        "or a damaged record") from None


# -- records -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """Where the pool lives: the etcd prefix (the same ETCD_PREFIX lease-key reads)."""

    prefix: str = DEFAULT_PREFIX

    def section(self, name: str) -> bytes:
        return f"{self.prefix}{name}/".encode()

    def key(self, address: str) -> bytes:
        return self.section("keys") + address.lower().encode()

    def used(self, address: str) -> bytes:
        return self.section("used") + address.lower().encode()


def key_record(kek: bytes, private_key: bytes, now: datetime) -> tuple[str, bytes]:
    """(EIP-55 address, the `keys/<address>` record sealing the key)."""
    address = address_of(private_key)
    record = {"version": RECORD_VERSION, "address": address, "cipher": CIPHER,
              "kek": kek_id(kek), "ciphertext": encrypt(kek, private_key, address),
              "created_at": now.isoformat()}
    return address, json.dumps(record, separators=(",", ":")).encode()


def open_record(kek: bytes, raw: bytes, address: str) -> SigningKey:
    """The key sealed in a `keys/<address>` record, checked to belong to `address`."""
    try:
        record: Any = json.loads(raw)
        stored, cipher, sealed = record["address"], record["cipher"], record["ciphertext"]
    except (ValueError, KeyError, TypeError):
        raise KeysError(f"the key record of {address} is unreadable") from None
    if not isinstance(stored, str) or stored.lower() != address.lower():
        raise KeysError(f"the key record under {address} names another address")
    if cipher != CIPHER or not isinstance(sealed, str):
        raise KeysError(f"the key record of {address} is not {CIPHER}")
    if record.get("kek") not in (None, kek_id(kek)):
        raise KeysError(f"the key of {address} was sealed under another key-encryption key "
                        f"(id {record.get('kek')}, this one is {kek_id(kek)})")
    secret = decrypt(kek, sealed, address)
    try:
        derived = ethereum.address_of(secret)
    except ValueError:
        raise KeysError(f"the key record of {address} holds no secp256k1 key") from None
    if derived != address.lower():
        raise KeysError(f"the key record of {address} holds the key of another address")
    return SigningKey(address=derived, secret=secret)


# -- the pool in etcd --------------------------------------------------------------------
def client_for(endpoints: str, timeout: float = 10.0) -> aetcd.Client:
    """An etcd client for the first of ETCD_ENDPOINTS (aetcd speaks to one endpoint)."""
    endpoint = first_endpoint(endpoints)
    if endpoint is None:
        raise KeysError("ETCD_ENDPOINTS must be http://host:port[,…]")
    host, port = endpoint
    return aetcd.Client(host=host, port=port, timeout=timeout)


async def store(client: aetcd.Client, pool: Pool, kek: bytes,
                private_keys: Iterable[bytes]) -> list[tuple[str, bool]]:
    """Add each key unless its address is already in the pool: (address, added)."""
    results = []
    tx = client.transactions
    for private_key in private_keys:
        address, record = key_record(kek, private_key, datetime.now(UTC))
        used = json.dumps({"address": address, "last_used_at": None}).encode()
        # One transaction per key: the key and its LRU entry appear together or not at all,
        # and an address already present (an import run twice) is left as it is.
        added, _ = await client.transaction(
            compare=[tx.create(pool.key(address)) == 0],
            success=[tx.put(pool.key(address), record), tx.put(pool.used(address), used)],
            failure=[])
        results.append((address, bool(added)))
    return results


async def addresses(client: aetcd.Client, pool: Pool) -> list[str]:
    found = await client.get_prefix(pool.section("keys"), keys_only=True)
    return sorted(kv.key.decode().rsplit("/", 1)[1] for kv in found)


async def read_key(client: aetcd.Client, pool: Pool, kek: bytes, address: str) -> SigningKey:
    """The decrypted key of `address`; KeysError when the pool has no such record or it
    does not open. etcd's own errors (down, timeout) are left to the caller."""
    kv = await client.get(pool.key(address))
    if kv is None:
        raise KeysError(f"the pool {pool.prefix} has no key for {address}")
    return open_record(kek, bytes(kv.value), address)
