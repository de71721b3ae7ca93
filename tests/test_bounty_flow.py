"""The whole bounty flow of DESIGN §1 in the local stack, one story from comment to payout:

a maintainer comments `$USDC:100$` (a signed webhook) → parse-comment answers on the issue
with the signing link → the funder's wallet signs the pledge (EIP-712) and the signing page
posts it → verify-tx funds it → the solver comments `/link 0x…` → link-identity challenges
(SIWE) → the wallet signs, the page posts it → linked → the solver's pull request is merged →
`bounty.claimed` → link-identity requests the payout to the linked address → sign-tx signs
it with a leased key → verify-tx verifies it → the bot's one comment says paid, with the
transaction hash.

Only the outside world is stood in for: GitHub (the stack's API stand-in and signed
webhooks) and the browser wallet (eth-account keys, signing what the page would have them
sign; the page itself is driven in Chromium in tests/test_signing_page.py).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from tests.factory import cloudevent, pledge_typed_data
from tests.tansu import records, wait_until

pytestmark = pytest.mark.stack

TOPIC = "knative-broker-eventworks-default"
DATA = Path(__file__).resolve().parent.parent / "functions" / "parse-comment" / "tests" / "data"
STEP = 60.0  # seconds a step may take on a loaded machine (most take well under one)


class Story:
    """One repository of our own, so that reruns against one stack never meet."""

    def __init__(self, stack_env: dict[str, str]) -> None:
        self.env = stack_env
        self.repository = f"Codertocat/flow-{uuid.uuid4().hex[:10]}"
        self.repository_id = random.randrange(10**9, 10**10)
        self.ids: dict[int, int] = {}

    def payload(self, name: str) -> dict[str, Any]:
        payload: dict[str, Any] = copy.deepcopy(json.loads((DATA / name).read_text()))
        payload["repository"].update(full_name=self.repository, id=self.repository_id)
        for part in ("comment", "issue", "pull_request"):
            if part in payload:
                original = payload[part]["id"]
                payload[part]["id"] = self.ids.setdefault(
                    original, random.randrange(10**9, 10**10))
        return payload

    def webhook(self, event_name: str, payload: dict[str, Any]) -> None:
        """As GitHub delivers it: signed with the webhook secret (X-Hub-Signature-256)."""
        body = json.dumps(payload).encode()
        signature = hmac.new(self.env["GITHUB_WEBHOOK_SECRET"].encode(), body,
                             hashlib.sha256).hexdigest()
        response = httpx.post(self.env["GITHUB_WEBHOOK_URL"], content=body, headers={
            "content-type": "application/json", "x-github-event": event_name,
            "x-github-delivery": str(uuid.uuid4()),
            "x-hub-signature-256": f"sha256={signature}"}, timeout=10)
        assert response.status_code == 202, response.text

    def through_the_page(self, event_type: str, data: dict[str, Any]) -> None:
        """What the signing page posts: structured mode, to its own server's /events."""
        headers, body = cloudevent(event_type, data,
                                   source="/eventworks/signing-page").structured()
        page = self.env["SIGNING_PAGE_URL"].rstrip("/")
        response = httpx.post(f"{page}/events", content=body, headers=headers, timeout=10)
        assert response.status_code == 202, response.text

    def bot_comments(self) -> str:
        """Every comment of the bot on the issue, one text (its bounty comment, and its
        answer to /link)."""
        response = httpx.get(f"{self.env['GITHUB_API_URL']}/_stand-in/comments",
                             params={"repository": self.repository}, timeout=5)
        response.raise_for_status()
        comments: list[dict[str, Any]] = response.json()
        return "\n".join(str(c["body"]) for c in comments if "eventworks:" in c["body"])

    def events(self, event_type: str, **fields: Any) -> list[dict[str, Any]]:
        found = records(self.env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC,
                        lambda r: r.headers.get("ce_type") == event_type.encode())
        data = [json.loads(r.value) for r in found]
        return [d for d in data if all(d.get(k) == v for k, v in fields.items())]

    def awaited(self, event_type: str, **fields: Any) -> dict[str, Any]:
        wait_until(lambda: self.events(event_type, **fields), f"{event_type} {fields}",
                   timeout=STEP)
        return self.events(event_type, **fields)[0]


def pledge(requested: dict[str, Any]) -> dict[str, Any]:
    """The typed data the page has the wallet sign, from the link's terms."""
    link = {k: v[0] for k, v in parse_qs(urlsplit(requested["sign_url"]).query).items()}
    return pledge_typed_data(bounty_id=link["bounty"], repository=link["repository"],
                             issue_number=int(link["issue"]),
                             denomination=link["denomination"],
                             amount_base_units=link["amount_base_units"],
                             chain_id=int(link["chain_id"]))


class Solver:
    """A solver of this run's own: the stack's topic keeps every earlier run's identity
    events, and a reused login would find an earlier run's challenge and link."""

    def __init__(self) -> None:
        self.wallet = Account.create()
        self.login = f"contributor-{uuid.uuid4().hex[:8]}"
        self.id = random.randrange(10**8, 10**9)


