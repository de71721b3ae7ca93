"""EIP-712 typed structured data: hash it, and recover who signed it.

verify-tx checks a funder's bounty pledge with it. Written by hand on eventing.ethereum's
Keccak-256 and coincurve (libsecp256k1) for the reason eventing/ethereum.py gives:
`import eth_account` costs about 1 s of cold start. tests/test_eip712.py checks it byte
for byte against eth-account on random pledges and against the EIP's own "Mail" example.

Typed data is the `eth_signTypedData_v4` document (what eth-account calls `full_message`):
`{"types": {...}, "primaryType": "...", "domain": {...}, "message": {...}}`.

    digest = keccak(0x19 0x01 ‖ hashStruct(EIP712Domain, domain) ‖ hashStruct(primaryType, message))
    hashStruct(T, s) = keccak(typeHash(T) ‖ encodeData(T, s))
    typeHash(T) = keccak(encodeType(T)): T's fields, then the struct types it references
                  (transitively), sorted by name

Stricter than eth-account, which fills a missing field with zero and turns text into
bytes: here a missing field, an unknown type or a value that is not of its type is
MalformedTypedData, so that one document has one reading. Supported field types: the
atomic `uint8`…`uint256`, `int8`…`int256`, `bool`, `address`, `bytes1`…`bytes32`, the
dynamic `string` and `bytes`, and struct types. Not arrays: no pledge has one.
Integers are JSON integers or decimal strings (wallets send uint256 as strings, since a
JSON number loses precision beyond 2^53); bytes and addresses are 0x-hex strings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from coincurve import PublicKey

from eventing.ethereum import SECP256K1_N, BadSignature, address_bytes, keccak

DOMAIN = "EIP712Domain"
# The domain's fields in the order the EIP lists them: a domain type that types does not
# spell out takes the fields present in the domain, in this order (as eth-account does).
DOMAIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "string"), ("version", "string"), ("chainId", "uint256"),
    ("verifyingContract", "address"), ("salt", "bytes32"))

Fields = tuple[tuple[str, str], ...]  # (name, type) of a struct's fields, in order
Types = Mapping[str, Fields]

_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_INT = re.compile(r"^(u?)int([0-9]{1,3})$")
_FIXED_BYTES = re.compile(r"^bytes([0-9]{1,2})$")
_DECIMAL = re.compile(r"^(0|-?[1-9][0-9]*)$")
_HEX = re.compile(r"^0x([0-9a-fA-F]{2})*$")


class MalformedTypedData(ValueError):
    """Not EIP-712 typed data this module reads: a missing key, an undefined type, a value
    that is not of its declared type."""


# -- the document -----------------------------------------------------------------------
def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedTypedData(f"{what} is not an object")
    return value


def struct_types(typed_data: Mapping[str, Any]) -> dict[str, Fields]:
    """`types` as (name, type) pairs per struct, with the domain type when it is implied."""
    raw = _mapping(typed_data.get("types"), "types")
    types: dict[str, Fields] = {}
    for name, fields in raw.items():
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise MalformedTypedData(f"types: {name!r} is not a type name")
        if not isinstance(fields, list):
            raise MalformedTypedData(f"types.{name} is not a list of fields")
        pairs = []
        for field in fields:
            field = _mapping(field, f"a field of types.{name}")
            field_name, field_type = field.get("name"), field.get("type")
            if not isinstance(field_name, str) or not isinstance(field_type, str):
                raise MalformedTypedData(f"a field of types.{name} lacks a name or a type")
            pairs.append((field_name, field_type))
        if len({n for n, _ in pairs}) != len(pairs):
            raise MalformedTypedData(f"types.{name} names a field twice")
        types[name] = tuple(pairs)
    if DOMAIN not in types:
        domain = _mapping(typed_data.get("domain"), "domain")
        types[DOMAIN] = tuple((n, t) for n, t in DOMAIN_FIELDS if n in domain)
    for name, fields in types.items():
        for field_name, field_type in fields:
            if field_type not in types and _atomic(field_type) is None:
                raise MalformedTypedData(
                    f"types.{name}.{field_name}: {field_type!r} is no type read here")
    return types


# -- encodeType, hashStruct -------------------------------------------------------------
def _referenced(primary: str, types: Types, found: set[str]) -> set[str]:
    if primary in found:
        return found
    found.add(primary)
    for _, field_type in types[primary]:
        if field_type in types:
            _referenced(field_type, types, found)
    return found


def encode_type(primary: str, types: Types) -> str:
    """`Name(type name,…)` of the type, then of each struct it references, sorted by name."""
    if primary not in types:
        raise MalformedTypedData(f"no type {primary!r} in types")
    referenced = sorted(_referenced(primary, types, set()) - {primary})
    return "".join(f"{name}({','.join(f'{t} {n}' for n, t in types[name])})"
                   for name in [primary, *referenced])


def type_hash(primary: str, types: Types) -> bytes:
    return keccak(encode_type(primary, types).encode())


def encode_data(primary: str, types: Types, data: Mapping[str, Any]) -> bytes:
    """Each field as 32 bytes, in the type's order: atomic values ABI-encoded, `string`
    and `bytes` as the keccak of their contents, structs as their hashStruct."""
    data = _mapping(data, f"the {primary} value")
    extra = set(data) - {n for n, _ in types[primary]}
    if extra:
        raise MalformedTypedData(f"{primary} has no field {sorted(extra)[0]!r}")
    encoded = []
    for name, field_type in types[primary]:
        if name not in data:
            raise MalformedTypedData(f"{primary}.{name} is missing")
        encoded.append(_encode_field(types, field_type, data[name], f"{primary}.{name}"))
    return b"".join(encoded)


def hash_struct(primary: str, types: Types, data: Mapping[str, Any]) -> bytes:
    return keccak(type_hash(primary, types) + encode_data(primary, types, data))


def _atomic(field_type: str) -> str | None:
    """The kind of an atomic or dynamic type (int, bool, address, fixed, string, bytes)."""
    if field_type in ("bool", "address", "string", "bytes"):
        return field_type
    sized = _INT.match(field_type)
    if sized and 8 <= int(sized[2]) <= 256 and int(sized[2]) % 8 == 0:
        return "int"
    fixed = _FIXED_BYTES.match(field_type)
    if fixed and 1 <= int(fixed[1]) <= 32:
        return "fixed"
    return None


def integer(value: object, field_type: str = "uint256") -> int:
    """An integer field's value: a JSON integer or a decimal string, within its type."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedTypedData(f"{value!r} is not an integer")
    if isinstance(value, str):
        if not _DECIMAL.match(value):
            raise MalformedTypedData(f"{value!r} is not a decimal integer")
        value = int(value)
    sized = _INT.match(field_type)
    assert sized is not None
    bits = int(sized[2])
    low, high = (0, 2**bits) if sized[1] else (-(2 ** (bits - 1)), 2 ** (bits - 1))
    if not low <= value < high:
        raise MalformedTypedData(f"{value} is out of range for {field_type}")
    return value


