"""eventing.siwe against EIP-4361's own example messages (byte for byte), EIP-55's checksum
examples, and eth-account's EIP-191 hash and signatures; tampered messages, a message for
another site, outside its validity window, malformed texts, a high-s signature; and the
round trip parse(format(m)) == m on random messages."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_defunct
from eth_utils.address import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from eventing import siwe
from eventing.ethereum import SECP256K1_N, BadSignature, keccak
from eventing.siwe import (
    Expired,
    InvalidSiweMessage,
    NotYetValid,
    SignatureMismatch,
    SiweMessage,
    WrongDomain,
)

EXAMPLES = int(os.environ.get("ETHEREUM_EXAMPLES", "100"))

# EIP-4361's example message as the EIP printed it in 2022 (domain service.invalid), and
# as the current ERC text prints it (example.com: implicit scheme, with a port, with an
# explicit scheme). The address is WETH's, checksummed.
SERVICE_INVALID = """\
service.invalid wants you to sign in with your Ethereum account:
0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2

I accept the ServiceOrg Terms of Service: https://service.invalid/tos

URI: https://service.invalid/login
Version: 1
Chain ID: 1
Nonce: 32891756
Issued At: 2021-09-30T16:25:24Z
Resources:
- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/
- https://example.com/my-web2-claim.json"""
EXAMPLE_COM = SERVICE_INVALID.replace("service.invalid/tos", "example.com/tos").replace(
    "service.invalid", "example.com").replace("ServiceOrg", "ExampleOrg")
EXAMPLE_COM_PORT = EXAMPLE_COM.replace("example.com wants", "example.com:3388 wants")
EXAMPLE_COM_SCHEME = EXAMPLE_COM.replace("example.com wants", "https://example.com wants")

KEY = keccak(b"eventworks siwe test key")
SIGNER = Account.from_key(KEY).address  # checksummed
NOW = datetime(2021, 9, 30, 16, 30, tzinfo=UTC)


def challenge(**changes: object) -> SiweMessage:
    """What link-identity would issue: a statement naming the login, an expiry."""
    fields: dict[str, object] = {
        "domain": "bounties.example", "address": SIGNER,
        "statement": "Link the GitHub account octocat to this address.",
        "uri": "https://bounties.example/link", "chain_id": 1, "nonce": "k3Jd9aQpX2",
        "issued_at": "2021-09-30T16:25:24Z", "expiration_time": "2021-09-30T16:40:24Z"}
    fields.update(changes)
    return SiweMessage(**fields)  # type: ignore[arg-type]


def sign(text: str, key: bytes = KEY) -> bytes:
    return bytes(Account.sign_message(encode_defunct(text=text), key).signature)


def check(text: str, signature: bytes, now: datetime = NOW) -> SiweMessage:
    return siwe.verify(text, signature, now=now, expected_domain="bounties.example",
                       expected_uri="https://bounties.example/link")


# -- the EIP's examples -----------------------------------------------------------------
@pytest.mark.parametrize("text", [SERVICE_INVALID, EXAMPLE_COM, EXAMPLE_COM_PORT,
                                  EXAMPLE_COM_SCHEME])
def test_given_the_eips_example_message_when_parsed_and_formatted_then_byte_for_byte(text):
    assert siwe.format(siwe.parse(text)).encode() == text.encode()


def test_given_the_service_invalid_example_when_parsed_then_every_field_is_read():
    message = siwe.parse(SERVICE_INVALID)
    assert message == SiweMessage(
        domain="service.invalid", address="0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
        statement="I accept the ServiceOrg Terms of Service: https://service.invalid/tos",
        uri="https://service.invalid/login", version="1", chain_id=1, nonce="32891756",
        issued_at="2021-09-30T16:25:24Z",
        resources=("ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/",
                   "https://example.com/my-web2-claim.json"))
    assert siwe.timestamp(message.issued_at) == datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)


