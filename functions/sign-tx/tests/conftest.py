"""sign-tx's tests against the local stack's PostgreSQL and etcd, with a lease-key of their own.

Each test module gets an etcd prefix of its own, and so a lease-key of its own: the
stack's lease-key reads the default prefix (ETCD_PREFIX is read once, at its start), and
the pool there is the stack's development pool, sealed under another key-encryption key.
That lease-key is a real process, started as the stack starts every function (func-python
serving `stack.scaffold`), so sign-tx calls it over real HTTP at LEASE_KEY_URL, exactly as
it does in the stack and in a cluster. Each test empties the prefix and seeds the keys it
needs: its senders are new, so their nonces start at 0.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from eventing import keypool
from stack.processes import Running, free_port, spawn, tail, terminate

ROOT = Path(__file__).resolve().parents[3]
LEASE_KEY = ROOT / "functions" / "lease-key"
# The secret of sign-tx's caller tokens, shared with this module's lease-key (as the
# Secret eventworks-lease-key-token is in a cluster).
CALLER_SECRET = "sign-tx-tests-" + "c" * 32


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"/eventworks/test/{uuid.uuid4().hex}/keys/"


def start_lease_key(etcd_endpoints: str, prefix: str, log: Path) -> tuple[str, Running]:
    """A lease-key process on `prefix`, served as the stack serves it, once it is ready."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"),
           "LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(LEASE_KEY), str(ROOT)]),
           "ETCD_ENDPOINTS": etcd_endpoints, "ETCD_PREFIX": prefix,
           "LEASE_KEY_TOKEN_SECRET": CALLER_SECRET}
    _, running = spawn("lease-key-for-sign-tx-tests", [sys.executable, "-m", "stack.scaffold"],
                       env=env, log=log, cwd=LEASE_KEY, ports=(port,))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, log)
    except BaseException:
        terminate([running])
        raise
    return url, running


def wait_ready(url: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health/readiness", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not become ready:\n{tail(log)}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lease_key_url(stack_env, prefix, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("lease-key") / "lease-key.log"
    url, running = start_lease_key(stack_env["ETCD_ENDPOINTS"], prefix, log)
    try:
        yield url
    finally:
        terminate([running])


@pytest.fixture
def own_lease_key(stack_env, prefix, tmp_path) -> Iterator[tuple[str, Running]]:
    """A lease-key of one test's own on the module's prefix (its URL and process), for a
    test that stops it (SIGSTOP) without the others noticing."""
    url, running = start_lease_key(stack_env["ETCD_ENDPOINTS"], prefix,
                                   tmp_path / "own-lease-key.log")
    try:
        yield url, running
    finally:
        terminate([running])


@pytest.fixture(scope="module")
def kek() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
async def etcd(stack_env, prefix) -> AsyncIterator[object]:
    """An etcd client on an empty pool: whatever an earlier test left is gone."""
    client = keypool.client_for(stack_env["ETCD_ENDPOINTS"])
    await client.delete_prefix(prefix.encode())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def env(stack_env, prefix, kek, lease_key_url) -> dict[str, str]:
    """sign-tx's settings, as the stack gives them, on this module's pool."""
    return {"DATABASE_URL": stack_env["DATABASE_URL_SIGNING"],
            "ETCD_ENDPOINTS": stack_env["ETCD_ENDPOINTS"], "ETCD_PREFIX": prefix,
            "KEY_ENCRYPTION_KEY": base64.b64encode(kek).decode(),
            "LEASE_KEY_URL": lease_key_url, "LEASE_KEY_TOKEN_SECRET": CALLER_SECRET,
            "SIGNING_CHAIN_ID": "1",
            "SIGNING_WORKER_ID": "worker-1"}
