"""End to end through the local stack, the GitHub side of the bounty app: signed webhooks in
at GITHUB_WEBHOOK_URL, through the broker and parse-comment's Triggers, the bot's one
comment on the GitHub API stand-in edited as the bounty moves, and the claim in the topic."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.factory import cloudevent
from tests.tansu import records, wait_until

pytestmark = pytest.mark.stack

TOPIC = "knative-broker-eventworks-default"
DATA = Path(__file__).resolve().parent.parent / "functions" / "parse-comment" / "tests" / "data"
FUNDER = "0x" + "f0" * 20


def webhook(stack_env: dict[str, str], event_name: str, payload: dict[str, Any]) -> None:
    """POST a webhook as GitHub does: signed with the webhook secret (X-Hub-Signature-256)."""
    body = json.dumps(payload).encode()
    signature = hmac.new(stack_env["GITHUB_WEBHOOK_SECRET"].encode(), body,
                         hashlib.sha256).hexdigest()
    response = httpx.post(stack_env["GITHUB_WEBHOOK_URL"], content=body, headers={
        "content-type": "application/json", "x-github-event": event_name,
        "x-github-delivery": str(uuid.uuid4()), "x-hub-signature-256": f"sha256={signature}"},
        timeout=10)
    assert response.status_code == 202, response.text


def golden(name: str, repository: str, repository_id: int, ids: dict[int, int],
           ) -> dict[str, Any]:
    payload: dict[str, Any] = copy.deepcopy(json.loads((DATA / name).read_text()))
    payload["repository"].update(full_name=repository, id=repository_id)
    for part in ("comment", "issue", "pull_request"):
        if part in payload:
            original = payload[part]["id"]
            payload[part]["id"] = ids.setdefault(original, random.randrange(10**9, 10**10))
    return payload


def bot_comments(stack_env: dict[str, str], repository: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack_env['GITHUB_API_URL']}/_stand-in/comments",
                         params={"repository": repository}, timeout=5)
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def bounty_comment(stack_env: dict[str, str], repository: str) -> dict[str, Any]:
    """The bot's comment of the bounty (its marker key), whatever else it said on the issue
    (link-identity runs too: a claim by someone with no linked wallet gets a notice)."""
    (comment,) = [c for c in bot_comments(stack_env, repository)
                  if "<!-- eventworks:bounty:" in c["body"]]
    return comment


def in_topic(stack_env: dict[str, str], event_type: str, **fields: Any) -> list[dict[str, Any]]:
    found = records(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC,
                    lambda r: r.headers.get("ce_type") == event_type.encode())
    data = [json.loads(r.value) for r in found]
    return [d for d in data if all(d.get(k) == v for k, v in fields.items())]


def test_given_a_bounty_comment_when_edited_funded_and_closed_by_a_merge_then_one_bot_comment_and_a_claim(  # noqa: E501
        stack_env):
    repository = f"Codertocat/bounty-{uuid.uuid4().hex[:10]}"
    repository_id = random.randrange(10**9, 10**10)
    ids: dict[int, int] = {}

    # A maintainer offers a bounty: the bot answers with the signing link.
    created = golden("issue_comment.created.bounty.json", repository, repository_id, ids)
    webhook(stack_env, "issue_comment", created)
    wait_until(lambda: bot_comments(stack_env, repository), "the bot's comment", timeout=30)
    (comment,) = bot_comments(stack_env, repository)
    assert "**100 USDC**" in comment["body"]
    assert f"{stack_env['SIGNING_PAGE_URL']}?bounty=" in comment["body"]
    assert "amount_base_units=100000000" in comment["body"]

    # The maintainer edits the amount: the same comment changes, no second one.
    webhook(stack_env, "issue_comment",
            golden("issue_comment.edited.bounty.json", repository, repository_id, ids))
    wait_until(lambda: "**250 USDC**" in bounty_comment(stack_env, repository)["body"],
               "the bot's comment edited to the new amount", timeout=30)
    (edited,) = bot_comments(stack_env, repository)
    assert edited["id"] == comment["id"]
    assert "amount_base_units=250000000" in edited["body"]

    # verify-tx's verdict on a pledge for the new terms arrives through the broker.
    wait_until(lambda: in_topic(stack_env, "dev.eventworks.bounty.updated",
                                comment_id=created["comment"]["id"]),
               "bounty.updated in the topic", timeout=30)
    (updated,) = in_topic(stack_env, "dev.eventworks.bounty.updated",
                          comment_id=created["comment"]["id"])
    funded = cloudevent("dev.eventworks.bounty.funded", {
        "bounty_id": updated["bounty_id"], "funder_address": FUNDER,
        "repository": repository, "issue_number": 1, "denomination": "USDC",
        "amount_base_units": "250000000", "chain_id": updated["chain_id"]},
        source="/eventworks/verify-tx")
    assert httpx.post(stack_env["BROKER_URL"], content=funded.body,
                      headers=dict(funded.headers), timeout=10).status_code == 202
    wait_until(lambda: "funded by @Codertocat" in bounty_comment(stack_env, repository)["body"],
               "the bot's comment saying funded", timeout=30)

    # A contributor's pull request that fixes the issue is merged: the bounty is claimed.
    webhook(stack_env, "pull_request",
            golden("pull_request.closed.merged.json", repository, repository_id, ids))
    wait_until(lambda: in_topic(stack_env, "dev.eventworks.bounty.claimed",
                                bounty_id=updated["bounty_id"]),
               "bounty.claimed in the topic", timeout=30)
    (claimed,) = in_topic(stack_env, "dev.eventworks.bounty.claimed",
                          bounty_id=updated["bounty_id"])
    assert claimed == {
        "bounty_id": updated["bounty_id"], "repository": repository, "issue_number": 1,
        "solver_login": "contributor-jane", "solver_id": 12345, "pull_request": 2,
        "pull_request_url": "https://github.com/Codertocat/Hello-World/pull/2",
        "denomination": "USDC", "amount": "250", "amount_base_units": "250000000",
        "decimals": 6}
    # Claimed, or already paid when the solver has a linked wallet (another test may have
    # linked contributor-jane on this stack): the whole flow runs in the stack.
    wait_until(lambda: any(f"{said} @contributor-jane" in
                           bounty_comment(stack_env, repository)["body"]
                           for said in ("claimed by", "paid to")),
               "the bot's comment saying claimed (or paid)", timeout=30)
    assert bounty_comment(stack_env, repository)["id"] == comment["id"]  # still the one