def test_given_the_explicit_scheme_and_port_examples_when_parsed_then_scheme_and_domain():
    assert siwe.parse(EXAMPLE_COM_SCHEME).scheme == "https"
    assert siwe.parse(EXAMPLE_COM_SCHEME).domain == "example.com"
    assert siwe.parse(EXAMPLE_COM_PORT).domain == "example.com:3388"
    assert siwe.parse(EXAMPLE_COM_PORT).scheme is None


def test_given_no_statement_when_formatted_then_three_line_breaks_separate_address_and_uri():
    text = siwe.format(replace(siwe.parse(SERVICE_INVALID), statement=None))
    assert "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\n\nURI: " in text
    assert siwe.parse(text).statement is None
    empty = siwe.format(replace(siwe.parse(SERVICE_INVALID), statement=""))
    assert "Cc2\n\n\n\nURI: " in empty
    assert siwe.parse(empty).statement == ""


def test_given_every_optional_line_when_formatted_then_in_the_eips_order():
    message = challenge(not_before="2021-09-30T16:25:24Z", request_id="req-1",
                        resources=("https://bounties.example/terms",))
    tail = siwe.format(message).split("\n")[-6:]
    assert tail == ["Issued At: 2021-09-30T16:25:24Z", "Expiration Time: 2021-09-30T16:40:24Z",
                    "Not Before: 2021-09-30T16:25:24Z", "Request ID: req-1", "Resources:",
                    "- https://bounties.example/terms"]
    assert siwe.parse(siwe.format(message)) == message


# -- EIP-55 ------------------------------------------------------------------------------
EIP55_EXAMPLES = [
    "0x52908400098527886E0F7030069857D2E4169EE7", "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
    "0xde709f2102306220921060314715629080e2fb77", "0x27b1fdb04752bbc536007a920d24acb045561c26",
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("address", EIP55_EXAMPLES)
def test_given_an_eip55_spec_example_when_checksummed_from_any_case_then_the_spec_spelling(
        address):
    assert siwe.eip55(address.lower()) == address
    assert siwe.eip55(address.upper().replace("0X", "0x")) == address


@settings(max_examples=EXAMPLES)
@given(st.binary(min_size=20, max_size=20))
def test_given_random_addresses_when_checksummed_then_as_eth_utils_does(raw):
    assert siwe.eip55("0x" + raw.hex()) == to_checksum_address("0x" + raw.hex())


@pytest.mark.parametrize("bad", ["0x123", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                                 "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg"])
def test_given_something_not_an_address_when_checksummed_then_value_error(bad):
    with pytest.raises(ValueError, match="40 hex digits"):
        siwe.eip55(bad)


# -- EIP-191 and recovery ----------------------------------------------------------------
@settings(max_examples=EXAMPLES)
@given(st.text())
def test_given_any_text_when_hashed_then_eth_accounts_eip191_hash(text):
    assert siwe.personal_sign_hash(text) == bytes(_hash_eip191_message(encode_defunct(text=text)))


def test_given_a_message_signed_with_eth_account_when_recovered_then_the_signer():
    text = siwe.format(challenge())
    signature = sign(text)
    assert siwe.recover(text, signature) == SIGNER.lower()
    assert Account.recover_message(encode_defunct(text=text), signature=signature) == SIGNER
    assert check(text, signature) == challenge()


def test_given_v_as_0_or_1_when_recovered_then_the_same_signer():
    text = siwe.format(challenge())
    signature = sign(text)
    assert siwe.recover(text, signature[:64] + bytes([signature[64] - 27])) == SIGNER.lower()


def test_given_a_high_s_twin_of_a_valid_signature_when_verified_then_bad_signature():
    text = siwe.format(challenge())
    signature = sign(text)
    s = int.from_bytes(signature[32:64], "big")
    # (r, N - s) with the other parity recovers the same key: EIP-2 refuses it.
    twin = signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])
    with pytest.raises(BadSignature, match="high"):
        siwe.recover(text, twin)
    with pytest.raises(BadSignature):
        check(text, twin)