def _hex_bytes(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX.match(value):
        raise MalformedTypedData(f"{where}: {value!r} is not 0x-hex bytes")
    return bytes.fromhex(value[2:])


def _encode_field(types: Types, field_type: str, value: object, where: str) -> bytes:
    if field_type in types:
        return hash_struct(field_type, types, _mapping(value, where))
    kind = _atomic(field_type)
    if kind == "string":
        if not isinstance(value, str):
            raise MalformedTypedData(f"{where}: {value!r} is not a string")
        return keccak(value.encode())
    if kind == "bytes":
        return keccak(_hex_bytes(value, where))
    if kind == "bool":
        if not isinstance(value, bool):
            raise MalformedTypedData(f"{where}: {value!r} is not true or false")
        return int(value).to_bytes(32, "big")
    if kind == "address":
        if not isinstance(value, str):
            raise MalformedTypedData(f"{where}: {value!r} is not an address")
        try:
            return address_bytes(value).rjust(32, b"\x00")
        except ValueError as exc:
            raise MalformedTypedData(f"{where}: {exc}") from None
    if kind == "fixed":
        raw = _hex_bytes(value, where)
        if len(raw) != int(field_type[5:]):
            raise MalformedTypedData(f"{where}: {len(raw)} bytes are not a {field_type}")
        return raw.ljust(32, b"\x00")  # bytesN is left-aligned, as in the ABI
    try:
        number = integer(value, field_type)
    except MalformedTypedData as exc:
        raise MalformedTypedData(f"{where}: {exc}") from None
    return (number % 2**256).to_bytes(32, "big")  # an intN below 0 in two's complement


# -- the digest, and its signer ---------------------------------------------------------
def domain_separator(typed_data: Mapping[str, Any]) -> bytes:
    types = struct_types(typed_data)
    return hash_struct(DOMAIN, types, _mapping(typed_data.get("domain"), "domain"))


def digest(typed_data: Mapping[str, Any]) -> bytes:
    """What a wallet signs for `eth_signTypedData_v4`: keccak(0x1901 ‖ domain ‖ message)."""
    types = struct_types(typed_data)
    primary = typed_data.get("primaryType")
    if not isinstance(primary, str) or primary == DOMAIN:
        raise MalformedTypedData("primaryType is not a struct type of the message")
    domain = hash_struct(DOMAIN, types, _mapping(typed_data.get("domain"), "domain"))
    message = hash_struct(primary, types, _mapping(typed_data.get("message"), "message"))
    return keccak(b"\x19\x01" + domain + message)


def recover_digest(message_hash: bytes, signature: bytes) -> str:
    """The address whose key signed the 32-byte hash, lower case. The signature is 65
    bytes r ‖ s ‖ v with v 27/28 (as wallets give it) or 0/1; BadSignature when r or s
    is out of range, s is high (EIP-2: its low twin would verify too), or no key recovers."""
    if len(signature) != 65:
        raise BadSignature(f"a signature is 65 bytes (r ‖ s ‖ v), not {len(signature)}")
    r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), \
        signature[64]
    if v not in (0, 1, 27, 28):
        raise BadSignature(f"v {v} is none of 0, 1, 27, 28")
    if not 0 < r < SECP256K1_N:
        raise BadSignature("r is out of range")
    if not 0 < s <= SECP256K1_N // 2:
        raise BadSignature("s is zero or high (EIP-2)")
    try:
        public = PublicKey.from_signature_and_message(signature[:64] + bytes([v % 27]),
                                                      message_hash, hasher=None)
    except ValueError:  # r is no point's x coordinate: no key signed this
        raise BadSignature("no public key recovers from this signature") from None
    return "0x" + keccak(public.format(compressed=False)[1:])[-20:].hex()


def recover_typed(typed_data: Mapping[str, Any], signature: bytes) -> str:
    """The address that signed the typed data (lower case). MalformedTypedData when the
    document cannot be hashed, BadSignature when the signature recovers no key."""
    return recover_digest(digest(typed_data), signature)
