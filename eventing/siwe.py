"""EIP-4361 Sign-In with Ethereum: format, parse and verify the message link-identity uses.

link-identity issues a SIWE challenge for `/link 0x…` and checks the signed answer. Written
on eventing.ethereum's Keccak-256 and eventing.eip712's `recover_digest` (coincurve), not on
the `siwe` package: that package pulls in web3 (more cold start than eth-account, which
eventing/ethereum.py already measured as too much) and parses with the `abnf` package,
whose newest release breaks it. The format is small enough to read line by line:
tests/test_siwe.py checks it byte for byte against the EIP's own example messages, and the
EIP-191 hash and recovery against eth-account.

The message, per the EIP's ABNF (optional parts in brackets, LF line ends, none after the
last line):

    [scheme "://"] domain " wants you to sign in with your Ethereum account:"
    address                          EIP-55 checksummed
    (empty line)
    [statement] + line only when present
    (empty line)
    URI: uri
    Version: 1
    Chain ID: chain-id
    Nonce: nonce                     at least 8 ASCII letters and digits
    Issued At: issued-at             RFC 3339 date-time
    [Expiration Time: …] [Not Before: …] [Request ID: …]
    [Resources: then one "- uri" line each]

Stricter than the ABNF in three places, so that one message has exactly one text (and the
signature covers what we read): the address must carry its EIP-55 checksum (the ABNF says
"where applicable"; every address we link is an account's), `Chain ID` has no leading zeros
and is positive, and a `Resources:` line lists at least one resource. URIs are checked for
RFC 3986's characters and shape (`scheme:`, well-formed % escapes, one `#`), not its full
grammar. Timestamps are kept as written (a reformatted `.000Z` would change the signed
bytes); `timestamp()` reads them.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone

from eventing.eip712 import recover_digest
from eventing.ethereum import keccak

HEADER = " wants you to sign in with your Ethereum account:"
VERSION = "1"
_MAX_CHAIN_ID = 2**256 - 1  # EIP-712 domains carry chainId as a uint256

# RFC 3986 character classes (ASCII only: `re.ASCII` is not needed as the classes are
# spelled out, and spelling them out keeps Unicode letters and digits out).
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_RESERVED = r":/?#\[\]@" + _SUB_DELIMS
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_AUTHORITY = re.compile(
    rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:%]*@)?"  # userinfo
    rf"(?:\[[0-9A-Fa-f:.vV{_UNRESERVED}{_SUB_DELIMS}]+\]|[{_UNRESERVED}{_SUB_DELIMS}%]+)"  # host
    r"(?::[0-9]*)?")  # port
_URI = re.compile(rf"[A-Za-z][A-Za-z0-9+\-.]*:[{_UNRESERVED}{_RESERVED}%]*")
_STATEMENT = re.compile(rf"[{_UNRESERVED}{_RESERVED} ]*")
_REQUEST_ID = re.compile(rf"[{_UNRESERVED}{_SUB_DELIMS}:@%]*")  # *pchar
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ADDRESS = re.compile(r"0x[0-9A-Fa-f]{40}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_CHAIN_ID = re.compile(r"[1-9][0-9]*")
_DATE_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))")


class SiweError(ValueError):
    """A sign-in link-identity refuses (a 4xx with this message as the reason)."""


class InvalidSiweMessage(SiweError):
    """The text is not an EIP-4361 message, or a field is not what the EIP allows."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SignatureMismatch(SiweError):
    """The signature is from some key, but not the one of the message's address."""


class WrongDomain(SiweError):
    """The message was made for another site: its domain or URI is not ours."""


class Expired(SiweError):
    """Now is at or after the message's Expiration Time."""


class NotYetValid(SiweError):
    """Now is before the message's Not Before."""


@dataclass(frozen=True, kw_only=True)
class SiweMessage:
    """One EIP-4361 message, its fields as the text spells them. Constructing one checks
    every field (InvalidSiweMessage), so `format` always writes a text `parse` reads back.
    `statement=""` and `statement=None` are different texts (an empty line, or none)."""

    domain: str
    address: str  # EIP-55 checksummed: use eip55() on a lower-case address
    statement: str | None = None
    uri: str
    version: str = VERSION
    chain_id: int
    nonce: str
    issued_at: str
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = ()
    scheme: str | None = None  # the current ERC's optional `https://` before the domain

    def __post_init__(self) -> None:
        for field in fields(self):
            _check(field.name, getattr(self, field.name))


