"""End to end through the local stack: identity linking and payout resolution (issue 4).

Events are posted to the broker (BROKER_URL) as parse-comment, the signing page and the
daily close would post them; the Triggers of knative/base/link-identity.yaml deliver them
to link-identity, and its replies (and, for a payout that waited for a link, its outbox
relayed to K_SINK) land back in the broker topic, read here with kafka-python. The wallet
is an eth-account key standing in for the browser wallet: it signs the message of the
challenge's `sign_url` with EIP-191 personal_sign, and the signed message goes to the
signing page's server (`/events`), as the page posts it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.factory import cloudevent
from tests.topic import Seen, Watch

pytestmark = pytest.mark.stack

TOPIC = "knative-broker-eventworks-default"
TIMEOUT = 30.0


def post(stack_env: dict[str, str], event_type: str, data: dict[str, Any],
         source: str) -> None:
    event = cloudevent(event_type, data, source=source)
    response = httpx.post(stack_env["BROKER_URL"], content=event.body,
                          headers=dict(event.headers))
    assert response.status_code == 202, response.text


def awaited(watch: Watch, event_type: str, where: Callable[[Any], bool]) -> dict[str, Any]:
    """The first event of the type whose data satisfies `where`, read from the topic."""
    deadline = time.monotonic() + TIMEOUT
    seen: list[Seen] = []
    while time.monotonic() < deadline:
        for event in watch.poll(200):
            seen.append(event)
            if event.type == event_type and isinstance(event.data, dict) and where(event.data):
                return event.data
    raise AssertionError(f"no {event_type} within {TIMEOUT:.0f} s; saw "
                         f"{[e.type for e in seen]}")


def link_started(stack_env: dict[str, str], login: str, github_id: int,
                 wallet: Any) -> None:
    post(stack_env, "dev.eventworks.identity.link.started", {
        "github_login": login, "github_id": github_id, "address": wallet.address,
        "where": {"repository": "octo/bounties", "issue_number": 12}},
        source="/eventworks/parse-comment")


def sign_and_link(stack_env: dict[str, str], watch: Watch, login: str, wallet: Any) -> None:
    """What the signing page does with the challenge's `sign_url`: read the message from
    its `link` parameter, have the wallet personal_sign it, and post `identity.link`
    (structured mode) to its own server's `/events`, which forwards it to the broker."""
    challenge = awaited(watch, "dev.eventworks.identity.challenged",
                        lambda d: d["github_login"] == login)
    url = urlsplit(challenge["sign_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == stack_env["SIGNING_PAGE_URL"]
    (message,) = parse_qs(url.query)["link"]
    assert message == challenge["message"]
    signature = Account.sign_message(encode_defunct(text=message), wallet.key)
    headers, body = cloudevent("dev.eventworks.identity.link", {
        "message": message, "signature": "0x" + bytes(signature.signature).hex()},
        source="/eventworks/signing-page").structured()
    page = stack_env["SIGNING_PAGE_URL"].rstrip("/")
    response = httpx.post(f"{page}/events", content=body, headers=headers)
    assert response.status_code == 202, response.text


def bounty_claimed(stack_env: dict[str, str], bounty_id: str, login: str,
                   github_id: int) -> None:
    post(stack_env, "dev.eventworks.bounty.claimed", {
        "bounty_id": bounty_id, "repository": "octo/bounties", "issue_number": 12,
        "solver_login": login, "solver_id": github_id, "pull_request": 13,
        "denomination": "USDC", "amount": "25", "amount_base_units": "25000000",
        "decimals": 6}, source="/eventworks/parse-comment")


def test_given_a_linked_wallet_when_a_bounty_is_claimed_then_payout_requested_to_it(stack_env):
    login, github_id = f"solver-{uuid.uuid4().hex[:10]}", random.randrange(10**6, 10**9)
    wallet = Account.create()
    watch = Watch(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC)
    try:
        link_started(stack_env, login, github_id, wallet)
        sign_and_link(stack_env, watch, login, wallet)
        linked = awaited(watch, "dev.eventworks.identity.linked",
                         lambda d: d["github_login"] == login)
        assert linked == {"github_login": login, "github_id": github_id,
                          "address": wallet.address,
                          "where": {"repository": "octo/bounties", "issue_number": 12}}

        bounty_id = str(uuid.uuid4())
        bounty_claimed(stack_env, bounty_id, login, github_id)
        payout = awaited(watch, "dev.eventworks.payout.requested",
                         lambda d: d["payout_id"] == f"bounty:{bounty_id}")
    finally:
        watch.close()
    assert payout == {"payout_id": f"bounty:{bounty_id}", "to_address": wallet.address,
                      "denomination": "USDC", "amount_base_units": "25000000",
                      "reason": "bounty", "ref": bounty_id}


def test_given_no_link_when_a_bounty_is_claimed_then_missing_and_paid_once_linked(stack_env):
    login, github_id = f"solver-{uuid.uuid4().hex[:10]}", random.randrange(10**6, 10**9)
    wallet = Account.create()
    bounty_id = str(uuid.uuid4())
    watch = Watch(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC)
    try:
        bounty_claimed(stack_env, bounty_id, login, github_id)
        missing = awaited(watch, "dev.eventworks.identity.missing",
                          lambda d: d["github_login"] == login)
        assert missing["ref"] == bounty_id
        assert missing["where"] == {"repository": "octo/bounties", "issue_number": 12}

        # The solver links later: the waiting payout leaves through link-identity's outbox.
        link_started(stack_env, login, github_id, wallet)
        sign_and_link(stack_env, watch, login, wallet)
        payout = awaited(watch, "dev.eventworks.payout.requested",
                         lambda d: d["payout_id"] == f"bounty:{bounty_id}")
    finally:
        watch.close()
    assert payout["to_address"] == wallet.address
    assert payout["amount_base_units"] == "25000000"
