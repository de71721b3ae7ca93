"""Tier 2: link-identity driven in-process through func-python's real decode/encode path,
with its inbox, challenges, links, payouts and outbox in the local stack's PostgreSQL
(schema `identity`, role `identity`). Wallets are eth-account keys (`encode_defunct`,
EIP-191 personal_sign), made fresh for every case, as are GitHub logins and ids, so cases
never share an account in the shared database.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from eth_account import Account
from eth_account.messages import encode_defunct

from eventing.settings import SettingsError
from function import new
from function.func import LinkSettings
from tests.factory import Event, cloudevent, served

pytestmark = pytest.mark.stack

DATA = Path(__file__).parent / "data"
SIGNING_PAGE = "https://bounties.example/sign"
STARTED = "dev.eventworks.identity.link.started"
LINK = "dev.eventworks.identity.link"
CLAIMED = "dev.eventworks.bounty.claimed"
DUE = "dev.eventworks.accounting.payout.due"


@pytest.fixture
def env(stack_env):
    return {"DATABASE_URL": stack_env["DATABASE_URL_IDENTITY"],
            "SIGNING_PAGE_URL": SIGNING_PAGE}


@pytest.fixture
def db(stack_env):
    with psycopg.connect(stack_env["DATABASE_URL_IDENTITY"], autocommit=True) as conn:
        conn.execute("SET search_path TO identity")
        yield conn


@dataclass(frozen=True)
class Person:
    """A GitHub account of its own and a wallet of its own."""

    login: str
    github_id: int
    wallet: Any  # eth_account LocalAccount

    @classmethod
    def fresh(cls) -> Person:
        return cls(f"dev-{uuid.uuid4().hex[:12]}", random.randrange(10**6, 10**9),
                   Account.create())

    def sign(self, text: str, wallet: Any = None) -> str:
        signed = Account.sign_message(encode_defunct(text=text), (wallet or self.wallet).key)
        return "0x" + bytes(signed.signature).hex()


def golden(name: str) -> dict[str, Any]:
    """A fresh copy of one of this function's golden events (tests/data/<type>.json)."""
    document: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return document


def started(person: Person, *, event_id: str | None = None) -> Event:
    data = golden("identity.link.started")
    data.update(github_login=person.login, github_id=person.github_id,
                address=person.wallet.address)
    return cloudevent(STARTED, data, id=event_id, source="/eventworks/parse-comment")


def link(message: str, signature: str, *, event_id: str | None = None) -> Event:
    return cloudevent(LINK, {"message": message, "signature": signature}, id=event_id,
                      source="/eventworks/signing-page")


def claimed(person: Person, bounty_id: str | None = None, *, amount: str = "100") -> Event:
    data = golden("bounty.claimed")
    data.update(bounty_id=bounty_id or str(uuid.uuid4()), solver_login=person.login,
                solver_id=person.github_id, amount=amount,
                amount_base_units=str(int(amount) * 10**6))
    return cloudevent(CLAIMED, data, source="/eventworks/parse-comment")


def due(user: str) -> Event:
    data = golden("accounting.payout.due")
    data.update(payout_id=f"payout-{uuid.uuid4()}", user=user)
    return cloudevent(DUE, data, source="/eventworks/accrue-payment")


def reply(response: Any) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    event = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))
    assert event.get_source() == "/eventworks/link-identity"
    data = event.get_data()
    assert isinstance(data, dict)
    return event.get_type(), data


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def post_all(env: dict[str, str], *events: Event) -> list[Any]:
    async with served(new(), env) as client:
        return [await client.post("/", content=e.body, headers=dict(e.headers)) for e in events]


async def challenged(env: dict[str, str], person: Person, **kwargs: Any) -> dict[str, Any]:
    (response,) = await post_all(env, started(person, **kwargs))
    kind, data = reply(response)
    assert kind == "dev.eventworks.identity.challenged"
    return data


async def linked(env: dict[str, str], person: Person) -> dict[str, Any]:
    message = (await challenged(env, person))["message"]
    (response,) = await post_all(env, link(message, person.sign(message)))
    kind, data = reply(response)
    assert kind == "dev.eventworks.identity.linked"
    return data