# -- fields -----------------------------------------------------------------------------
def eip55(address: str) -> str:
    """The EIP-55 mixed-case checksum spelling of a 0x + 40 hex digit address (any case):
    a letter is upper case where the same nibble of keccak(lower-case hex) is 8 or more."""
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"{address!r} is not 0x and 40 hex digits")
    digits = address[2:].lower()
    nibbles = keccak(digits.encode()).hex()[:40]
    return "0x" + "".join(c.upper() if int(n, 16) >= 8 else c
                          for c, n in zip(digits, nibbles, strict=True))


def timestamp(value: str) -> datetime:
    """An RFC 3339 date-time as an aware datetime. ValueError when it is not one. A leap
    second (:60) reads as the next second; fractions beyond microseconds are cut."""
    match = _DATE_TIME.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time (2021-09-30T16:25:24Z)")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction, zulu, sign, offset_hours, offset_minutes = match.group(7, 8, 9, 10, 11)
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"{value!r}: time of day out of range")
    if zulu:
        zone = UTC
    else:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise ValueError(f"{value!r}: offset out of range")
        offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        zone = timezone(-offset if sign == "-" else offset)
    micros = int((fraction or ".0")[1:7].ljust(6, "0"))
    # datetime() checks the month and the day of the month (Feb 30 is refused).
    at = datetime(year, month, day, hour, minute, min(second, 59), micros, tzinfo=zone)
    return at + timedelta(seconds=1) if second == 60 else at


def new_nonce() -> str:
    """A fresh nonce for a challenge: 128 random bits as 32 hex digits. Not token_urlsafe:
    its `-` and `_` are not in the EIP's nonce alphabet."""
    return secrets.token_hex(16)


def _escapes_ok(value: str) -> bool:
    return _BAD_ESCAPE.search(value) is None


def _uri_ok(value: str) -> bool:
    return bool(_URI.fullmatch(value)) and _escapes_ok(value) and value.count("#") <= 1


def _check_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidSiweMessage(field, f"{value!r} is not text")
    return value


def _check(field: str, value: object) -> None:
    """Refuse a field value the EIP's ABNF (and the stricter rules above) does not allow."""
    if field in ("statement", "expiration_time", "not_before", "request_id", "scheme") \
            and value is None:
        return
    if field == "chain_id":
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 1 <= value <= _MAX_CHAIN_ID:
            raise InvalidSiweMessage(field, f"{value!r} is not a positive integer (uint256)")
        return
    if field == "resources":
        if not isinstance(value, tuple):
            raise InvalidSiweMessage(field, "not a tuple of URIs")
        for resource in value:
            if not _uri_ok(_check_text(field, resource)):
                raise InvalidSiweMessage(field, f"{resource!r} is not an RFC 3986 URI")
        return
    text = _check_text(field, value)
    if field == "domain":
        if not _AUTHORITY.fullmatch(text) or not _escapes_ok(text):
            raise InvalidSiweMessage(field, f"{text!r} is not an RFC 3986 authority")
    elif field == "scheme":
        if not _SCHEME.fullmatch(text):
            raise InvalidSiweMessage(field, f"{text!r} is not an RFC 3986 scheme")
    elif field == "address":
        if not _ADDRESS.fullmatch(text):
            raise InvalidSiweMessage(field, f"{text!r} is not 0x and 40 hex digits")
        if eip55(text) != text:
            raise InvalidSiweMessage(
                field, f"{text!r} does not carry its EIP-55 checksum ({eip55(text)})")
    elif field == "statement":
        if not _STATEMENT.fullmatch(text):
            raise InvalidSiweMessage(
                field, "only RFC 3986 reserved and unreserved characters and spaces, one line")
    elif field == "uri":
        if not _uri_ok(text):
            raise InvalidSiweMessage(field, f"{text!r} is not an RFC 3986 URI")
    elif field == "version":
        if text != VERSION:
            raise InvalidSiweMessage(field, f"{text!r}: this EIP's version is {VERSION}")
    elif field == "nonce":
        if not _NONCE.fullmatch(text):
            raise InvalidSiweMessage(field, "at least 8 ASCII letters and digits")
    elif field in ("issued_at", "expiration_time", "not_before"):
        try:
            timestamp(text)
        except ValueError as exc:
            raise InvalidSiweMessage(field, str(exc)) from None
    elif field == "request_id":
        if not _REQUEST_ID.fullmatch(text) or not _escapes_ok(text):
            raise InvalidSiweMessage(field, "only RFC 3986 path characters (pchar)")
    else:  # a field added to SiweMessage without a rule here
        raise AssertionError(f"no rule for {field}")


