"""Tier 2: parse-comment driven in-process through func-python's real decode/encode path,
with its inbox and bounties in the local stack's PostgreSQL and its GitHub comments going
over HTTP to the GitHub API stand-in served in-process."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from eventing.events import bounty_payout_id
from function import new
from function.func import bounty_id
from tests.factory import Event, cloudevent, github, issue_comment, post_to, probed_ready, served
from tests.github_stand_in import Served, github_stand_in
from tests.subscriber import Subscriber

pytestmark = pytest.mark.stack

DATA = Path(__file__).parent / "data"
FUNDER = "0x" + "f0" * 20
SOLVER = "0x" + "50" * 20
TX_HASH = "0x" + "ab" * 32


def golden(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((DATA / name).read_text()))


class Repo:
    """A repository of its own per test (the database outlives tests): a fresh name and id,
    and fresh ids for every source, applied to copies of the golden webhooks."""

    def __init__(self) -> None:
        self.id = random.randint(10**9, 2 * 10**9)
        self.full_name = f"Codertocat/hello-{uuid.uuid4().hex[:10]}"
        self.ids: dict[int, int] = {}

    def fresh(self, original: int) -> int:
        return self.ids.setdefault(original, random.randint(10**9, 2 * 10**9))

    def payload(self, name: str, body: str | None = None, **changes: Any) -> dict[str, Any]:
        payload = golden(name)
        payload["repository"]["id"] = self.id
        payload["repository"]["full_name"] = self.full_name
        parts = [p for p in ("comment", "pull_request", "issue") if p in payload]
        for part in parts:
            payload[part]["id"] = self.fresh(payload[part]["id"])
        if body is not None:  # the source's body: the comment's, else the PR's or issue's
            payload[parts[0]]["body"] = body
        for path, value in changes.items():
            target = payload
            *parents, leaf = path.split("__")
            for key in parents:
                target = target[key]
            target[leaf] = value
        return payload

    def event(self, name: str, body: str | None = None, **changes: Any) -> Event:
        kind = name.split(".")[0]
        return github(kind, self.payload(name, body, **changes))


@pytest.fixture
async def gh() -> AsyncIterator[Served]:
    async with github_stand_in() as served_stand_in:
        yield served_stand_in


@pytest.fixture
def env(stack_env, gh):
    return {"DATABASE_URL": stack_env["DATABASE_URL_PARSE_COMMENT"],
            "SIGNING_PAGE_URL": "https://sign.example/pledge", "SIGNING_CHAIN_ID": "1",
            "GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "ghs_test_token"}


@pytest.fixture
def sink():
    """A stand-in for the broker ingress at K_SINK, recording what the outbox relays."""
    receiver = Subscriber()
    yield receiver
    receiver.close()


def reply_of(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    assert response.status_code == 200, response.text
    event = from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))
    assert event.get_source() == "/eventworks/parse-comment"
    data = event.get_data()
    assert isinstance(data, dict)
    return event.get_type(), data


async def send(client: httpx.AsyncClient, event: Event) -> httpx.Response:
    return await client.post("/", content=event.body, headers=dict(event.headers))


def sign_query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


# -- requested ---------------------------------------------------------------------------------
async def test_given_bounty_comment_when_posted_then_requested_reply_and_one_bot_comment(env, gh):
    repo = Repo()
    payload = repo.payload("issue_comment.created.bounty.json")
    async with served(new(), env) as client:
        response = await send(client, github("issue_comment", payload))

    kind, data = reply_of(response)
    assert kind == "dev.eventworks.bounty.requested"
    assert response.headers["ce-subject"] == f"{repo.full_name}#1"
    the_id = bounty_id(repo.id, payload["comment"]["id"])
    assert data == {
        "bounty_id": the_id, "repository": repo.full_name, "issue_number": 1,
        "comment_id": payload["comment"]["id"], "funder_login": "Codertocat",
        "funder_id": payload["comment"]["user"]["id"], "denomination": "USDC",
        "amount": "100", "amount_base_units": "100000000", "decimals": 6,
        "sign_url": data["sign_url"], "source_kind": "comment", "chain_id": 1,
    }
    assert data["sign_url"].startswith("https://sign.example/pledge?")
    assert sign_query(data["sign_url"]) == {
        "bounty": the_id, "repository": repo.full_name, "issue": "1", "denomination": "USDC",
        "amount": "100", "amount_base_units": "100000000", "decimals": "6", "chain_id": "1"}
    (comment,) = await gh.comments(repository=repo.full_name)
    assert comment["issue_number"] == 1
    assert f"<!-- eventworks:bounty:{the_id} -->" in comment["body"]
    assert "**100 USDC**" in comment["body"]
    assert f"[sign the pledge]({data['sign_url']})" in comment["body"]


async def test_given_redelivered_webhook_when_posted_twice_then_same_reply_and_nothing_posted(
        env, gh):
    repo = Repo()
    event = repo.event("issue_comment.created.bounty.json")
    async with served(new(), env) as client:
        first = await send(client, event)
        second = await send(client, event)
    assert first.content == second.content
    assert first.headers["ce-id"] == second.headers["ce-id"]
    (comment,) = await gh.comments(repository=repo.full_name)
    assert comment["edits"] == 0


async def test_given_edit_of_the_amount_when_posted_then_updated_same_id_and_same_comment(
        env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        response = await send(client, repo.event("issue_comment.edited.bounty.json"))
    kind, updated = reply_of(response)
    assert kind == "dev.eventworks.bounty.updated"
    assert updated["bounty_id"] == requested["bounty_id"]
    assert (updated["amount"], updated["amount_base_units"]) == ("250", "250000000")
    assert sign_query(updated["sign_url"])["amount_base_units"] == "250000000"
    (comment,) = await gh.comments(repository=repo.full_name)
    assert comment["edits"] == 1
    assert "**250 USDC**" in comment["body"]
    assert "**100 USDC**" in comment["history"][0]


async def test_given_edit_with_other_words_same_terms_when_posted_then_202_nothing_edited(
        env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        await send(client, repo.event("issue_comment.created.bounty.json"))
        response = await send(client, repo.event("issue_comment.edited.bounty.json",
                                                 "Still $usdc:100.0$, no more."))
    assert response.status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert comment["edits"] == 0


@pytest.mark.parametrize(("name", "body"), [("issue_comment.edited.json", None),
                                            ("issue_comment.deleted.json", None)])
async def test_given_pattern_removed_or_comment_deleted_when_posted_then_cancelled(
        env, gh, name, body):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        kind, data = reply_of(await send(client, repo.event(name, body)))
    assert kind == "dev.eventworks.bounty.cancelled"
    assert data["bounty_id"] == requested["bounty_id"]
    assert (data["repository"], data["issue_number"]) == (repo.full_name, 1)
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "cancelled" in comment["body"]
    assert comment["edits"] == 1


# -- out of order ------------------------------------------------------------------------------
async def test_given_delete_before_create_when_created_arrives_then_nothing_at_all(env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        deleted = await send(client, repo.event("issue_comment.deleted.json"))
        created = await send(client, repo.event("issue_comment.created.bounty.json"))
        edited = await send(client, repo.event("issue_comment.edited.bounty.json"))
    assert deleted.status_code == created.status_code == edited.status_code == 202
    assert await gh.comments(repository=repo.full_name) == []


async def test_given_edit_before_create_when_both_arrive_then_requested_at_the_edit_terms(
        env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        kind, data = reply_of(await send(client, repo.event("issue_comment.edited.bounty.json")))
        late = await send(client, repo.event("issue_comment.created.bounty.json"))
    assert (kind, data["amount"]) == ("dev.eventworks.bounty.requested", "250")
    assert late.status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "**250 USDC**" in comment["body"]


async def test_given_older_edit_after_newer_when_posted_then_stale_and_ignored(env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        await send(client, repo.event("issue_comment.edited.bounty.json"))
        older = await send(client, repo.event(
            "issue_comment.edited.bounty.json", "$USDC:5$",
            comment__updated_at="2019-05-15T15:20:21Z"))
    assert older.status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "**250 USDC**" in comment["body"]


# -- who -----------------------------------------------------------------------------------------
async def test_given_bot_comment_with_a_pattern_when_posted_then_202_and_silence(env, gh):
    repo = Repo()
    response = await post_to(new(), repo.event("issue_comment.created.bot.json"), env=env)
    assert response.status_code == 202
    assert await gh.comments(repository=repo.full_name) == []


async def test_given_outsider_offering_a_bounty_when_posted_twice_then_one_polite_reply(env, gh):
    repo = Repo()
    event = repo.event("issue_comment.created.outsider.json")
    async with served(new(), env) as client:
        first = await send(client, event)
        again = await send(client, event)
    assert first.status_code == again.status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert comment["body"].endswith(
        "@octo-outsider thanks for the offer! Only the repository's owners, members and "
        "collaborators can put a bounty on an issue here, so this one was not recorded.")


async def test_given_malformed_pattern_when_posted_and_edited_then_one_helpful_reply(env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        created = await send(client, repo.event("issue_comment.created.bounty.json",
                                                "$USDC:1,000$ for this"))
        edited = await send(client, repo.event("issue_comment.edited.bounty.json",
                                               "$USDC:1,000$ for this!"))
        unknown = await send(client, repo.event("issue_comment.edited.bounty.json", "$DOGE:5$",
                                                comment__updated_at="2019-05-15T15:20:40Z"))
    assert created.status_code == edited.status_code == unknown.status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "DOGE is not a denomination" in comment["body"]
    assert "as `$USDC:1000$`" in comment["history"][0]


# -- other sources -------------------------------------------------------------------------------
async def test_given_escaped_pattern_on_a_pull_request_comment_when_posted_then_requested(
        env, gh):
    repo = Repo()
    response = await post_to(new(), repo.event("issue_comment.created.pr.json"), env=env)
    kind, data = reply_of(response)
    assert (kind, data["denomination"], data["amount"], data["issue_number"]) == (
        "dev.eventworks.bounty.requested", "ETH", "0.5", 2)
    assert data["amount_base_units"] == "500000000000000000"
    assert len(await gh.comments(repository=repo.full_name, issue="2")) == 1


async def test_given_issue_body_opened_then_edited_when_posted_then_requested_then_updated(
        env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        opened = await send(client, repo.event("issues.opened.bounty.json"))
        edited = await send(client, repo.event("issues.edited.bounty.json"))
    kind, requested = reply_of(opened)
    assert (kind, requested["source_kind"], requested["amount"]) == (
        "dev.eventworks.bounty.requested", "issue", "50")
    kind, updated = reply_of(edited)
    assert (kind, updated["amount"]) == ("dev.eventworks.bounty.updated", "75")
    assert updated["bounty_id"] == requested["bounty_id"] != bounty_id(
        repo.id, requested["comment_id"])
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "**75 DAI**" in comment["body"]


async def test_given_pull_request_opened_without_pattern_when_posted_then_202(env, gh):
    repo = Repo()
    response = await post_to(new(), repo.event("pull_request.opened.json"), env=env)
    assert response.status_code == 202


# -- funded, claimed, paid -------------------------------------------------------------------------
def funded(data: dict[str, Any], **changes: Any) -> Event:
    return cloudevent("dev.eventworks.bounty.funded", {
        "bounty_id": data["bounty_id"], "funder_address": FUNDER,
        "repository": data["repository"], "issue_number": data["issue_number"],
        "denomination": data["denomination"], "amount_base_units": data["amount_base_units"],
        "chain_id": 1, **changes}, source="/eventworks/verify-tx")


async def test_given_a_funded_bounty_when_a_pr_closing_it_merges_and_is_paid_then_one_comment_tells_it_all(  # noqa: E501
        env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        assert (await send(client, funded(requested))).status_code == 202
        (comment,) = await gh.comments(repository=repo.full_name)
        assert "funded by @Codertocat" in comment["body"]
        assert FUNDER in comment["body"]

        merged = repo.payload("pull_request.closed.merged.json")
        kind, claimed = reply_of(await send(client, github("pull_request", merged)))
        assert kind == "dev.eventworks.bounty.claimed"
        assert claimed == {
            "bounty_id": requested["bounty_id"], "repository": repo.full_name,
            "issue_number": 1, "solver_login": "contributor-jane", "solver_id": 12345,
            "pull_request": 2, "pull_request_url": merged["pull_request"]["html_url"],
            "denomination": "USDC", "amount": "100", "amount_base_units": "100000000",
            "decimals": 6}

        verified = cloudevent("dev.eventworks.tx.verified", {
            "request_id": bounty_payout_id(requested["bounty_id"]), "tx_hash": TX_HASH,
            "from": SOLVER}, source="/eventworks/verify-tx")
        assert (await send(client, verified)).status_code == 202
        assert (await send(client, verified)).status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "paid to @contributor-jane" in comment["body"]
    assert TX_HASH in comment["body"]
    assert comment["edits"] == 3  # funded, claimed, paid


async def test_given_pledge_for_other_terms_when_funded_then_not_funded_and_told(env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        refused = await send(client, funded(requested, amount_base_units="1"))
        merged = await send(client, repo.event("pull_request.closed.merged.json"))
    assert refused.status_code == merged.status_code == 202
    comments = await gh.comments(repository=repo.full_name)
    assert "not accepted" in comments[0]["body"]
    assert "sign the pledge" in comments[0]["body"]
    assert "has not been funded yet" in comments[1]["body"]


async def test_given_claimed_bounty_when_a_second_pr_merges_then_reported_not_claimed(env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        await send(client, funded(requested))
        reply_of(await send(client, repo.event("pull_request.closed.merged.json")))
        second = await send(client, repo.event(
            "pull_request.closed.merged.json", pull_request__number=3,
            pull_request__id=555, pull_request__body="/claim #1"))
    assert second.status_code == 202
    comments = await gh.comments(repository=repo.full_name)
    assert len(comments) == 2
    assert "already claimed by #2" in comments[1]["body"]


# -- a merge that arrives before the pledge ------------------------------------------------------
async def test_given_a_merge_before_the_pledge_when_both_delivered_twice_then_claimed_once_at_funding(  # noqa: E501
        env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        merged = github("pull_request", repo.payload("pull_request.closed.merged.json"))
        assert (await send(client, merged)).status_code == 202
        assert (await send(client, merged)).status_code == 202
        bounty, notice = await gh.comments(repository=repo.full_name)
        assert "Claimed by @contributor-jane with #2" in bounty["body"]
        assert "sign the pledge" in bounty["body"]
        assert "your claim is recorded" in notice["body"]

        pledge = funded(requested)
        kind, claimed = reply_of(await send(client, pledge))
        assert reply_of(await send(client, pledge)) == (kind, claimed)  # the inbox answers
        late = await send(client, funded(requested))  # another delivery of a new id
        again = await send(client, github(
            "pull_request", repo.payload("pull_request.closed.merged.json")))
    assert kind == "dev.eventworks.bounty.claimed"
    assert claimed["bounty_id"] == requested["bounty_id"]
    assert (claimed["solver_login"], claimed["solver_id"], claimed["pull_request"]) == (
        "contributor-jane", 12345, 2)
    assert late.status_code == again.status_code == 202
    bounty, notice = await gh.comments(repository=repo.full_name)
    assert "claimed by @contributor-jane with #2; the payout is on its way" in bounty["body"]
    assert bounty["edits"] == 2  # pending claim, claimed


async def test_given_a_pending_claim_when_a_second_pr_merges_then_refused_and_the_first_paid(
        env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        await send(client, repo.event("pull_request.closed.merged.json"))
        second = await send(client, repo.event(
            "pull_request.closed.merged.json", pull_request__number=3,
            pull_request__id=555, pull_request__body="/claim #1",
            pull_request__user__login="someone-else"))
        kind, claimed = reply_of(await send(client, funded(requested)))
    assert second.status_code == 202
    assert (kind, claimed["pull_request"]) == ("dev.eventworks.bounty.claimed", 2)
    assert claimed["solver_login"] == "contributor-jane"
    bodies = [c["body"] for c in await gh.comments(repository=repo.full_name)]
    assert len(bodies) == 3  # the bounty, the first merge's notice, the second's refusal
    assert "already claimed by #2" in bodies[2]


@pytest.mark.parametrize("offered_again", [False, True])
async def test_given_a_pending_claim_when_the_bounty_is_cancelled_then_the_pledge_pays_nobody(
        env, gh, offered_again):
    """Cancellation drops the waiting claim: a bounty offered again after it is funded,
    not claimed by the merge that came before the cancellation."""
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        await send(client, repo.event("pull_request.closed.merged.json"))
        kind, _ = reply_of(await send(client, repo.event("issue_comment.edited.json")))
        if offered_again:
            reply_of(await send(client, repo.event(
                "issue_comment.edited.bounty.json", "$USDC:100$",
                comment__updated_at="2019-05-15T15:20:30Z")))
        pledge = await send(client, funded(requested))
    assert kind == "dev.eventworks.bounty.cancelled"
    assert pledge.status_code == 202  # no bounty.claimed
    bounty = (await gh.comments(repository=repo.full_name))[0]
    assert ("funded by @Codertocat" if offered_again else "cancelled") in bounty["body"]
    assert "laimed by" not in bounty["body"]


async def test_given_a_merge_closing_two_funded_bounties_when_posted_then_the_first_is_the_reply_and_the_other_leaves_through_the_outbox(  # noqa: E501
        env, gh, sink):
    repo = Repo()
    async with served(new(), {**env, "K_SINK": sink.url}) as client:
        _, first = reply_of(await send(client, repo.event("issue_comment.created.bounty.json")))
        _, second = reply_of(await send(client, repo.event(
            "issue_comment.created.pr.json", "$DAI:3$", issue__number=1,
            issue__pull_request=None)))
        await send(client, funded(first))
        await send(client, funded(second))
        kind, claimed = reply_of(await send(client, repo.event(
            "pull_request.closed.merged.json")))
        for _ in range(250):
            if sink.received:
                break
            await asyncio.sleep(0.02)
    assert (kind, claimed["bounty_id"]) == ("dev.eventworks.bounty.claimed", first["bounty_id"])
    (relayed,) = sink.received
    assert relayed.headers["ce-type"] == "dev.eventworks.bounty.claimed"
    assert json.loads(relayed.body)["bounty_id"] == second["bounty_id"]
    bodies = [c["body"] for c in await gh.comments(repository=repo.full_name)]
    assert len(bodies) == 2
    assert all("claimed by @contributor-jane" in b for b in bodies)
    assert not any("not requested yet" in b for b in bodies)


async def test_given_rejected_pledge_and_rejected_payout_when_posted_then_noted(env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        rejected = cloudevent("dev.eventworks.bounty.rejected", {
            "bounty_id": requested["bounty_id"], "reason": "signer_mismatch"})
        assert (await send(client, rejected)).status_code == 202
        (comment,) = await gh.comments(repository=repo.full_name)
        assert "rejected (signer mismatch)" in comment["body"]
        await send(client, funded(requested))
        reply_of(await send(client, repo.event("pull_request.closed.merged.json")))
        tx_rejected = cloudevent("dev.eventworks.tx.rejected", {
            "request_id": bounty_payout_id(requested["bounty_id"]), "reason": "stale_lease"})
        assert (await send(client, tx_rejected)).status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "claimed by @contributor-jane" in comment["body"]
    assert "payout transaction was rejected (stale lease)" in comment["body"]


async def test_given_tx_verified_of_another_request_when_posted_then_202_nothing(env, gh):
    verified = cloudevent("dev.eventworks.tx.verified", {
        "request_id": "batch:123", "tx_hash": TX_HASH, "from": SOLVER})
    assert (await post_to(new(), verified, env=env)).status_code == 202
    assert await gh.comments() == []


# -- identity --------------------------------------------------------------------------------------
async def test_given_link_comment_when_posted_then_identity_link_started_where_it_was_said(
        env, gh):
    repo = Repo()
    response = await post_to(new(), repo.event("issue_comment.created.outsider.json",
                                               f"/link {SOLVER}"), env=env)
    kind, data = reply_of(response)
    assert kind == "dev.eventworks.identity.link.started"
    assert data == {"github_login": "octo-outsider", "github_id": 4242, "address": SOLVER,
                    "where": {"repository": repo.full_name, "issue_number": 1}}


async def test_given_challenge_then_linked_when_posted_then_one_comment_edited(env, gh):
    repo = Repo()
    where = {"repository": repo.full_name, "issue_number": 1}
    challenged = cloudevent("dev.eventworks.identity.challenged", {
        "github_login": "octo-outsider", "address": SOLVER, "message": "siwe text",
        "expires_at": "2030-01-01T00:00:00Z", "sign_url": "https://sign.example/link?n=1",
        "where": where})
    linked = cloudevent("dev.eventworks.identity.linked", {
        "github_login": "octo-outsider", "address": SOLVER, "where": where})
    async with served(new(), env) as client:
        assert (await send(client, challenged)).status_code == 202
        (comment,) = await gh.comments(repository=repo.full_name)
        assert "[sign this message](https://sign.example/link?n=1)" in comment["body"]
        assert (await send(client, linked)).status_code == 202
    (comment,) = await gh.comments(repository=repo.full_name)
    assert "is linked to" in comment["body"]
    assert comment["edits"] == 1


async def test_given_identity_missing_for_a_payout_when_posted_then_asked_on_the_issue(env, gh):
    repo = Repo()
    async with served(new(), env) as client:
        _, requested = reply_of(await send(client, repo.event(
            "issue_comment.created.bounty.json")))
        await send(client, funded(requested))
        reply_of(await send(client, repo.event("pull_request.closed.merged.json")))
        missing = cloudevent("dev.eventworks.identity.missing", {
            "github_login": "contributor-jane", "reason": "no linked address",
            "ref": bounty_payout_id(requested["bounty_id"])})
        assert (await send(client, missing)).status_code == 202
    comments = await gh.comments(repository=repo.full_name)
    assert "@contributor-jane" in comments[-1]["body"]
    assert "/link 0x" in comments[-1]["body"]


# -- GitHub failures --------------------------------------------------------------------------
async def test_given_github_down_when_posted_then_503_and_nothing_recorded(env, gh, unused_port):
    repo = Repo()
    event = repo.event("issue_comment.created.bounty.json")
    down = {**env, "GITHUB_API_URL": f"http://127.0.0.1:{unused_port}"}
    response = await post_to(new(), event, env=down)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"] == "urn:eventworks:problem:unavailable"
    # The retry, GitHub back: the first answer was not recorded, so now it is done.
    kind, _ = reply_of(await post_to(new(), event, env=env))
    assert kind == "dev.eventworks.bounty.requested"
    assert len(await gh.comments(repository=repo.full_name)) == 1


async def announce(env: dict[str, str], key: str, repository: str, issue_number: int) -> None:
    """What a try that posted leaves in the database when its transaction rolls back: the
    announcement of its post (committed before the GitHub call), nothing else."""
    async with await psycopg.AsyncConnection.connect(env["DATABASE_URL"],
                                                     autocommit=True) as conn:
        await conn.execute("INSERT INTO parse_comment.bot_posts (key, repository, issue_number)"
                           " VALUES (%s, %s, %s)", (key, repository, issue_number))


async def test_given_a_comment_posted_by_a_try_that_did_not_commit_when_retried_then_edited_not_posted_again(  # noqa: E501
        env, gh):
    repo = Repo()
    payload = repo.payload("issue_comment.created.bounty.json")
    the_id = bounty_id(repo.id, payload["comment"]["id"])
    # What a first try left behind: its announced post and its comment on GitHub, its
    # transaction rolled back.
    await announce(env, f"bounty:{the_id}", repo.full_name, 1)
    gh.app._create(*repo.full_name.split("/"), 1,
                   f"<!-- eventworks:bounty:{the_id} -->\nhalf done")
    kind, _ = reply_of(await post_to(new(), github("issue_comment", payload), env=env))
    assert kind == "dev.eventworks.bounty.requested"
    (comment,) = await gh.comments(repository=repo.full_name)
    assert comment["edits"] == 1
    assert "**100 USDC**" in comment["body"]


async def test_given_a_new_bounty_when_posted_then_one_github_call_and_no_search(env, gh):
    repo = Repo()
    # Many comments on the issue already: a search for the marker would page through them.
    for n in range(150):
        gh.app._create(*repo.full_name.split("/"), 1, f"comment {n}")
    gh.app.calls.clear()
    kind, _ = reply_of(await post_to(new(), repo.event("issue_comment.created.bounty.json"),
                                     env=env))
    assert kind == "dev.eventworks.bounty.requested"
    assert list(gh.app.calls) == [("POST", f"/repos/{repo.full_name}/issues/1/comments")]


async def test_given_github_down_on_the_first_try_when_retried_then_searched_once_and_posted_once(
        env, gh, unused_port):
    repo = Repo()
    event = repo.event("issue_comment.created.bounty.json")
    down = {**env, "GITHUB_API_URL": f"http://127.0.0.1:{unused_port}"}
    assert (await post_to(new(), event, env=down)).status_code == 503
    gh.app.calls.clear()
    # The first try's outcome is unknown to the retry (it announced a post): it looks first.
    kind, _ = reply_of(await post_to(new(), event, env=env))
    assert kind == "dev.eventworks.bounty.requested"
    comments = f"/repos/{repo.full_name}/issues/1/comments"
    assert list(gh.app.calls) == [("GET", comments), ("POST", comments)]
    # Recorded: the next change of the bounty edits by id, with no search.
    gh.app.calls.clear()
    edited = repo.event("issue_comment.edited.bounty.json")  # 100 → 250 USDC
    kind, _ = reply_of(await post_to(new(), edited, env=env))
    assert kind == "dev.eventworks.bounty.updated"
    assert [method for method, _ in gh.app.calls] == ["PATCH"]


async def test_given_github_app_credentials_when_posting_then_installation_token_used(
        env, gh):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    app_env = {k: v for k, v in env.items() if k != "GITHUB_TOKEN"}
    app_env.update({"GITHUB_APP_ID": "4242", "GITHUB_APP_PRIVATE_KEY": pem,
                    "GITHUB_APP_INSTALLATION_ID": "77"})
    repo = Repo()
    response = await post_to(new(), repo.event("issue_comment.created.bounty.json"), env=app_env)
    assert response.status_code == 200
    assert len(await gh.comments(repository=repo.full_name)) == 1
    assert [(t["app_id"], t["installation_id"]) for t in gh.app.installation_tokens] == [
        ("4242", 77)]


def test_given_no_github_credentials_when_started_then_settings_error(stack_env):
    from eventing.settings import SettingsError

    with pytest.raises(SettingsError, match="GITHUB_TOKEN"):
        new().start({"DATABASE_URL": stack_env["DATABASE_URL_PARSE_COMMENT"]})


# -- the edge's rules, as for every function ------------------------------------------------
async def test_given_same_id_with_other_data_when_posted_then_409_conflict(env, gh):
    first = github("issue_comment", issue_comment("$USDC:100$"))
    other = github("issue_comment", issue_comment("$USDC:200$"), delivery=first.id)
    async with served(new(), env) as client:
        assert (await send(client, first)).status_code == 200
        response = await send(client, other)
    assert response.status_code == 409
    assert response.json()["field"] == "id"


async def test_given_same_id_with_other_data_both_needing_no_state_when_posted_then_both_202(
        env):
    # Ignored with no I/O (docs/decisions.md, "Cold start"): no inbox row, so nothing for a
    # reused id to conflict with, and nothing was done that a conflict could undo.
    first = github("issue_comment", issue_comment("no bounty here"))
    other = github("issue_comment", issue_comment("nor here"), delivery=first.id)
    async with served(new(), env) as client:
        assert (await send(client, first)).status_code == 202
        assert (await send(client, other)).status_code == 202


async def test_given_data_missing_comment_when_posted_then_400_naming_the_field(env):
    payload = issue_comment()
    del payload["comment"]
    response = await post_to(new(), github("issue_comment", payload), env=env)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "data.comment"


async def test_given_wrongly_typed_field_when_posted_then_400_naming_the_nested_field(env):
    payload = issue_comment()
    payload["issue"]["number"] = "one"
    response = await post_to(new(), github("issue_comment", payload), env=env)
    assert response.status_code == 400
    assert response.json()["field"] == "data.issue.number"


async def test_given_funded_event_with_bad_address_when_posted_then_400(env):
    event = cloudevent("dev.eventworks.bounty.funded", {"bounty_id": "x",
                                                        "funder_address": "0x12"})
    response = await post_to(new(), event, env=env)
    assert response.status_code == 400
    assert response.json()["field"] == "data.funder_address"


async def test_given_unknown_event_type_when_posted_then_400_naming_type(env):
    response = await post_to(new(), cloudevent("dev.eventworks.unknown", {}), env=env)
    assert response.status_code == 400
    assert response.json()["field"] == "type"
    assert response.json()["type"] == "urn:eventworks:problem:unknown-event-type"


@pytest.mark.parametrize(("body", "headers", "field"), [
    (b"hello", {"content-type": "text/plain"}, "content-type"),
    (b"[1, 2", {"content-type": "application/cloudevents+json"}, "body"),
    (b"{}", {"ce-type": "x", "ce-source": "/s", "ce-specversion": "1.0"}, "header ce-id"),
    (b"{}", {"ce-id": "1", "ce-type": "x", "ce-source": "/s", "ce-specversion": "0.9"},
     "specversion"),
    (b"{}", {"ce-id": "1", "ce-type": "x", "ce-source": "/s", "ce-specversion": "1.0",
             "ce-time": "yesterday"}, "header ce-time"),
])
async def test_given_request_that_is_not_a_cloudevent_when_posted_then_400_problem(
        env, body, headers, field):
    response = await post_to(new(), body=body, headers=headers, env=env)
    assert response.status_code == 400
    assert response.json().get("field") == field
    assert "Traceback" not in response.text


async def test_given_database_down_when_posted_then_503_with_retry_after(env, unused_port):
    down = {**env, "DATABASE_URL":
            f"postgresql://parse_comment@127.0.0.1:{unused_port}/eventworks"}
    response = await post_to(new(), github("issue_comment", issue_comment()), env=down)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("body", ["no bounty here", "Thanks! $USDC:100$"])
async def test_given_database_and_github_down_when_an_event_needing_no_state_arrives_then_202(
        env, unused_port, body):
    # Neither a bounty nor a command, or a bot's comment: the decision needs no I/O, so the
    # function answers with no database and no GitHub at all.
    down = {**env, "DATABASE_URL": f"postgresql://parse_comment@127.0.0.1:{unused_port}/eventworks",
            "GITHUB_API_URL": f"http://127.0.0.1:{unused_port}"}
    payload = issue_comment(body, sender_type="Bot" if "$" in body else "User")
    response = await post_to(new(), github("issue_comment", payload), env=down)
    assert response.status_code == 202, response.text


async def test_given_started_function_when_probed_then_ready_after_database_opens(env):
    async with served(new(), env) as client:
        assert (await probed_ready(client)).status_code == 200
        assert (await client.get("/health/liveness")).status_code == 200