def offer(story: Story) -> dict[str, Any]:
    """A maintainer offers 100 USDC on issue #1: the bot answers with the signing link."""
    payload = story.payload("issue_comment.created.bounty.json")
    story.webhook("issue_comment", payload)
    requested = story.awaited("dev.eventworks.bounty.requested",
                              comment_id=payload["comment"]["id"])
    assert (requested["denomination"], requested["amount_base_units"]) == ("USDC", "100000000")
    wait_until(lambda: requested["bounty_id"] in story.bot_comments(), "the bot's comment",
               timeout=STEP)
    return requested


def fund(story: Story, requested: dict[str, Any]) -> None:
    """The funder's wallet signs the pledge; the page posts it; verify-tx funds it."""
    funder = Account.create()
    typed = pledge(requested)
    signature = Account.sign_message(encode_typed_data(full_message=typed), funder.key)
    story.through_the_page("dev.eventworks.bounty.signed", {
        "bounty_id": requested["bounty_id"], "funder_address": funder.address,
        "typed_data": typed, "signature": "0x" + bytes(signature.signature).hex(),
        "repository": story.repository, "issue_number": requested["issue_number"],
        "denomination": "USDC", "amount_base_units": "100000000",
        "chain_id": typed["domain"]["chainId"]})
    story.awaited("dev.eventworks.bounty.funded", bounty_id=requested["bounty_id"])


def link(story: Story, solver: Solver) -> None:
    """The solver links a wallet: /link → SIWE challenge → signed through the page."""
    payload = story.payload("issue_comment.created.bounty.json")
    payload["comment"]["id"] = random.randrange(10**9, 10**10)
    payload["comment"]["body"] = f"/link {solver.wallet.address}"
    payload["comment"]["user"].update(login=solver.login, id=solver.id)
    payload["comment"]["author_association"] = "CONTRIBUTOR"
    payload["sender"].update(login=solver.login, id=solver.id)
    story.webhook("issue_comment", payload)
    challenge = story.awaited("dev.eventworks.identity.challenged", github_login=solver.login)
    (message,) = parse_qs(urlsplit(challenge["sign_url"]).query)["link"]
    signed = Account.sign_message(encode_defunct(text=message), solver.wallet.key)
    story.through_the_page("dev.eventworks.identity.link", {
        "message": message, "signature": "0x" + bytes(signed.signature).hex()})
    story.awaited("dev.eventworks.identity.linked", github_login=solver.login)


def merge(story: Story, solver: Solver) -> None:
    """The solver's pull request that fixes #1 is merged."""
    merged = story.payload("pull_request.closed.merged.json")
    merged["pull_request"]["user"].update(login=solver.login, id=solver.id)
    story.webhook("pull_request", merged)


def paid(story: Story, requested: dict[str, Any], solver: Solver) -> None:
    """Claimed, paid to the solver's wallet, and the bot's one comment says paid, with the
    transaction hash."""
    story.awaited("dev.eventworks.bounty.claimed", bounty_id=requested["bounty_id"],
                  solver_login=solver.login)
    payout = story.awaited("dev.eventworks.payout.requested", ref=requested["bounty_id"])
    assert payout["to_address"].lower() == solver.wallet.address.lower()
    assert (payout["denomination"], payout["amount_base_units"]) == ("USDC", "100000000")
    signed_tx = story.awaited("dev.eventworks.tx.signed", request_id=payout["payout_id"])
    verified = story.awaited("dev.eventworks.tx.verified", request_id=payout["payout_id"])
    assert verified["tx_hash"] == signed_tx["tx_hash"]
    wait_until(lambda: verified["tx_hash"] in story.bot_comments(),
               "the comment saying paid with the transaction hash", timeout=STEP)


def test_given_a_bounty_comment_when_funded_linked_and_claimed_then_the_solver_is_paid_and_told(
        stack_env):
    story, solver = Story(stack_env), Solver()
    requested = offer(story)
    fund(story, requested)
    wait_until(lambda: "funded" in story.bot_comments(), "the comment saying funded",
               timeout=STEP)
    link(story, solver)
    merge(story, solver)
    paid(story, requested, solver)


def test_given_a_merge_that_arrives_before_the_pledge_when_funded_then_the_solver_is_paid(
        stack_env):
    """The merge and the funding travel on different Triggers: a merge handled before
    parse-comment applied bounty.funded records a claim that the funding then pays."""
    story, solver = Story(stack_env), Solver()
    requested = offer(story)
    link(story, solver)
    merge(story, solver)
    wait_until(lambda: f"Claimed by @{solver.login}" in story.bot_comments(),
               "the comment saying claimed, paid when funded", timeout=STEP)
    assert not story.events("dev.eventworks.bounty.claimed", bounty_id=requested["bounty_id"])
    fund(story, requested)
    paid(story, requested, solver)
