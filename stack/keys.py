"""The key pool of lease-key in etcd: generate keys, import keys, encrypt them at rest.

    python -m stack.keys generate N     # N new secp256k1 keys
    python -m stack.keys import FILE    # hex private keys, one a line (0x optional, # comments)

Only addresses are ever printed; a private key is never printed, logged or put in an
error message (a bad line of FILE is named by its number only).

Each key is stored as eventing/keypool.py (the record format, shared with sign-tx, which
reads it) and the lease-key pool layout (functions/lease-key/README.md) say:

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
import contextlib
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aetcd

from eventing.ethereum import SECP256K1_N
from eventing.keypool import (
    CIPHER,
    DEFAULT_PREFIX,
    KeysError,
    Pool,
    address_of,
    addresses,
    checksum_address,
    client_for,
    decrypt,
    encrypt,
    kek_id,
    key_record,
    parse_kek,
    store,
)
from stack.layout import Layout

# The pool's record format, encryption and etcd layout live in eventing.keypool, shared
# with sign-tx (which reads what this command writes); re-exported for the stack's callers.
__all__ = ["CIPHER", "DEFAULT_PREFIX", "DEV_KEK_FILE", "KeysError", "Pool", "Settings",
           "address_of", "addresses", "checksum_address", "client_for", "decrypt",
           "dev_key_encryption_key", "encrypt", "generate_private_key", "kek_id", "key_record",
           "main", "parse_kek", "parse_private_key", "read_key_file", "settings_from", "store",
           "valid_private_key"]

DEV_KEK_FILE = "key-encryption-key"


# -- private keys ------------------------------------------------------------------------
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


# -- settings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    endpoints: str
    pool: Pool
    kek: bytes = field(repr=False)  # a secret: never in a repr, a log or a traceback


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