# -- the text ---------------------------------------------------------------------------
# The lines after Issued At, in the EIP's order: (field, prefix).
_OPTIONAL = (("expiration_time", "Expiration Time: "), ("not_before", "Not Before: "),
             ("request_id", "Request ID: "))
_PREFIXES = (("uri", "URI: "), ("version", "Version: "), ("chain_id", "Chain ID: "),
             ("nonce", "Nonce: "), ("issued_at", "Issued At: "), *_OPTIONAL,
             ("resources", "Resources:"), ("resources", "- "))
_ORDER = "URI, Version, Chain ID, Nonce, Issued At, Expiration Time, Not Before, " \
         "Request ID, Resources"


def format(message: SiweMessage) -> str:
    """The exact text a wallet signs for the message. (Named as the issue names it; it
    shadows the builtin only inside this module, which does not use the builtin.)"""
    origin = message.domain if message.scheme is None else f"{message.scheme}://{message.domain}"
    lines = [origin + HEADER, message.address, ""]
    if message.statement is not None:
        lines.append(message.statement)
    lines += ["", f"URI: {message.uri}", f"Version: {message.version}",
              f"Chain ID: {message.chain_id}", f"Nonce: {message.nonce}",
              f"Issued At: {message.issued_at}"]
    for field, prefix in _OPTIONAL:
        value = getattr(message, field)
        if value is not None:
            lines.append(prefix + value)
    if message.resources:
        lines.append("Resources:")
        lines += [f"- {resource}" for resource in message.resources]
    return "\n".join(lines)


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.split("\n")
        self.at = 0

    def peek(self) -> str | None:
        return self.lines[self.at] if self.at < len(self.lines) else None

    def take(self, field: str, prefix: str = "") -> str:
        """The next line without its prefix; InvalidSiweMessage naming the field when the
        line is missing or is another one."""
        line = self.peek()
        if line is None:
            raise InvalidSiweMessage(field, f"missing (the message ends before {prefix!r})")
        if not line.startswith(prefix):
            raise InvalidSiweMessage(field, f"expected a {prefix!r} line here, found "
                                            f"{line[:40]!r} (the EIP's order: {_ORDER})")
        self.at += 1
        return line[len(prefix):]

    def blank(self, field: str) -> None:
        line = self.take(field)
        if line:
            raise InvalidSiweMessage(field, f"expected an empty line after it, found {line[:40]!r}")


def _misplaced(line: str) -> InvalidSiweMessage:
    if line == "":
        return InvalidSiweMessage("message", "an empty line or line break after the last field")
    for field, prefix in _PREFIXES:
        if line.startswith(prefix):
            return InvalidSiweMessage(
                field, f"{prefix.strip()!r} line out of place or repeated (the EIP's order: "
                       f"{_ORDER})")
    return InvalidSiweMessage("message", f"unexpected line {line[:40]!r}")


