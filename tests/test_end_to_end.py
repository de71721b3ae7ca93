"""End to end through the local stack: a signed GitHub webhook in at GITHUB_WEBHOOK_URL,
through the broker topic and parse-comment's Trigger, the reply back in the topic."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid

import httpx
import pytest

from tests.factory import issue_comment
from tests.tansu import records, wait_until

pytestmark = pytest.mark.stack

TOPIC = "knative-broker-eventworks-default"


def test_given_signed_comment_webhook_when_posted_then_bounty_requested_lands_in_the_topic(
        stack_env):
    payload = issue_comment("Worth $USDC:42$")
    payload["comment"]["id"] = random.randrange(10**9, 10**10)  # ours alone
    body = json.dumps(payload).encode()
    signature = hmac.new(stack_env["GITHUB_WEBHOOK_SECRET"].encode(), body,
                         hashlib.sha256).hexdigest()

    response = httpx.post(stack_env["GITHUB_WEBHOOK_URL"], content=body, headers={
        "content-type": "application/json", "x-github-event": "issue_comment",
        "x-github-delivery": str(uuid.uuid4()), "x-hub-signature-256": f"sha256={signature}"})
    assert response.status_code == 202

    def replies() -> list[dict[str, object]]:
        found = records(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC, lambda r: r.headers.get(
            "ce_type") == b"dev.eventworks.bounty.requested")
        data = [json.loads(r.value) for r in found]
        return [d for d in data if d["comment_id"] == payload["comment"]["id"]]

    wait_until(replies, "the bounty.requested reply in the broker topic", timeout=20)
    (reply,) = replies()
    assert reply["amount_base_units"] == "42000000"
    assert reply["denomination"] == "USDC"


def test_given_badly_signed_webhook_when_posted_then_401_and_nothing_reaches_the_topic(
        stack_env):
    delivery = str(uuid.uuid4())
    response = httpx.post(stack_env["GITHUB_WEBHOOK_URL"], content=b'{"zen": "x"}', headers={
        "content-type": "application/json", "x-github-event": "ping",
        "x-github-delivery": delivery, "x-hub-signature-256": "sha256=" + "0" * 64})
    assert response.status_code == 401
    assert records(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC,
                   lambda r: r.headers.get("ce_id") == delivery.encode()) == []


def test_given_event_posted_to_the_broker_when_tailed_then_it_is_a_json_line(stack_env):
    import io

    from broker.tail import main as tail
    from tests.factory import cloudevent

    event = cloudevent("dev.tests.tailed", {"hello": "tail"}, partitionkey="k1")
    assert httpx.post(stack_env["BROKER_URL"], content=event.body,
                      headers=dict(event.headers)).status_code == 202
    out = io.StringIO()
    count = len(records(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC, lambda r: True))

    assert tail(["--from-start"], stack_env, out, limit=count) == 0

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    (ours,) = [line for line in lines if line["id"] == event.id]
    assert ours["type"] == "dev.tests.tailed"
    assert ours["data"] == {"hello": "tail"}
    assert ours["kafka"]["key"] == "k1"
