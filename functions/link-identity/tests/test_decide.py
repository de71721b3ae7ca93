"""Tier 1: link-identity's decisions on plain values. Signed messages are signed with
eth-account (`encode_defunct`, EIP-191 personal_sign), the independent reference for the
code under test; no database, no clock (every `now` is given)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from eventing import siwe
from function.decide import (
    Challenge,
    Current,
    Differs,
    Issued,
    Known,
    Link,
    Pay,
    Payout,
    Refusal,
    Terms,
    Wait,
    challenge,
    judge,
    resolve,
    screen,
    sign_url,
)

TERMS = Terms(domain="bounties.example", uri="https://bounties.example/sign",
              chain_id=1, statement="Link the GitHub account {login} to this Ethereum address.",
              ttl=timedelta(minutes=15), signing_page_url="https://bounties.example/sign")
KEY = Account.from_key(bytes(range(1, 33)))
OTHER_KEY = Account.from_key(bytes(range(2, 34)))
NOW = datetime(2026, 11, 21, 17, 0, 0, 123456, tzinfo=UTC)
NONCE = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def issue(login: str = "octocat", address: str = KEY.address, nonce: str = NONCE,
          now: datetime = NOW, terms: Terms = TERMS) -> Challenge:
    return challenge(terms, login=login, address=address.lower(), nonce=nonce, now=now)


def stored(made: Challenge, *, login: str = "octocat", github_id: int = 583231,
           used: bool = False) -> Issued:
    return Issued(nonce=made.message.nonce, github_login=login, github_id=github_id,
                  address=made.message.address.lower(), text=made.text,
                  expires_at=made.expires_at, used=used)


def sign(text: str, key: LocalAccount = KEY) -> bytes:
    return bytes(Account.sign_message(encode_defunct(text=text), key.key).signature)


def verdict(text: str, signature: bytes, issued: Issued | None, *,
            now: datetime = NOW + timedelta(minutes=1), terms: Terms = TERMS) -> Refusal | Link:
    """Screen, then judge against the challenge stored under the message's nonce (as
    func.py looks it up): `issued` is the only one stored."""
    screened = screen(text, signature, now=now, terms=terms)
    if isinstance(screened, Refusal):
        return screened
    found = issued if issued is not None and issued.nonce == screened.nonce else None
    return judge(screened, text, found, now=now, terms=terms)


def reason(outcome: object) -> str:
    assert isinstance(outcome, Refusal), outcome
    return outcome.reason


# -- challenge ----------------------------------------------------------------------------
def test_given_a_link_start_when_challenged_then_an_eip4361_message_naming_the_login():
    made = issue()
    assert made.text == (
        "bounties.example wants you to sign in with your Ethereum account:\n"
        f"{KEY.address}\n\n"
        "Link the GitHub account octocat to this Ethereum address.\n\n"
        "URI: https://bounties.example/sign\nVersion: 1\nChain ID: 1\n"
        f"Nonce: {NONCE}\nIssued At: 2026-11-21T17:00:00Z\n"
        "Expiration Time: 2026-11-21T17:15:00Z")
    assert siwe.parse(made.text) == made.message
    assert made.expires_at == datetime(2026, 11, 21, 17, 15, tzinfo=UTC)


def test_given_a_challenge_when_its_sign_url_is_read_then_the_link_param_is_the_message():
    made = issue()
    url = urlsplit(made.sign_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == TERMS.signing_page_url
    assert parse_qs(url.query) == {"link": [made.text]}


def test_given_a_signing_page_url_with_a_query_when_linked_then_link_is_appended():
    assert sign_url("https://x.example/p?lang=en", "a b\n") == \
        "https://x.example/p?lang=en&link=a%20b%0A"


def test_given_a_lower_case_address_when_challenged_then_the_message_has_its_eip55_form():
    assert issue(address=KEY.address.lower()).message.address == KEY.address


# -- link: the good case --------------------------------------------------------------------
def test_given_the_issued_message_signed_by_its_address_when_judged_then_linked():
    made = issue()
    outcome = verdict(made.text, sign(made.text), stored(made))
    assert outcome == Link(issued=stored(made), address=KEY.address)


# -- link: tampering, each field of the message altered and signed again by its key --------
ALTERED_FIELDS = [
    ("domain", {"domain": "evil.example"}, "wrong_domain"),
    ("uri", {"uri": "https://bounties.example/other"}, "wrong_domain"),
    ("statement (another login)", {"statement":
        "Link the GitHub account mallory to this Ethereum address."}, "nonce_mismatch"),
    ("statement (other words)", {"statement": "Something else."}, "nonce_mismatch"),
    ("no statement", {"statement": None}, "nonce_mismatch"),
    ("chain id", {"chain_id": 5}, "wrong_chain"),
    ("nonce", {"nonce": "ffffffffffffffff"}, "unknown_nonce"),
    ("issued at", {"issued_at": "2026-11-21T16:59:00Z"}, "altered"),
    ("expiration time", {"expiration_time": "2026-11-21T18:00:00Z"}, "altered"),
    ("no expiration time", {"expiration_time": None}, "altered"),
    ("not before", {"not_before": "2026-11-21T17:00:00Z"}, "altered"),
    ("request id", {"request_id": "x1"}, "altered"),
    ("resources", {"resources": ("https://evil.example/",)}, "altered"),
    ("scheme", {"scheme": "https"}, "altered"),
]


@pytest.mark.parametrize(("name", "change", "expected"), ALTERED_FIELDS,
                         ids=[f[0] for f in ALTERED_FIELDS])
def test_given_a_field_altered_and_re_signed_by_the_address_when_judged_then_refused(
        name, change, expected):
    made = issue()
    text = siwe.format(replace(made.message, **change))
    assert reason(verdict(text, sign(text), stored(made))) == expected


@pytest.mark.parametrize(("name", "change", "expected"), ALTERED_FIELDS,
                         ids=[f[0] for f in ALTERED_FIELDS])
def test_given_a_field_altered_after_signing_when_judged_then_bad_signature(
        name, change, expected):
    made = issue()
    text = siwe.format(replace(made.message, **change))
    outcome = verdict(text, sign(made.text), stored(made))
    assert reason(outcome) == "bad_signature"
    assert isinstance(outcome, Refusal)
    assert outcome.field == "data.signature"


def test_given_the_address_altered_after_signing_when_judged_then_bad_signature():
    made = issue()
    text = siwe.format(replace(made.message, address=OTHER_KEY.address))
    assert reason(verdict(text, sign(made.text), stored(made))) == "bad_signature"


@pytest.mark.parametrize("position", [0, 31, 63, 64])
def test_given_a_byte_of_the_signature_altered_when_judged_then_bad_signature(position):
    made = issue()
    signature = bytearray(sign(made.text))
    signature[position] ^= 0x01
    assert reason(verdict(made.text, bytes(signature), stored(made))) == "bad_signature"


def test_given_the_message_signed_by_another_key_when_judged_then_bad_signature():
    made = issue()
    outcome = verdict(made.text, sign(made.text, OTHER_KEY), stored(made))
    assert reason(outcome) == "bad_signature"
    assert isinstance(outcome, Refusal)
    assert OTHER_KEY.address.lower() in outcome.detail


def test_given_a_message_for_another_site_when_judged_then_wrong_domain():
    made = issue(terms=replace(TERMS, domain="evil.example", uri="https://evil.example/"))
    assert reason(verdict(made.text, sign(made.text), stored(made))) == "wrong_domain"


def test_given_the_challenge_expired_when_judged_then_expired():
    made = issue()
    late = made.expires_at
    assert reason(verdict(made.text, sign(made.text), stored(made), now=late)) == "expired"


def test_given_a_stored_expiry_earlier_than_the_message_says_when_judged_then_expired():
    made = issue()
    short = replace(stored(made), expires_at=NOW + timedelta(seconds=30))
    assert reason(verdict(made.text, sign(made.text), short)) == "expired"


def test_given_a_not_before_in_the_future_when_judged_then_not_yet_valid():
    made = issue()
    text = siwe.format(replace(made.message, not_before="2026-11-21T17:10:00Z"))
    assert reason(verdict(text, sign(text), stored(made))) == "not_yet_valid"


def test_given_a_used_nonce_when_judged_then_replay():
    made = issue()
    assert reason(verdict(made.text, sign(made.text), stored(made, used=True))) == "replay"


def test_given_a_nonce_no_challenge_has_when_judged_then_unknown_nonce():
    made = issue()
    assert reason(verdict(made.text, sign(made.text), None)) == "unknown_nonce"


def test_given_a_nonce_issued_for_another_address_when_signed_by_mine_then_nonce_mismatch():
    # Mallory takes octocat's nonce into a message for her own address and signs it.
    theirs = issue()
    mine = siwe.format(replace(theirs.message, address=OTHER_KEY.address))
    outcome = verdict(mine, sign(mine, OTHER_KEY), stored(theirs))
    assert reason(outcome) == "nonce_mismatch"
    assert isinstance(outcome, Refusal)
    assert "address" in outcome.detail


def test_given_a_nonce_issued_for_another_login_when_signed_then_nonce_mismatch():
    # The challenge was issued for mallory; the message claims octocat with her nonce.
    hers = issue(login="mallory")
    claim = issue(login="octocat", nonce=hers.message.nonce)
    outcome = verdict(claim.text, sign(claim.text), stored(hers, login="mallory"))
    assert reason(outcome) == "nonce_mismatch"
    assert isinstance(outcome, Refusal)
    assert "login" in outcome.detail


@pytest.mark.parametrize("text", [
    "", "hello", "bounties.example wants you to sign in with your Ethereum account:\n0x12",
    "bounties.example wants you to sign in with your Ethereum account:\r\n",
])
def test_given_a_malformed_message_when_judged_then_malformed_naming_the_field(text):
    outcome = verdict(text, sign(text), None)
    assert reason(outcome) == "malformed"
    assert isinstance(outcome, Refusal)
    assert outcome.field.startswith("data.message")


def test_given_a_checksum_less_address_when_judged_then_malformed_address():
    made = issue()
    text = made.text.replace(KEY.address, KEY.address.lower())
    outcome = verdict(text, sign(text), stored(made))
    assert isinstance(outcome, Refusal)
    assert (outcome.reason, outcome.field) == ("malformed", "data.message.address")


# -- resolve -----------------------------------------------------------------------------
ADDRESS = "0x" + "ab" * 20
BOUNTY = Payout(payout_id="bounty:b1", reason="bounty", ref="b1", github_login="Octocat",
                github_id=583231, denomination="USDC", amount_base_units=100_000_000)
EARNINGS = Payout(payout_id="p-1", reason="earnings", ref="octocat/2026-11-20",
                  github_login="octocat", github_id=None, denomination="USDC",
                  amount_base_units=5)


def test_given_a_linked_account_when_a_new_payout_is_resolved_then_pay_and_record():
    assert resolve(BOUNTY, None, Current(583231, ADDRESS)) == Pay(ADDRESS, record=True)


def test_given_no_link_when_a_new_payout_is_resolved_then_wait_and_record():
    assert resolve(BOUNTY, None, None) == Wait(record=True)


def test_given_a_waiting_payout_asked_again_with_no_link_when_resolved_then_wait_only():
    assert resolve(BOUNTY, Known(BOUNTY, None), None) == Wait(record=False)


def test_given_a_resolved_payout_when_asked_again_after_a_relink_then_its_first_address():
    later = Current(583231, "0x" + "cd" * 20)
    assert resolve(BOUNTY, Known(BOUNTY, ADDRESS), later) == Pay(ADDRESS, record=False)


def test_given_the_login_linked_by_another_github_id_when_a_bounty_is_resolved_then_wait():
    assert resolve(BOUNTY, None, Current(999, ADDRESS)) == Wait(record=True)


def test_given_earnings_without_a_github_id_when_resolved_then_the_logins_link_pays():
    assert resolve(EARNINGS, None, Current(999, ADDRESS)) == Pay(ADDRESS, record=True)


@pytest.mark.parametrize(("change", "field"), [
    ({"amount_base_units": 1}, "amount_base_units"), ({"denomination": "ETH"}, "denomination"),
    ({"github_id": 1}, "github_id"), ({"github_login": "mallory"}, "github_login")])
def test_given_a_payout_id_recorded_with_other_terms_when_resolved_then_differs(change, field):
    outcome = resolve(replace(BOUNTY, **change), Known(BOUNTY, ADDRESS), None)
    assert isinstance(outcome, Differs)
    assert outcome.field == field


def test_given_the_login_in_another_case_when_resolved_then_the_same_payout():
    again = replace(BOUNTY, github_login="octocat")
    assert resolve(again, Known(BOUNTY, ADDRESS), None) == Pay(ADDRESS, record=False)
