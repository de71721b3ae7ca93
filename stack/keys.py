"""The key pool of lease-key in etcd: generate keys, import keys, encrypt them at rest.

    python -m stack.keys generate N     # N new secp256k1 keys
    python -m stack.keys import FILE    # hex private keys, one a line (0x optional, # comments)

Only addresses are ever printed; a private key is never printed, logged or put in an
error message (a bad line of FILE is named by its number only).

Each key is stored as the lease-key pool layout says (functions/lease-key/README.md):

    <prefix>keys/<address>  {"address", "cipher": "AES-256-GCM", "kek", "ciphertext", ...}
    <prefix>used/<address>  {"address", "last_used_at": null}  (lease-key's LRU clock)

with `<address>` in lower case and `<prefix>` = ETCD_PREFIX (default /eventworks/keys/).
The ciphertext is AES-256-GCM under the key-encryption key (KEY_ENCRYPTION_KEY: 32
bytes, base64), with the address as associated data so that a ciphertext copied onto
another address does not decrypt. Decrypting one costs microseconds, not a scrypt second.

Where the settings come from: the environment first. Without ETCD_ENDPOINTS the running
local stack's etcd is used, and then (only then) a development key-encryption key made
once in the stack's directory (.stack/key-encryption-key); a pool in any other etcd
needs KEY_ENCRYPTION_KEY set.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aetcd
from Crypto.Cipher import AES
from Crypto.Hash import keccak
from Crypto.PublicKey import ECC

from stack.layout import Layout

DEFAULT_PREFIX = "/eventworks/keys/"
CIPHER = "AES-256-GCM"
# The order of secp256k1: a private key is an integer in [1, N).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
NONCE_BYTES = 12  # GCM's standard nonce; random per encryption (2^-32 collision bound holds
#                   far beyond any pool size)
DEV_KEK_FILE = "key-encryption-key"


class KeysError(Exception):
    """What went wrong, in words that never contain a key."""


# -- keys and addresses ------------------------------------------------------------------
def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def checksum_address(address: str) -> str:
    """EIP-55 mixed-case checksum of a 0x-prefixed 20-byte hex address."""
    plain = address.lower().removeprefix("0x")
    digest = keccak256(plain.encode()).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(plain, digest,
                                                                             strict=False))


def address_of(private_key: bytes) -> str:
    """The Ethereum address of a secp256k1 private key: the last 20 bytes of the
    keccak-256 of the uncompressed public point (x || y), EIP-55 checksummed."""
    point = ECC.construct(curve="secp256k1", d=int.from_bytes(private_key, "big")).pointQ
    public = int(point.x).to_bytes(32, "big") + int(point.y).to_bytes(32, "big")
    return checksum_address("0x" + keccak256(public)[-20:].hex())


def valid_private_key(private_key: bytes) -> bool:
    return len(private_key) == 32 and 0 < int.from_bytes(private_key, "big") < SECP256K1_N


def generate_private_key() -> bytes:
    while True:  # rejection sampling: the chance of a retry is about 2^-128
        candidate = secrets.token_bytes(32)
        if valid_private_key(candidate):
            return candidate


def parse_private_key(text: str) -> bytes:
    digits = text.strip().removeprefix("0x").removeprefix("0X")
    if len(digits) != 64:
        raise ValueError("not 64 hex digits")
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        raise ValueError("not hex") from None
    if not valid_private_key(key):
        raise ValueError("not a secp256k1 private key (zero or not below the curve order)")
    return key


def read_key_file(path: Path) -> list[bytes]:
    """Hex private keys, one a line; blank lines and `#` comments are skipped.
    A bad line is named by its number, never by its content."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise KeysError(f"cannot read {path}: {exc.strerror}") from None
    keys = []
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            keys.append(parse_private_key(text))
        except ValueError as exc:
            raise KeysError(f"{path}:{number}: {exc}") from None
    return keys


