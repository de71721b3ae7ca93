"""Tier 2: parse-comment driven in-process through func-python's real decode/encode
path, with its inbox in the local stack's PostgreSQL."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from function import new
from function.func import bounty_id
from tests.factory import cloudevent, github, issue_comment, post_to, probed_ready, served

pytestmark = pytest.mark.stack


@pytest.fixture
def env(stack_env):
    return {"DATABASE_URL": stack_env["DATABASE_URL_PARSE_COMMENT"],
            "SIGNING_PAGE_URL": "https://sign.example/"}


def reply_of(response):
    return from_http_event(HTTPMessage(headers=dict(response.headers), body=response.content))


async def test_given_bounty_comment_when_posted_binary_then_bounty_requested_reply(env):
    payload = issue_comment("Fixing this is worth $USDC:100$ to us")
    response = await post_to(new(), github("issue_comment", payload), env=env)

    assert response.status_code == 200
    reply = reply_of(response)
    assert reply.get_type() == "dev.eventworks.bounty.requested"
    assert reply.get_source() == "/eventworks/parse-comment"
    assert reply.get_subject() == "Codertocat/Hello-World#1"
    data = reply.get_data()
    assert data == {
        "bounty_id": bounty_id(payload["repository"]["id"], payload["comment"]["id"]),
        "repository": "Codertocat/Hello-World",
        "issue_number": 1,
        "comment_id": payload["comment"]["id"],
        "funder_login": "Codertocat",
        "funder_id": payload["comment"]["user"]["id"],
        "denomination": "USDC",
        "amount": "100",
        "amount_base_units": "100000000",
        "decimals": 6,
        "sign_url": f"https://sign.example/?bounty={data['bounty_id']}",
    }


async def test_given_structured_mode_event_when_posted_then_same_reply(env):
    headers, body = github("issue_comment", issue_comment("$ETH:0.5$")).structured()
    response = await post_to(new(), body=body, headers=headers, env=env)
    assert response.status_code == 200
    assert reply_of(response).get_data()["amount_base_units"] == "500000000000000000"


async def test_given_comment_without_pattern_when_posted_then_202_and_no_body(env):
    response = await post_to(new(), github("issue_comment", issue_comment("thanks!")), env=env)
    assert response.status_code == 202
    assert response.content == b""


async def test_given_redelivered_webhook_when_posted_twice_then_same_reply_event(env):
    event = github("issue_comment", issue_comment("$DAI:3$"))
    function = new()
    async with served(function, env) as client:
        first = await client.post("/", content=event.body, headers=dict(event.headers))
        second = await client.post("/", content=event.body, headers=dict(event.headers))
    assert first.status_code == second.status_code == 200
    assert reply_of(first).get_id() == reply_of(second).get_id()
    assert first.content == second.content


async def test_given_same_id_with_other_data_when_posted_then_409_conflict(env):
    first = github("issue_comment", issue_comment("$DAI:3$"))
    other = github("issue_comment", issue_comment("$DAI:4$"), delivery=first.id)
    async with served(new(), env) as client:
        assert (await client.post("/", content=first.body,
                                  headers=dict(first.headers))).status_code == 200
        response = await client.post("/", content=other.body, headers=dict(other.headers))
    assert response.status_code == 409
    assert response.json()["field"] == "id"


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


async def test_given_data_that_is_not_json_when_posted_then_400_naming_data(env):
    event = github("issue_comment", issue_comment())
    response = await post_to(new(), body=b"{not json", headers=event.headers, env=env)
    assert response.status_code == 400
    assert response.json()["field"] == "data"


async def test_given_unknown_event_type_when_posted_then_400_naming_type(env):
    response = await post_to(new(), cloudevent("dev.eventworks.unknown", {}), env=env)
    assert response.status_code == 400
    assert response.json()["field"] == "type"
    assert response.json()["type"] == "urn:eventworks:problem:unknown-event-type"


@pytest.mark.parametrize(("body", "headers", "field"), [
    (b"hello", {"content-type": "text/plain"}, "content-type"),
    (b'{"comment": {}}', {"content-type": "application/json"}, "content-type"),
    (b"[1, 2", {"content-type": "application/cloudevents+json"}, "body"),
    (b'{"type": "x", "source": "/s", "specversion": "1.0"}',
     {"content-type": "application/cloudevents+json"}, "id"),
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
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert problem.get("field") == field
    assert "Traceback" not in response.text


async def test_given_body_over_one_mib_when_posted_then_413_problem(env):
    payload = issue_comment("x" * (1024 * 1024))
    response = await post_to(new(), github("issue_comment", payload), env=env)
    assert response.status_code == 413
    assert response.json()["type"] == "urn:eventworks:problem:payload-too-large"


async def test_given_get_request_when_sent_then_405_problem(env):
    response = await post_to(new(), body=b"", headers={}, method="GET", env=env)
    assert response.status_code == 405


async def test_given_database_down_when_posted_then_503_with_retry_after(unused_port):
    env = {"DATABASE_URL": f"postgresql://parse_comment@127.0.0.1:{unused_port}/eventworks"}
    response = await post_to(new(), github("issue_comment", issue_comment()), env=env)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert json.loads(response.content)["type"] == "urn:eventworks:problem:unavailable"


async def test_given_started_function_when_probed_then_ready_after_database_opens(env):
    async with served(new(), env) as client:
        assert (await probed_ready(client)).status_code == 200
        assert (await client.get("/health/liveness")).status_code == 200
