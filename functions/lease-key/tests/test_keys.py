"""The pool's keys: `python -m stack.keys` (generate, import), addresses, encryption at rest.

Pure parts on plain values; storing and the command against the local stack's etcd.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack import keys

# eth-account's documented example key and its address.
KNOWN_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
KNOWN_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


def test_given_known_private_key_when_address_derived_then_eth_account_address():
    assert keys.address_of(keys.parse_private_key(KNOWN_KEY)) == KNOWN_ADDRESS


@pytest.mark.parametrize("address", [
    # EIP-55's own test vectors.
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0xde709f2102306220921060314715629080e2fb77",
])
def test_given_eip55_vectors_when_checksummed_then_same_case(address):
    assert keys.checksum_address(address.lower()) == address


def test_given_generated_keys_then_valid_and_distinct():
    generated = {keys.generate_private_key() for _ in range(50)}
    assert len(generated) == 50
    assert all(keys.valid_private_key(k) for k in generated)


@pytest.mark.parametrize("text", ["", "00" * 32, "ff" * 32, "zz" * 32, "ab" * 31, "0x" + "1" * 65])
def test_given_not_a_private_key_when_parsed_then_value_error(text):
    with pytest.raises(ValueError, match=r"hex|secp256k1"):
        keys.parse_private_key(text)


@settings(max_examples=25)
@given(st.binary(min_size=32, max_size=32).filter(keys.valid_private_key))
def test_given_any_key_when_encrypted_then_decrypts_only_with_its_kek_and_address(private_key):
    kek, other = secrets.token_bytes(32), secrets.token_bytes(32)
    address = keys.address_of(private_key)
    sealed = keys.encrypt(kek, private_key, address)
    assert private_key.hex() not in sealed
    assert keys.decrypt(kek, sealed, address) == private_key
    assert keys.decrypt(kek, sealed, address.lower()) == private_key
    with pytest.raises(keys.KeysError):
        keys.decrypt(other, sealed, address)
    with pytest.raises(keys.KeysError):
        keys.decrypt(kek, sealed, KNOWN_ADDRESS)   # a ciphertext moved onto another address


def test_given_tampered_ciphertext_when_decrypted_then_refused_without_the_key_in_the_message():
    kek, private_key = secrets.token_bytes(32), keys.parse_private_key(KNOWN_KEY)
    raw = bytearray(base64.b64decode(keys.encrypt(kek, private_key, KNOWN_ADDRESS)))
    raw[20] ^= 1
    with pytest.raises(keys.KeysError) as refused:
        keys.decrypt(kek, base64.b64encode(bytes(raw)).decode(), KNOWN_ADDRESS)
    assert KNOWN_KEY[2:] not in str(refused.value)


def test_given_same_key_twice_when_encrypted_then_fresh_nonce_each_time():
    kek, private_key = secrets.token_bytes(32), keys.parse_private_key(KNOWN_KEY)
    assert keys.encrypt(kek, private_key, KNOWN_ADDRESS) != keys.encrypt(
        kek, private_key, KNOWN_ADDRESS)


@pytest.mark.parametrize(("text", "says"), [
    (base64.b64encode(b"x" * 16).decode(), "32 bytes"),
    ("not base64!", "base64"),
])
def test_given_bad_kek_when_parsed_then_refused_without_echoing_it(text, says):
    with pytest.raises(keys.KeysError, match=says) as refused:
        keys.parse_kek(text)
    assert text not in str(refused.value)


def test_given_kek_in_either_base64_alphabet_when_parsed_then_32_bytes():
    kek = bytes(range(200, 232))
    assert keys.parse_kek(base64.b64encode(kek).decode()) == kek
    assert keys.parse_kek(base64.urlsafe_b64encode(kek).decode()) == kek


def test_given_key_file_with_bad_line_when_read_then_line_number_named_not_content(tmp_path):
    secret = "ab" * 31
    path = tmp_path / "keys.txt"
    path.write_text(f"# pool\n{KNOWN_KEY}\n\n{secret}\n")
    with pytest.raises(keys.KeysError, match=r"keys.txt:4: ") as refused:
        keys.read_key_file(path)
    assert secret not in str(refused.value)


def test_given_key_file_when_read_then_keys_with_or_without_0x_and_comments(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"{KNOWN_KEY}  # the documented one\n{KNOWN_KEY[2:].upper()}\n")
    assert keys.read_key_file(path) == [keys.parse_private_key(KNOWN_KEY)] * 2


# -- against etcd ---------------------------------------------------------------------------
@pytest.fixture
def prefix():
    return f"/eventworks/test/{uuid.uuid4().hex}/keys/"


@pytest.fixture
def cli_env(stack_env, prefix, tmp_path):
    return {"ETCD_ENDPOINTS": stack_env["ETCD_ENDPOINTS"], "ETCD_PREFIX": prefix,
            "KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "EVENTWORKS_STACK_DIR": str(tmp_path / "no-stack")}


def stored(stack_env, prefix):
    async def read():
        async with keys.client_for(stack_env["ETCD_ENDPOINTS"]) as client:
            found = {kv.key.decode(): json.loads(kv.value)
                     for kv in await client.get_prefix(prefix.encode())}
            await client.delete_prefix(prefix.encode())
            return found
    return asyncio.run(read())


@pytest.mark.stack
def test_given_generate_3_when_run_then_3_encrypted_keys_and_only_addresses_printed(
        cli_env, stack_env, prefix, capsys):
    assert keys.main(["generate", "3"], env=cli_env) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3
    assert all(line.endswith(" added") and len(line.split()[0]) == 42 for line in lines)
    records = stored(stack_env, prefix)
    kek = keys.parse_kek(cli_env["KEY_ENCRYPTION_KEY"])
    for line in lines:
        address = line.split()[0]
        record = records[f"{prefix}keys/{address.lower()}"]
        assert record["address"] == address
        assert record["cipher"] == "AES-256-GCM"
        assert record["kek"] == keys.kek_id(kek)
        private_key = keys.decrypt(kek, record["ciphertext"], address)
        assert keys.address_of(private_key) == address
        assert private_key.hex() not in out + err
        assert records[f"{prefix}used/{address.lower()}"] == {"address": address,
                                                              "last_used_at": None}


@pytest.mark.stack
def test_given_file_imported_twice_then_second_run_adds_nothing(
        cli_env, stack_env, prefix, tmp_path, capsys):
    path = tmp_path / "keys.txt"
    path.write_text(KNOWN_KEY + "\n")
    assert keys.main(["import", str(path)], env=cli_env) == 0
    assert keys.main(["import", str(path)], env=cli_env) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines() == [f"{KNOWN_ADDRESS} added", f"{KNOWN_ADDRESS} already in the pool"]
    assert KNOWN_KEY[2:] not in out
    assert len(stored(stack_env, prefix)) == 2   # keys/ and used/ of the one address


@pytest.mark.parametrize("argv", [[], ["generate"], ["generate", "0"], ["generate", "x"],
                                  ["import"], ["delete", "all"]])
def test_given_bad_arguments_when_run_then_usage_and_exit_2(argv, capsys, tmp_path):
    env = {"EVENTWORKS_STACK_DIR": str(tmp_path)}
    assert keys.main(argv, env=env) == 2
    assert "usage" in capsys.readouterr().err


def test_given_external_etcd_without_kek_when_run_then_refused(capsys, tmp_path):
    env = {"ETCD_ENDPOINTS": "http://127.0.0.1:1", "EVENTWORKS_STACK_DIR": str(tmp_path)}
    assert keys.main(["generate", "1"], env=env) == 1
    assert "KEY_ENCRYPTION_KEY" in capsys.readouterr().err
    assert not (tmp_path / keys.DEV_KEK_FILE).exists()


def test_given_no_stack_dir_kek_when_made_then_32_bytes_mode_600_and_stable(tmp_path):
    from stack.layout import Layout

    layout = Layout.from_env({"EVENTWORKS_STACK_DIR": str(tmp_path)})
    first = keys.dev_key_encryption_key(layout)
    assert len(keys.parse_kek(first)) == 32
    assert (tmp_path / keys.DEV_KEK_FILE).stat().st_mode & 0o777 == 0o600
    assert keys.dev_key_encryption_key(layout) == first


def test_given_etcd_down_when_run_then_exit_1_naming_etcd(capsys, tmp_path, unused_port):
    env = {"ETCD_ENDPOINTS": f"http://127.0.0.1:{unused_port}", "EVENTWORKS_STACK_DIR":
           str(tmp_path), "KEY_ENCRYPTION_KEY": base64.b64encode(bytes(32)).decode()}
    assert keys.main(["generate", "1"], env=env) == 1
    assert "etcd" in capsys.readouterr().err