def parse(text: str) -> SiweMessage:
    """The message the text spells, read strictly line by line per the EIP's ABNF;
    InvalidSiweMessage naming the first field that is missing, out of place or malformed."""
    if "\r" in text:
        raise InvalidSiweMessage("message", "carriage return: the EIP's lines end in LF alone")
    lines = _Lines(text)
    header = lines.take("domain")
    if not header.endswith(HEADER):
        raise InvalidSiweMessage("domain", f"the first line is not '<domain>{HEADER}'")
    origin = header.removesuffix(HEADER)
    scheme: str | None = None
    if "://" in origin:  # no authority holds "://" (userinfo has no "/"): it is a scheme
        scheme, origin = origin.split("://", 1)
        _check("scheme", scheme)
    _check("domain", origin)
    address = lines.take("address")
    _check("address", address)
    lines.blank("address")
    # [statement LF] LF: a non-empty line, or an empty one followed by another, is a statement.
    statement: str | None = None
    if lines.peek() != "" or lines.lines[lines.at + 1:lines.at + 2] == [""]:
        statement = lines.take("statement")
        _check("statement", statement)
    lines.blank("statement")
    values: dict[str, str] = {}
    for field, prefix in _PREFIXES[:5]:
        values[field] = lines.take(field, prefix)
        if field != "chain_id":
            _check(field, values[field])
    if not _CHAIN_ID.fullmatch(values["chain_id"]) or len(values["chain_id"]) > 78:
        raise InvalidSiweMessage(
            "chain_id", f"{values['chain_id'][:40]!r} is not a positive integer without "
                        "leading zeros")
    chain_id = int(values.pop("chain_id"))
    _check("chain_id", chain_id)
    optional: dict[str, str] = {}
    for field, prefix in _OPTIONAL:
        line = lines.peek()
        if line is not None and line.startswith(prefix):
            optional[field] = lines.take(field, prefix)
            _check(field, optional[field])
    resources: list[str] = []
    if lines.peek() == "Resources:":
        lines.take("resources")
        while (line := lines.peek()) is not None and line.startswith("- "):
            resources.append(lines.take("resources", "- "))
            _check("resources", (resources[-1],))
        if not resources:
            raise InvalidSiweMessage("resources", "'Resources:' lists none; leave it out")
    leftover = lines.peek()
    if leftover is not None:
        raise _misplaced(leftover)
    return SiweMessage(scheme=scheme, domain=origin, address=address, statement=statement,
                       chain_id=chain_id, resources=tuple(resources), **values, **optional)


# -- signatures -------------------------------------------------------------------------
def personal_sign_hash(text: str) -> bytes:
    """EIP-191 version 0x45 (`personal_sign`, eth-account's encode_defunct): keccak of
    "\\x19Ethereum Signed Message:\\n" + the decimal byte length + the UTF-8 bytes."""
    data = text.encode()
    return keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)


def recover(text: str, signature: bytes) -> str:
    """The address (lower case) whose key personal_signed the text. The signature is 65
    bytes r ‖ s ‖ v, v 27/28 or 0/1; BadSignature (eventing.ethereum) when it is out of
    range, has a high s (EIP-2), or recovers no key."""
    return recover_digest(personal_sign_hash(text), signature)


def verify(text: str, signature: bytes, *, now: datetime, expected_domain: str,
           expected_uri: str) -> SiweMessage:
    """The message, when the text is a SIWE message its address signed, for our domain
    and URI, and valid at `now` (timezone-aware). Checked in this order, so a message
    changed after signing is a SignatureMismatch whatever field changed:

    - InvalidSiweMessage: the text is not an EIP-4361 message;
    - BadSignature (eventing.ethereum): the signature is from no key (or has a high s);
    - SignatureMismatch: it is from another key than the message's address;
    - WrongDomain: domain or URI differ from the expected ones (exact comparison: we
      issued the message, so it is spelled as we spell it);
    - NotYetValid / Expired: now < Not Before, or now ≥ Expiration Time.

    Not checked here: that the nonce was issued for this login and address and is unused
    (single use). The caller (link-identity) stores the nonces it issues and must check and
    burn the message's nonce itself; without that a captured signature replays. Nor the
    chain id or the scheme, which the caller compares with what it issued.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    message = parse(text)
    signer = recover(text, signature)
    if signer != message.address.lower():
        raise SignatureMismatch(f"signed by {signer}, not by {message.address}")
    if message.domain != expected_domain:
        raise WrongDomain(f"domain {message.domain!r} is not {expected_domain!r}")
    if message.uri != expected_uri:
        raise WrongDomain(f"uri {message.uri!r} is not {expected_uri!r}")
    if message.not_before is not None and now < timestamp(message.not_before):
        raise NotYetValid(f"not before {message.not_before}")
    if message.expiration_time is not None and now >= timestamp(message.expiration_time):
        raise Expired(f"expired at {message.expiration_time}")
    return message
