"""eventing.keypool as sign-tx reads it: records that open only with their KEK and under
their own address, and a key that never shows itself. (Writing, encryption at rest and the
CLI are tested with stack.keys in functions/lease-key/tests/test_keys.py.)"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

import pytest

from eventing import ethereum, keypool

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


def record(kek: bytes, private_key: bytes = KEY, /, **changes: object) -> bytes:
    _, raw = keypool.key_record(kek, private_key, datetime.now(UTC))
    return json.dumps({**json.loads(raw), **changes}).encode()


def test_given_record_when_opened_with_its_kek_then_the_key_and_its_lower_case_address():
    kek = secrets.token_bytes(32)
    key = keypool.open_record(kek, record(kek), ADDRESS)
    assert key.address == ADDRESS.lower() == ethereum.address_of(KEY)
    assert key.secret == KEY
    assert keypool.address_of(KEY) == ADDRESS


def test_given_signing_key_then_repr_and_str_show_only_the_address():
    key = keypool.SigningKey(ADDRESS.lower(), KEY)
    for shown in (repr(key), str(key), repr([key]), f"{key}"):
        assert KEY.hex() not in shown
        assert repr(KEY) not in shown
        assert ADDRESS.lower() in shown


@pytest.mark.parametrize(("tamper", "says"), [
    (lambda kek: record(secrets.token_bytes(32)), "another key-encryption key"),
    (lambda kek: record(kek, address="0x" + "11" * 20), "names another address"),
    (lambda kek: record(kek, cipher="ROT13"), "not AES-256-GCM"),
    (lambda kek: b"not json", "unreadable"),
    (lambda kek: record(kek, ciphertext=json.loads(record(kek, secrets.token_bytes(32)))[
        "ciphertext"], kek=None), "does not decrypt"),
])
def test_given_record_that_must_not_open_when_opened_then_keys_error_naming_only_the_address(
        tamper, says):
    kek = secrets.token_bytes(32)
    with pytest.raises(keypool.KeysError, match=says) as refused:
        keypool.open_record(kek, tamper(kek), ADDRESS)
    assert KEY.hex() not in str(refused.value)
    assert kek.hex() not in str(refused.value)


def test_given_record_of_another_key_under_this_address_when_opened_then_refused():
    # Sealed for ADDRESS (the associated data matches) but holding another key: a record
    # written wrongly must not make sign-tx sign as someone else.
    kek, other = secrets.token_bytes(32), secrets.token_bytes(32)
    raw = json.dumps({"version": 1, "address": ADDRESS, "cipher": keypool.CIPHER,
                      "kek": keypool.kek_id(kek),
                      "ciphertext": keypool.encrypt(kek, other, ADDRESS)}).encode()
    with pytest.raises(keypool.KeysError, match="another address"):
        keypool.open_record(kek, raw, ADDRESS)


@pytest.mark.parametrize(("env", "says"), [({}, "set KEY_ENCRYPTION_KEY"),
                                           ({"KEY_ENCRYPTION_KEY": "c2hvcnQ="}, "32 bytes")])
def test_given_env_without_a_usable_kek_when_loaded_then_keys_error(env, says):
    with pytest.raises(keypool.KeysError, match=says):
        keypool.kek_from_env(env)


def test_given_pool_then_keys_and_used_entries_under_the_prefix_in_lower_case():
    pool = keypool.Pool("/eventworks/test/x/keys/")
    assert pool.key(ADDRESS) == f"/eventworks/test/x/keys/keys/{ADDRESS.lower()}".encode()
    assert pool.used(ADDRESS) == f"/eventworks/test/x/keys/used/{ADDRESS.lower()}".encode()


@pytest.mark.stack
async def test_given_pool_in_etcd_when_read_then_the_key_and_a_missing_one_is_keys_error(
        stack_env):
    kek = secrets.token_bytes(32)
    pool = keypool.Pool(f"/eventworks/test/{secrets.token_hex(8)}/keys/")
    async with keypool.client_for(stack_env["ETCD_ENDPOINTS"]) as client:
        try:
            assert await keypool.store(client, pool, kek, [KEY]) == [(ADDRESS, True)]
            assert await keypool.addresses(client, pool) == [ADDRESS.lower()]
            key = await keypool.read_key(client, pool, kek, ADDRESS)
            assert key.secret == KEY
            with pytest.raises(keypool.KeysError, match="no key"):
                await keypool.read_key(client, pool, kek, "0x" + "22" * 20)
        finally:
            await client.delete_prefix(pool.prefix.encode())