def test_given_a_signature_of_the_wrong_length_when_verified_then_bad_signature():
    text = siwe.format(challenge())
    with pytest.raises(BadSignature, match="65 bytes"):
        check(text, sign(text)[:64])


# -- tampering and the validity checks ----------------------------------------------------
@pytest.mark.parametrize("change", [
    {"statement": "Link the GitHub account mallory to this address."},
    {"nonce": "k3Jd9aQpX3"},
    {"domain": "bounties.example.evil"},
    {"expiration_time": "2031-09-30T16:40:24Z"},
])
def test_given_a_field_changed_after_signing_when_verified_then_signature_mismatch(change):
    signature = sign(siwe.format(challenge()))
    with pytest.raises(SignatureMismatch):
        check(siwe.format(challenge(**change)), signature)


def test_given_a_message_naming_someone_elses_address_when_verified_then_signature_mismatch():
    other = siwe.eip55("0x" + "ab" * 20)
    text = siwe.format(challenge(address=other))
    with pytest.raises(SignatureMismatch, match=other):
        check(text, sign(text))


@pytest.mark.parametrize("change", [{"domain": "phish.example"},
                                    {"uri": "https://phish.example/link"},
                                    {"domain": "bounties.example:8443"}])
def test_given_a_message_signed_for_another_site_when_verified_then_wrong_domain(change):
    text = siwe.format(challenge(**change))
    with pytest.raises(WrongDomain):
        check(text, sign(text))


@pytest.mark.parametrize("now", [datetime(2021, 9, 30, 16, 40, 24, tzinfo=UTC),
                                 datetime(2022, 1, 1, tzinfo=UTC)])
def test_given_now_at_or_after_the_expiration_time_when_verified_then_expired(now):
    text = siwe.format(challenge())
    with pytest.raises(Expired):
        check(text, sign(text), now=now)


def test_given_an_expiration_in_another_offset_when_verified_then_compared_as_instants():
    text = siwe.format(challenge(expiration_time="2021-09-30T18:40:24+02:00"))
    with pytest.raises(Expired):
        check(text, sign(text), now=datetime(2021, 9, 30, 16, 40, 24, tzinfo=UTC))
    assert check(text, sign(text), now=datetime(2021, 9, 30, 16, 40, 23, tzinfo=UTC))


def test_given_now_before_not_before_when_verified_then_not_yet_valid():
    text = siwe.format(challenge(not_before="2021-09-30T16:35:00Z"))
    with pytest.raises(NotYetValid):
        check(text, sign(text))
    assert check(text, sign(text), now=datetime(2021, 9, 30, 16, 35, tzinfo=UTC))


def test_given_a_naive_now_when_verified_then_refused():
    text = siwe.format(challenge())
    with pytest.raises(ValueError, match="timezone-aware"):
        check(text, sign(text), now=NOW.replace(tzinfo=None))


