"""The signing page's server in-process (the gateway of broker/gateway.py that
stack/signing_page.py serves, with no token settings), forwarding
to the running stack's real broker: it forwards only what the page makes, and serves
only the page's own files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest

from broker.gateway import SOURCE, Gateway
from stack import services
from tests.factory import identity_link
from tests.tansu import only, stored

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
TOPIC = f"knative-broker-{services.BROKER_NAMESPACE}-{services.BROKER_NAME}"
STRUCTURED = {"content-type": "application/cloudevents+json"}


async def client_for(broker_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = Gateway(broker_url, ROOT / "signing-page")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://page.test") as client:
        yield client
    await app.close()


@pytest.fixture
async def page(stack_env: Mapping[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(stack_env["BROKER_URL"]):
        yield client


async def test_given_an_identity_link_when_posted_then_the_broker_stores_it(stack_env, page):
    event = identity_link()

    answer = await page.post("/events", content=json.dumps(event), headers=STRUCTURED)

    assert answer.status_code == 202
    record = only(stack_env["KAFKA_BOOTSTRAP_SERVERS"], event["id"], TOPIC)
    assert record.headers["ce_source"] == SOURCE.encode()
    assert json.loads(record.value) == event["data"]


@pytest.mark.parametrize(("changes", "field"), [
    ({"type": "dev.eventworks.tx.signed"}, "type"),
    ({"source": "/eventworks/somewhere-else"}, "source"),
    ({"data": {"message": "hi", "signature": "0x1234"}}, "data.signature"),
    ({"data": {"signature": "0x" + "00" * 65}}, "data.message"),
])
async def test_given_an_event_the_page_does_not_make_when_posted_then_400_and_nothing_stored(
        stack_env, page, changes, field):
    event = identity_link(**changes)

    answer = await page.post("/events", content=json.dumps(event), headers=STRUCTURED)

    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field
    assert stored(stack_env["KAFKA_BOOTSTRAP_SERVERS"], event["id"], TOPIC) == []


async def test_given_a_binary_mode_event_when_posted_then_400_naming_the_content_type(page):
    event = identity_link()
    headers = {"content-type": "application/json", "ce-specversion": "1.0",
               "ce-id": event["id"], "ce-source": SOURCE, "ce-type": event["type"]}

    answer = await page.post("/events", content=json.dumps(event["data"]), headers=headers)

    assert answer.status_code == 400
    assert answer.json()["field"] == "content-type"


async def test_given_the_broker_down_when_an_event_is_posted_then_503(unused_port):
    async for page in client_for(f"http://127.0.0.1:{unused_port}/eventworks/default"):
        answer = await page.post("/events", content=json.dumps(identity_link()),
                                 headers=STRUCTURED)

        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["type"] == "urn:eventworks:problem:unavailable"


async def test_given_an_event_over_the_size_limit_when_posted_then_413_as_at_the_broker(
        unused_port):
    # Its own table of statuses once made this a 400 (PayloadTooLarge is an InvalidEvent):
    # errors become statuses in eventing/edge.py only (docs/bad-input.md).
    async for page in client_for(f"http://127.0.0.1:{unused_port}/eventworks/default"):
        event = identity_link()
        event["data"]["message"] = "x" * (2 * 1024 * 1024)
        answer = await page.post("/events", content=json.dumps(event), headers=STRUCTURED)

        assert answer.status_code == 413
        assert answer.json()["type"] == "urn:eventworks:problem:payload-too-large"


async def test_given_the_page_when_read_then_its_files_come_with_a_strict_policy(page):
    index = await page.get("/")
    script = await page.get("/signing.js")

    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert index.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize("path", ["/../stack/services.py", "/%2e%2e/conftest.py",
                                  "/.hidden.js", "/missing.html", "/README.md"])
async def test_given_a_path_outside_the_page_when_read_then_404(page, path):
    answer = await page.get(path)

    assert answer.status_code == 404


async def test_given_a_post_to_a_file_when_sent_then_405(page):
    answer = await page.post("/index.html", content=b"x")

    assert answer.status_code == 405


async def test_given_a_get_of_events_when_sent_then_405(page):
    answer = await page.get("/events")

    assert answer.status_code == 405
    assert answer.json()["field"] == "method"