# -- identity.link.started → identity.challenged -------------------------------------------
async def test_given_a_link_start_when_posted_then_a_siwe_challenge_with_a_sign_url(env, db):
    person = Person.fresh()
    data = await challenged(env, person)

    message = data["message"]
    assert message.startswith("bounties.example wants you to sign in with your Ethereum "
                              f"account:\n{person.wallet.address}\n\n"
                              f"Link the GitHub account {person.login} to this Ethereum "
                              "address.\n\nURI: https://bounties.example/sign\nVersion: 1\n"
                              "Chain ID: 1\nNonce: ")
    assert data["github_login"] == person.login
    assert data["address"] == person.wallet.address
    assert data["where"] == {"repository": "octo/bounties", "issue_number": 7}
    url = urlsplit(data["sign_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == SIGNING_PAGE
    assert parse_qs(url.query) == {"link": [message]}
    row = db.execute("SELECT github_login, github_id, address, message, used_at, expires_at"
                     " FROM challenges WHERE github_id = %s", (person.github_id,)).fetchall()
    assert len(row) == 1
    assert row[0][:5] == (person.login, person.github_id, person.wallet.address.lower(),
                          message, None)
    assert row[0][5].isoformat().replace("+00:00", "Z") in message


async def test_given_the_same_start_delivered_twice_when_posted_then_the_same_challenge(env, db):
    person = Person.fresh()
    event = started(person)
    first, second = await post_all(env, event, event)
    assert reply(first) == reply(second)
    assert first.content == second.content
    assert first.headers["ce-id"] == second.headers["ce-id"]
    count = db.execute("SELECT count(*) FROM challenges WHERE github_id = %s",
                       (person.github_id,)).fetchone()
    assert count == (1,)


async def test_given_a_new_start_for_the_same_account_when_posted_then_a_new_nonce(env):
    person = Person.fresh()
    first = await challenged(env, person)
    second = await challenged(env, person)
    assert first["message"] != second["message"]


# -- identity.link → identity.linked ---------------------------------------------------------
async def test_given_the_challenge_signed_by_the_wallet_when_linked_then_identity_linked(
        env, db):
    person = Person.fresh()
    data = await linked(env, person)
    assert data == {"github_login": person.login, "github_id": person.github_id,
                    "address": person.wallet.address,
                    "where": {"repository": "octo/bounties", "issue_number": 7}}
    rows = db.execute("SELECT address, superseded_at FROM links WHERE github_id = %s",
                      (person.github_id,)).fetchall()
    assert rows == [(person.wallet.address.lower(), None)]


async def test_given_a_link_delivered_twice_when_posted_then_the_same_answer_and_a_new_id_is_a_replay(  # noqa: E501
        env, db):
    person = Person.fresh()
    message = (await challenged(env, person))["message"]
    signature = person.sign(message)
    event = link(message, signature)
    first, again, replayed = await post_all(env, event, event, link(message, signature))

    assert reply(first)[0] == "dev.eventworks.identity.linked"
    assert again.content == first.content
    assert again.headers["ce-id"] == first.headers["ce-id"]
    body = problem(replayed, 403)
    assert body["type"] == "urn:eventworks:problem:nonce-used"
    assert body["field"] == "data.message"
    count = db.execute("SELECT count(*) FROM links WHERE github_id = %s",
                       (person.github_id,)).fetchone()
    assert count == (1,)


async def test_given_a_relink_to_a_new_address_when_linked_then_the_old_link_is_kept_as_history(
        env, db):
    person = Person.fresh()
    await linked(env, person)
    moved = Person(person.login, person.github_id, Account.create())
    data = await linked(env, moved)
    assert data["address"] == moved.wallet.address
    rows = db.execute("SELECT address, superseded_at IS NULL FROM links WHERE github_id = %s"
                      " ORDER BY link_id", (person.github_id,)).fetchall()
    assert rows == [(person.wallet.address.lower(), False),
                    (moved.wallet.address.lower(), True)]


async def test_given_an_older_open_challenge_when_a_newer_one_links_then_the_older_is_void(env):
    person = Person.fresh()
    older = (await challenged(env, person))["message"]
    await linked(env, person)
    (response,) = await post_all(env, link(older, person.sign(older)))
    assert problem(response, 403)["type"] == "urn:eventworks:problem:nonce-used"


@dataclass(frozen=True)
class Refused:
    status: int
    slug: str
    field: str


async def test_given_a_signature_of_another_key_when_linked_then_401_bad_signature(env):
    person = Person.fresh()
    message = (await challenged(env, person))["message"]
    (response,) = await post_all(env, link(message, person.sign(message, Account.create())))
    body = problem(response, 401)
    assert (body["type"], body["field"]) == ("urn:eventworks:problem:bad-signature",
                                             "data.signature")


async def test_given_a_message_altered_after_signing_when_linked_then_401_bad_signature(env):
    person = Person.fresh()
    message = (await challenged(env, person))["message"]
    altered = message.replace(f"account {person.login} to", "account mallory to")
    (response,) = await post_all(env, link(altered, person.sign(message)))
    assert problem(response, 401)["type"] == "urn:eventworks:problem:bad-signature"


async def test_given_a_message_for_another_domain_when_linked_then_403_wrong_domain(env):
    person = Person.fresh()
    message = (await challenged(env, person))["message"].replace(
        "bounties.example", "evil.example")
    (response,) = await post_all(env, link(message, person.sign(message)))
    assert problem(response, 403)["type"] == "urn:eventworks:problem:wrong-domain"


async def test_given_an_expired_challenge_when_linked_then_401_expired(env, db):
    person = Person.fresh()
    message = (await challenged(env, person))["message"]
    # Issued an hour ago for one minute (the message's own Expiration Time still lies
    # ahead: the stored expiry is the one that counts).
    db.execute("UPDATE challenges SET issued_at = issued_at - interval '1 hour',"
               " expires_at = issued_at - interval '59 minutes' WHERE github_id = %s",
               (person.github_id,))
    (response,) = await post_all(env, link(message, person.sign(message)))
    assert problem(response, 401)["type"] == "urn:eventworks:problem:expired"


async def test_given_a_nonce_never_issued_when_linked_then_401_unknown_nonce(env):
    person = Person.fresh()
    message = (await challenged(env, person))["message"]
    nonce = message.split("Nonce: ")[1].split("\n")[0]
    forged = message.replace(nonce, "0" * 32)
    (response,) = await post_all(env, link(forged, person.sign(forged)))
    assert problem(response, 401)["type"] == "urn:eventworks:problem:unknown-nonce"


async def test_given_someone_elses_nonce_signed_by_my_wallet_when_linked_then_403_mismatch(env):
    victim, mallory = Person.fresh(), Person.fresh()
    message = (await challenged(env, victim))["message"].replace(
        victim.wallet.address, mallory.wallet.address)
    (response,) = await post_all(env, link(message, mallory.sign(message)))
    assert problem(response, 403)["type"] == "urn:eventworks:problem:nonce-mismatch"


async def test_given_a_malformed_message_when_linked_then_400_naming_the_field(env):
    person = Person.fresh()
    message = "not a sign-in message"
    (response,) = await post_all(env, link(message, person.sign(message)))
    body = problem(response, 400)
    assert body["type"] == "urn:eventworks:problem:siwe-malformed"
    assert body["field"] == "data.message.domain"


# -- resolve: bounty.claimed, accounting.payout.due ----------------------------------------
async def test_given_a_linked_solver_when_a_bounty_is_claimed_then_payout_requested(env, db):
    person = Person.fresh()
    await linked(env, person)
    bounty_id = str(uuid.uuid4())
    event = claimed(person, bounty_id)
    first, again = await post_all(env, event, event)
    kind, data = reply(first)
    assert kind == "dev.eventworks.payout.requested"
    assert data == {"payout_id": f"bounty:{bounty_id}", "to_address": person.wallet.address,
                    "denomination": "USDC", "amount_base_units": "100000000",
                    "reason": "bounty", "ref": bounty_id}
    assert first.headers["ce-subject"] == f"bounty:{bounty_id}"
    assert again.content == first.content


async def test_given_an_unlinked_solver_when_claimed_then_missing_and_the_link_releases_it(
        env, db):
    person = Person.fresh()
    bounty_id = str(uuid.uuid4())
    (response,) = await post_all(env, claimed(person, bounty_id))
    kind, data = reply(response)
    assert kind == "dev.eventworks.identity.missing"
    assert data["github_login"] == person.login
    assert data["ref"] == bounty_id
    assert data["where"] == {"repository": "octo/bounties", "issue_number": 7}

    await linked(env, person)
    facts = db.execute(
        "SELECT attributes, data FROM outbox WHERE data->>'payout_id' = %s",
        (f"bounty:{bounty_id}",)).fetchall()
    assert len(facts) == 1
    attributes, fact = facts[0]
    assert attributes["type"] == "dev.eventworks.payout.requested"
    assert attributes["source"] == "/eventworks/link-identity"
    assert fact == {"payout_id": f"bounty:{bounty_id}", "to_address": person.wallet.address,
                    "denomination": "USDC", "amount_base_units": "100000000",
                    "reason": "bounty", "ref": bounty_id}

    # The same claim again (a new event): the payout it was resolved to, not a second one.
    (response,) = await post_all(env, claimed(person, bounty_id))
    assert reply(response) == ("dev.eventworks.payout.requested", fact)


async def test_given_a_payout_resolved_when_the_solver_relinks_then_it_keeps_its_address(env):
    person = Person.fresh()
    await linked(env, person)
    bounty_id = str(uuid.uuid4())
    (first,) = await post_all(env, claimed(person, bounty_id))
    await linked(env, Person(person.login, person.github_id, Account.create()))
    (again,) = await post_all(env, claimed(person, bounty_id))
    assert reply(again)[1]["to_address"] == reply(first)[1]["to_address"] \
        == person.wallet.address


async def test_given_a_claim_with_other_terms_for_the_same_bounty_when_posted_then_400(env):
    person = Person.fresh()
    bounty_id = str(uuid.uuid4())
    await post_all(env, claimed(person, bounty_id))
    (response,) = await post_all(env, claimed(person, bounty_id, amount="200"))
    body = problem(response, 400)
    assert body["type"] == "urn:eventworks:problem:payout-terms-differ"
    assert body["field"] == "data.amount_base_units"


async def test_given_a_linked_user_when_earnings_are_due_then_payout_requested(env):
    person = Person.fresh()
    await linked(env, person)
    event = due(person.login.upper())  # a login in another case is the same account
    (response,) = await post_all(env, event)
    kind, data = reply(response)
    assert kind == "dev.eventworks.payout.requested"
    assert data == {"payout_id": json.loads(event.body)["payout_id"],
                    "to_address": person.wallet.address, "denomination": "USDC",
                    "amount_base_units": "1500000", "reason": "earnings",
                    "ref": f"{person.login.upper()}/2026-11-20"}


async def test_given_an_unlinked_user_when_earnings_are_due_then_identity_missing(env):
    person = Person.fresh()
    (response,) = await post_all(env, due(person.login))
    kind, data = reply(response)
    assert kind == "dev.eventworks.identity.missing"
    assert data["where"] is None
    assert data["ref"] == f"{person.login}/2026-11-20"


async def test_given_a_user_that_is_no_github_login_when_earnings_are_due_then_400(env):
    (response,) = await post_all(env, due("auth0|12345"))
    assert problem(response, 400)["field"] == "data.user"


# -- settings ----------------------------------------------------------------------------
@pytest.mark.parametrize("changes", [
    {"SIGNING_PAGE_URL": "not a url"},
    {"SIWE_STATEMENT": "no login named"},
    {"SIWE_STATEMENT": "Link {login}\nsecond line"},
    {"SIWE_DOMAIN": "bad domain"},
    {"SIWE_CHAIN_ID": "0"},
    {"SIWE_NONCE_TTL_SECONDS": "5"},
])
def test_given_bad_settings_when_started_then_the_function_refuses_to_start(changes):
    with pytest.raises(SettingsError):
        LinkSettings.from_env({"SIGNING_PAGE_URL": SIGNING_PAGE, **changes})


def test_given_only_the_signing_page_when_started_then_domain_and_uri_are_its_own():
    terms = LinkSettings.from_env({"SIGNING_PAGE_URL": "http://127.0.0.1:8080/"}).terms
    assert (terms.domain, terms.uri, terms.chain_id) == ("127.0.0.1:8080",
                                                         "http://127.0.0.1:8080/", 1)


async def test_given_a_claim_and_the_link_at_once_when_both_commit_then_one_payout_either_way(
        env, db):
    # The account's advisory lock orders them: the claim sees the link (payout.requested),
    # or the link sees the waiting payout (its outbox); never neither, never both.
    for _ in range(4):
        person = Person.fresh()
        message = (await challenged(env, person))["message"]
        bounty_id = str(uuid.uuid4())
        async with served(new(), env) as client:
            responses = await asyncio.gather(*(
                client.post("/", content=e.body, headers=dict(e.headers))
                for e in (link(message, person.sign(message)), claimed(person, bounty_id))))
        kinds = [reply(r)[0] for r in responses]
        assert kinds[0] == "dev.eventworks.identity.linked"
        in_outbox = db.execute("SELECT count(*) FROM outbox WHERE data->>'payout_id' = %s",
                               (f"bounty:{bounty_id}",)).fetchone()
        replied = kinds[1] == "dev.eventworks.payout.requested"
        assert in_outbox == ((0,) if replied else (1,)), kinds