# -- malformed messages -----------------------------------------------------------------
def edited(old: str, new: str, text: str = SERVICE_INVALID) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("text", "field"), [
    (edited("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
            "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756CC2"), "address"),  # one letter's case
    (edited("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
            "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"), "address"),  # no checksum at all
    (edited("0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2", "0xC02aaA39"), "address"),
    (edited("Nonce: 32891756\n", ""), "nonce"),  # missing Nonce: line
    (edited("Nonce: 32891756", "Nonce: 3289175"), "nonce"),  # 7 characters
    (edited("Nonce: 32891756", "Nonce: 3289-1756"), "nonce"),  # not alphanumeric
    (edited("Nonce: 32891756", "Nonce: ３２８９１７５６"), "nonce"),  # not ASCII digits
    (edited("Issued At: 2021-09-30T16:25:24Z", "Issued At: 2021-09-30 16:25:24Z"), "issued_at"),
    (edited("Issued At: 2021-09-30T16:25:24Z", "Issued At: 2021-09-30T16:25:24"), "issued_at"),
    (edited("Issued At: 2021-09-30T16:25:24Z", "Issued At: 2021-02-30T16:25:24Z"), "issued_at"),
    (edited("Issued At: 2021-09-30T16:25:24Z", "Issued At: 2021-09-30T24:00:00Z"), "issued_at"),
    (edited("Chain ID: 1\nNonce: 32891756", "Nonce: 32891756\nChain ID: 1"), "chain_id"),
    (edited("Version: 1\n", ""), "version"),
    (edited("Version: 1", "Version: 2"), "version"),
    (edited("Chain ID: 1", "Chain ID: 0"), "chain_id"),
    (edited("Chain ID: 1", "Chain ID: 01"), "chain_id"),
    (edited("Chain ID: 1", "Chain ID: -1"), "chain_id"),
    (edited("Chain ID: 1", "Chain ID: 0x1"), "chain_id"),
    (edited("URI: https://service.invalid/login", "URI: service invalid"), "uri"),
    (edited("URI: ", "Uri: "), "uri"),  # prefixes are case-sensitive (%s)
    (edited("service.invalid wants", "service invalid wants"), "domain"),
    (edited("service.invalid wants", "service.invalid Wants"), "domain"),
    (edited("https://example.com wants", "1https://example.com wants", EXAMPLE_COM_SCHEME),
     "scheme"),
    (edited("Terms of Service", "Terms of\nService"), "statement"),  # two lines
    (edited("Terms of Service", "Terms of Service \"quoted\""), "statement"),
    (edited("- https://example.com/my-web2-claim.json", "- not a uri"), "resources"),
    (edited("\n- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
            "- https://example.com/my-web2-claim.json", ""), "resources"),  # empty list
    (edited("Issued At: 2021-09-30T16:25:24Z",
            "Issued At: 2021-09-30T16:25:24Z\nNot Before: 2021-09-30T16:25:24Z\n"
            "Expiration Time: 2021-09-30T17:25:24Z"), "expiration_time"),  # order swapped
    (edited("Issued At: 2021-09-30T16:25:24Z",
            "Issued At: 2021-09-30T16:25:24Z\nRequest ID: a\nRequest ID: b"), "request_id"),
    (SERVICE_INVALID + "\n", "message"),  # a trailing line break
    (SERVICE_INVALID.replace("\n", "\r\n"), "message"),
    (SERVICE_INVALID + "\nP.S. also send me your seed phrase", "message"),
    ("", "domain"),
])
def test_given_a_malformed_message_when_parsed_then_invalid_naming_the_field(text, field):
    with pytest.raises(InvalidSiweMessage) as caught:
        siwe.parse(text)
    assert caught.value.field == field, caught.value


def test_given_optional_lines_in_the_eips_order_when_parsed_then_read():
    text = edited("Issued At: 2021-09-30T16:25:24Z",
                  "Issued At: 2021-09-30T16:25:24Z\nNot Before: 2021-09-30T16:25:24Z\n"
                  "Request ID: x")
    message = siwe.parse(text)
    assert (message.not_before, message.request_id) == ("2021-09-30T16:25:24Z", "x")
    assert siwe.format(message) == text


def test_given_a_malformed_message_when_verified_then_invalid_before_any_signature_check():
    text = edited("Nonce: 32891756", "Nonce: short", siwe.format(challenge(nonce="32891756")))
    with pytest.raises(InvalidSiweMessage, match="nonce"):
        check(text, b"")


@pytest.mark.parametrize(("change", "field"), [
    ({"address": SIGNER.lower()}, "address"), ({"nonce": "abc"}, "nonce"),
    ({"chain_id": 0}, "chain_id"), ({"chain_id": True}, "chain_id"),
    ({"issued_at": "yesterday"}, "issued_at"), ({"statement": "two\nlines"}, "statement"),
    ({"version": "2"}, "version"), ({"resources": ["https://a.example"]}, "resources"),
    ({"request_id": "has space"}, "request_id"), ({"domain": "a.example/path"}, "domain"),
])
def test_given_an_invalid_field_when_constructed_then_invalid_naming_it(change, field):
    with pytest.raises(InvalidSiweMessage) as caught:
        challenge(**change)
    assert caught.value.field == field