# -- encryption at rest ------------------------------------------------------------------
def parse_kek(text: str) -> bytes:
    """KEY_ENCRYPTION_KEY: 32 bytes in base64 (standard or URL-safe alphabet)."""
    cleaned = text.strip()
    try:
        alphabet = "-_" if ("-" in cleaned or "_" in cleaned) else "+/"
        kek = base64.b64decode(cleaned, altchars=alphabet.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise KeysError("KEY_ENCRYPTION_KEY is not base64") from None
    if len(kek) != 32:
        raise KeysError(f"KEY_ENCRYPTION_KEY must be 32 bytes (AES-256), not {len(kek)}")
    return kek


def kek_id(kek: bytes) -> str:
    """Which key-encryption key sealed a record (for rotation), without revealing it."""
    return hashlib.sha256(b"eventworks-kek-id:" + kek).hexdigest()[:16]


def _associated_data(address: str) -> bytes:
    return b"eventworks-key:v1:" + address.lower().encode()


def encrypt(kek: bytes, private_key: bytes, address: str) -> str:
    """base64(nonce || ciphertext || tag)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    cipher = AES.new(kek, AES.MODE_GCM, nonce=nonce)
    cipher.update(_associated_data(address))
    sealed, tag = cipher.encrypt_and_digest(private_key)
    return base64.b64encode(nonce + sealed + tag).decode()


def decrypt(kek: bytes, ciphertext: str, address: str) -> bytes:
    """The private key, or KeysError when the KEK, the address or the bytes are wrong."""
    try:
        raw = base64.b64decode(ciphertext, validate=True)
        nonce, sealed, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-16], raw[-16:]
        cipher = AES.new(kek, AES.MODE_GCM, nonce=nonce)
        cipher.update(_associated_data(address))
        return cipher.decrypt_and_verify(sealed, tag)
    except (binascii.Error, ValueError):
        raise KeysError(f"the key of {address} does not decrypt: wrong key-encryption key "
                        "or a damaged record") from None


# -- the pool in etcd --------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """Where the pool lives: the etcd prefix (the same ETCD_PREFIX lease-key reads)."""

    prefix: str = DEFAULT_PREFIX

    def key(self, address: str) -> bytes:
        return f"{self.prefix}keys/{address.lower()}".encode()

    def used(self, address: str) -> bytes:
        return f"{self.prefix}used/{address.lower()}".encode()


def key_record(kek: bytes, private_key: bytes, now: datetime) -> tuple[str, bytes]:
    address = address_of(private_key)
    record = {"version": 1, "address": address, "cipher": CIPHER, "kek": kek_id(kek),
              "ciphertext": encrypt(kek, private_key, address),
              "created_at": now.isoformat()}
    return address, json.dumps(record, separators=(",", ":")).encode()


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
    found = await client.get_prefix(f"{pool.prefix}keys/".encode(), keys_only=True)
    return sorted(kv.key.decode().rsplit("/", 1)[1] for kv in found)


def client_for(endpoints: str, timeout: float = 10.0) -> aetcd.Client:
    """An etcd client for the first of ETCD_ENDPOINTS (aetcd speaks to one endpoint)."""
    first = urlsplit(endpoints.split(",")[0].strip())
    if first.scheme != "http" or not first.hostname or not first.port:
        raise KeysError("ETCD_ENDPOINTS must be http://host:port[,…]")
    return aetcd.Client(host=first.hostname, port=first.port, timeout=timeout)


# -- settings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    endpoints: str
    pool: Pool
    kek: bytes


def dev_key_encryption_key(layout: Layout) -> str:
    """The local stack's development KEK (base64 of 32 bytes), made once per stack
    directory. A file of its own (mode 600, created so), not secrets.json: that one is
    rewritten by the stack's own secret maker, and a lost KEK is a lost pool."""
    path = layout.state / DEV_KEK_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another run made it first: use that one
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return path.read_text().strip()


def settings_from(env: Mapping[str, str], layout: Layout) -> Settings:
    prefix = env.get("ETCD_PREFIX") or DEFAULT_PREFIX
    if not (prefix.startswith("/eventworks/") and prefix.endswith("/")):
        raise KeysError("ETCD_PREFIX must start with /eventworks/ and end with /")
    endpoints = env.get("ETCD_ENDPOINTS")
    kek_text = env.get("KEY_ENCRYPTION_KEY")
    if endpoints is None:
        from stack import supervisor

        stack_env = supervisor.running_env(layout)
        if stack_env is None or "ETCD_ENDPOINTS" not in stack_env:
            raise KeysError("set ETCD_ENDPOINTS, or start the local stack (./taskw start)")
        endpoints = stack_env["ETCD_ENDPOINTS"]
        # A development KEK only for the local stack's own etcd: a real pool must never be
        # sealed with a key that lives in a developer's .stack/.
        kek_text = kek_text or dev_key_encryption_key(layout)
    if not kek_text:
        raise KeysError("set KEY_ENCRYPTION_KEY (32 bytes, base64) for this etcd")
    return Settings(endpoints=endpoints, pool=Pool(prefix), kek=parse_kek(kek_text))


# -- the command -------------------------------------------------------------------------
USAGE = "usage: python -m stack.keys generate N | import FILE"


def _keys_to_store(argv: Sequence[str]) -> list[bytes]:
    match argv:
        case ["generate", count] if count.isdigit() and 0 < int(count) <= 100_000:
            return [generate_private_key() for _ in range(int(count))]
        case ["import", file]:
            return read_key_file(Path(file))
    raise KeysError(USAGE)


async def _store_all(settings: Settings, private_keys: list[bytes]) -> list[tuple[str, bool]]:
    async with client_for(settings.endpoints) as client:
        return await store(client, settings.pool, settings.kek, private_keys)


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    try:
        private_keys = _keys_to_store(argv)
        settings = settings_from(dict(os.environ if env is None else env), Layout.from_env(
            None if env is None else dict(env)))
    except KeysError as exc:
        print(exc, file=sys.stderr)
        return 2 if str(exc) == USAGE else 1
    try:
        results = asyncio.run(_store_all(settings, private_keys))
    except aetcd.ClientError as exc:
        print(f"etcd at {settings.endpoints} failed: {type(exc).__name__}", file=sys.stderr)
        return 1
    for address, added in results:
        print(f"{address} {'added' if added else 'already in the pool'}")
    added_count = sum(added for _, added in results)
    print(f"{added_count} added, {len(results) - added_count} already there; "
          f"pool {settings.pool.prefix} at {settings.endpoints}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