@pytest.mark.parametrize(("value", "expected"), [
    ("2021-09-30T16:25:24Z", datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)),
    ("2021-09-30t16:25:24.123456789z", datetime(2021, 9, 30, 16, 25, 24, 123456, tzinfo=UTC)),
    ("2021-09-30T18:25:24+02:00", datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)),
    ("2021-09-30T16:25:24-00:00", datetime(2021, 9, 30, 16, 25, 24, tzinfo=UTC)),
    ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),  # a leap second
])
def test_given_rfc3339_date_times_when_read_then_the_instant(value, expected):
    assert siwe.timestamp(value) == expected


def test_given_new_nonces_when_issued_then_valid_and_distinct():
    nonces = {siwe.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(challenge(nonce=nonce).nonce == nonce for nonce in nonces)


# -- round trip ---------------------------------------------------------------------------
def _chars(alphabet: str, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(alphabet), min_size=min_size, max_size=30)


_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PCT = st.sampled_from(["%20", "%2F", "%e2"])
_URIS = st.builds(lambda scheme, rest: f"{scheme}:{rest}",
                  st.sampled_from(["https", "ipfs", "urn", "did", "a+b.c-d"]),
                  st.lists(_chars(_UNRESERVED + _SUB_DELIMS + ":/?@[]") | _PCT, max_size=4)
                  .map("".join))
_DOMAINS = st.builds(lambda user, host, port: user + host + port,
                     st.sampled_from(["", "user@", "u:p@"]),
                     _chars(_UNRESERVED + _SUB_DELIMS, min_size=1) | st.just("[::1]"),
                     st.sampled_from(["", ":", ":443", ":3388"]))
_TIMES = st.builds(
    # Spelled out: strftime's %Y does not pad years before 1000 to four digits on Linux.
    lambda at, fraction, zone: f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:"
                               f"{at.minute:02d}:{at.second:02d}{fraction}{zone}",
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.sampled_from(["", ".0", ".000", ".123456789"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-12:00"]))
MESSAGES = st.builds(
    SiweMessage,
    scheme=st.none() | st.sampled_from(["https", "http", "git+ssh"]),
    domain=_DOMAINS,
    address=st.binary(min_size=20, max_size=20).map(lambda raw: siwe.eip55("0x" + raw.hex())),
    statement=st.none() | _chars(_UNRESERVED + _SUB_DELIMS + ":/?#[]@ "),
    uri=_URIS,
    chain_id=st.integers(1, 2**256 - 1),
    nonce=st.from_regex(r"\A[A-Za-z0-9]{8,40}\Z"),
    issued_at=_TIMES,
    expiration_time=st.none() | _TIMES,
    not_before=st.none() | _TIMES,
    request_id=st.none() | _chars(_UNRESERVED + _SUB_DELIMS + ":@"),
    resources=st.lists(_URIS, max_size=3).map(tuple),
)


@settings(max_examples=EXAMPLES)
@given(MESSAGES)
def test_given_any_valid_message_when_formatted_and_parsed_then_the_same_message(message):
    assert siwe.parse(siwe.format(message)) == message


@settings(max_examples=EXAMPLES)
@given(MESSAGES, st.data())
def test_given_a_message_with_a_line_dropped_or_swapped_when_parsed_then_only_invalid(
        message, data):
    lines = siwe.format(message).split("\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(0, len(lines) - 1))
    if data.draw(st.booleans()):
        del lines[i]
    else:
        lines[i], lines[j] = lines[j], lines[i]
    text = "\n".join(lines)
    try:
        parsed = siwe.parse(text)
    except InvalidSiweMessage:
        return
    assert siwe.format(parsed) == text  # what parses is still exactly one message's text
