"""The broker's GitHub webhook (`POST /github`, the local GitHubSource).

Pure parts (signature, headers, attributes) on plain values; the route in-process
for what needs no Kafka; and the real `python -m broker` against a real tansu for
what must reach (or must not reach) the topic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker import webhook
from broker.ingress import Ingress, IngressSettings
from eventing.errors import InvalidEvent, Unauthorized
from tests.tansu import Ingress as RunningBroker
from tests.tansu import only, start_ingress, stored

PAYLOAD_FILE = Path(__file__).parent / "data" / "github" / "issue_comment.created.json"
VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
SECRET = f"test-webhook-secret-{uuid.uuid4()}"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def webhook_headers(body: bytes, *, event: str = "issue_comment", delivery: str | None = None,
                    secret: str = SECRET) -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": webhook.sign(secret, body),
            "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/tests"}


def delivery(event: str = "issue_comment", delivery_id: str = "d-1") -> webhook.Delivery:
    return webhook.Delivery(event=event, delivery_id=delivery_id, signature=b"\0" * 32)


# -- the signature, pure ------------------------------------------------------------------

def test_given_githubs_test_vector_when_signed_then_the_documented_signature() -> None:
    assert webhook.sign(VECTOR_SECRET, VECTOR_BODY) == VECTOR_SIGNATURE
    assert webhook.sign(VECTOR_SECRET.encode(), VECTOR_BODY) == VECTOR_SIGNATURE


def test_given_githubs_test_vector_when_verified_then_it_matches() -> None:
    signature = webhook.parse_signature(VECTOR_SIGNATURE)

    assert webhook.verify(VECTOR_SECRET, VECTOR_BODY, signature)


def test_given_upper_case_hex_when_parsed_then_the_same_digest() -> None:
    assert webhook.parse_signature(VECTOR_SIGNATURE.upper().replace("SHA256=", "sha256=")) == \
        webhook.parse_signature(VECTOR_SIGNATURE)


@pytest.mark.parametrize(("secret", "body"), [
    (VECTOR_SECRET, b"Hello, World?"),          # tampered body
    (VECTOR_SECRET, b"Hello, World! "),         # one byte more
    ("It's a secret to everybody", VECTOR_BODY),  # wrong secret
    ("", VECTOR_BODY),                           # no secret
])
def test_given_a_tampered_body_or_wrong_secret_when_verified_then_it_fails(
        secret: str, body: bytes) -> None:
    signature = webhook.parse_signature(VECTOR_SIGNATURE)

    assert not webhook.verify(secret, body, signature)
    with pytest.raises(Unauthorized) as raised:
        webhook.authenticate(secret, body, webhook.Delivery("ping", "d", signature))
    # the answer never says which part was wrong, nor shows the secret or a digest
    assert "body" in raised.value.detail  # "does not match the body": the same every time
    assert VECTOR_SIGNATURE[7:] not in raised.value.detail
    assert VECTOR_SECRET not in raised.value.detail


def test_given_a_delivery_when_printed_then_the_signature_is_not_shown() -> None:
    parsed = webhook.parse_headers({"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-1",
                                    "X-Hub-Signature-256": VECTOR_SIGNATURE})

    assert VECTOR_SIGNATURE[7:] not in repr(parsed)
    assert parsed.signature == bytes.fromhex(VECTOR_SIGNATURE[7:])


# -- headers and body, pure ----------------------------------------------------------------

@pytest.mark.parametrize("missing", ["X-GitHub-Event", "X-GitHub-Delivery", "X-Hub-Signature-256"])
def test_given_a_missing_github_header_when_parsed_then_the_error_names_it(missing: str) -> None:
    headers = {k.lower(): v for k, v in webhook_headers(VECTOR_BODY).items()
               if k != missing}

    with pytest.raises(InvalidEvent) as raised:
        webhook.parse_headers(headers)

    assert raised.value.field == f"header {missing}"
    assert missing in raised.value.detail


def test_given_a_blank_github_header_when_parsed_then_it_counts_as_missing() -> None:
    headers = {**webhook_headers(VECTOR_BODY), "X-GitHub-Delivery": "  "}

    with pytest.raises(InvalidEvent) as raised:
        webhook.parse_headers(headers)

    assert raised.value.field == "header X-GitHub-Delivery"


@pytest.mark.parametrize(("header", "value"), [
    ("X-Hub-Signature-256", "sha1=" + "0" * 40),
    ("X-Hub-Signature-256", "sha256=" + "0" * 63),
    ("X-Hub-Signature-256", "sha256=" + "g" * 64),
    ("X-GitHub-Event", "Issue Comment"),
    ("X-GitHub-Delivery", "has space"),
    ("X-GitHub-Delivery", "x" * 129),
])
def test_given_a_malformed_github_header_when_parsed_then_the_error_names_it(
        header: str, value: str) -> None:
    headers = {**webhook_headers(VECTOR_BODY), header: value}

    with pytest.raises(InvalidEvent) as raised:
        webhook.parse_headers(headers)

    assert raised.value.field == f"header {header}"


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"{not json", b""])
def test_given_a_body_that_is_no_json_object_when_parsed_then_the_error_names_body(
        body: bytes) -> None:
    with pytest.raises(InvalidEvent) as raised:
        webhook.parse_payload(body, "application/json")

    assert raised.value.field == "body"


def test_given_a_form_encoded_webhook_when_parsed_then_the_error_names_the_content_type() -> None:
    with pytest.raises(InvalidEvent) as raised:
        webhook.parse_payload(b"payload=%7B%7D", "application/x-www-form-urlencoded")

    assert raised.value.field == "header Content-Type"


# -- attributes, pure ---------------------------------------------------------------------

def test_given_the_real_issue_comment_when_mapped_then_githubsource_attributes() -> None:
    payload = json.loads(PAYLOAD_FILE.read_bytes())

    attributes = webhook.attributes(delivery("issue_comment", "72d3162e"), payload, NOW)

    assert attributes == {
        "specversion": "1.0", "id": "72d3162e",
        "type": "dev.knative.source.github.issue_comment",
        "source": "https://github.com/Codertocat/Hello-World",
        "subject": "1#issuecomment-492700400", "datacontenttype": "application/json", "time": NOW}


def test_given_a_pull_request_when_mapped_then_the_subject_is_its_number() -> None:
    payload = {"action": "opened", "number": 7, "pull_request": {"number": 7},
               "repository": {"full_name": "octo-org/app"}, "sender": {"login": "octocat"}}

    attributes = webhook.attributes(delivery("pull_request"), payload, NOW)

    assert attributes["subject"] == "7"
    assert attributes["source"] == "https://github.com/octo-org/app"


def test_given_a_push_when_mapped_then_there_is_no_subject() -> None:
    payload = {"ref": "refs/heads/main", "repository": {"full_name": "octo-org/app"}}

    assert "subject" not in webhook.attributes(delivery("push"), payload, NOW)


def test_given_an_org_ping_without_repository_when_mapped_then_the_source_is_the_org() -> None:
    payload = {"zen": "Keep it logically awesome.", "hook_id": 1,
               "organization": {"login": "octo-org"}, "sender": {"login": "octocat"}}

    attributes = webhook.attributes(delivery("ping"), payload, NOW)

    assert attributes["source"] == "https://github.com/octo-org"
    assert attributes["type"] == "dev.knative.source.github.ping"


def test_given_an_installation_without_repository_when_mapped_then_the_source_is_sender() -> None:
    payload = {"action": "created", "installation": {"id": 5},
               "sender": {"login": "dependabot[bot]"}}

    attributes = webhook.attributes(delivery("installation"), payload, NOW)

    assert attributes["source"] == "https://github.com/dependabot%5Bbot%5D"


def test_given_a_payload_naming_nobody_when_mapped_then_the_error_names_the_repository() -> None:
    with pytest.raises(InvalidEvent) as raised:
        webhook.attributes(delivery("meta"), {"hook_id": 1}, NOW)

    assert raised.value.field == "repository.full_name"


# -- the route in-process (no Kafka needed) ----------------------------------------------

def settings(**env: str) -> IngressSettings:
    return IngressSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", **env})


@pytest.fixture
async def unconnected() -> AsyncIterator[httpx.AsyncClient]:
    """An ingress with the webhook secret set that never connected to Kafka."""
    app: Any = Ingress(settings(GITHUB_WEBHOOK_SECRET=SECRET, MAX_EVENT_BYTES="65536"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://broker.test") as client:
        yield client


async def test_given_no_webhook_secret_when_a_webhook_arrives_then_503_problem() -> None:
    app: Any = Ingress(settings(GITHUB_WEBHOOK_SECRET=""))
    body = PAYLOAD_FILE.read_bytes()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://broker.test") as client:
        response = await client.post("/github", content=body, headers=webhook_headers(body))

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    assert "webhook secret not configured" in response.json()["detail"]


async def test_given_a_get_when_sent_to_the_webhook_then_405_with_allow(
        unconnected: httpx.AsyncClient) -> None:
    response = await unconnected.get("/github")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_given_a_body_over_the_limit_when_posted_then_413(
        unconnected: httpx.AsyncClient) -> None:
    body = json.dumps({"padding": "x" * 70_000}).encode()

    response = await unconnected.post("/github", content=body, headers=webhook_headers(body))

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_given_a_signed_body_that_is_no_object_when_posted_then_400_naming_body(
        unconnected: httpx.AsyncClient) -> None:
    body = b"[1, 2, 3]"

    response = await unconnected.post("/github", content=body, headers=webhook_headers(body))

    assert response.status_code == 400
    assert response.json()["field"] == "body"


async def test_given_an_unsigned_non_json_body_when_posted_then_401_before_parsing(
        unconnected: httpx.AsyncClient) -> None:
    body = b"not json at all"
    headers = {**webhook_headers(body), "X-Hub-Signature-256": "sha256=" + "0" * 64}

    response = await unconnected.post("/github", content=body, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_given_kafka_not_connected_when_a_signed_webhook_arrives_then_503_retry_after(
        unconnected: httpx.AsyncClient) -> None:
    body = PAYLOAD_FILE.read_bytes()

    response = await unconnected.post("/github", content=body, headers=webhook_headers(body))

    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1


# -- through the real process and a real Kafka -------------------------------------------

@pytest.fixture(scope="module")
def broker(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    with pytest.MonkeyPatch.context() as patch:  # start_ingress passes os.environ on
        patch.setenv("GITHUB_WEBHOOK_SECRET", SECRET)
        running = start_ingress(kafka, tmp_path_factory.mktemp("broker") / "broker.log")
    try:
        yield running
    finally:
        running.stop()


def test_given_a_signed_real_issue_comment_when_posted_then_202_and_the_topic_holds_it(
        kafka: str, broker: RunningBroker) -> None:
    body = PAYLOAD_FILE.read_bytes()
    delivery_id = str(uuid.uuid4())

    response = httpx.post(f"{broker.base}/github", content=body,
                          headers=webhook_headers(body, delivery=delivery_id))

    assert response.status_code == 202, response.text
    record = only(kafka, delivery_id)
    assert record.value == body  # the bytes GitHub signed, unchanged
    assert record.headers["ce_type"] == b"dev.knative.source.github.issue_comment"
    assert record.headers["ce_source"] == b"https://github.com/Codertocat/Hello-World"
    assert record.headers["ce_id"] == delivery_id.encode()
    assert record.headers["ce_subject"] == b"1#issuecomment-492700400"
    assert record.headers["ce_specversion"] == b"1.0"
    assert record.headers["content-type"] == b"application/json"
    stamped = datetime.fromisoformat(record.headers["ce_time"].decode())
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60


def test_given_a_bad_signature_when_posted_then_401_and_nothing_reaches_the_topic(
        kafka: str, broker: RunningBroker) -> None:
    body = PAYLOAD_FILE.read_bytes()
    delivery_id = str(uuid.uuid4())
    headers = webhook_headers(body, delivery=delivery_id)
    tampered = body.replace(b'"Codertocat/Hello-World"', b'"Mallory/Hello-World"')
    assert tampered != body

    response = httpx.post(f"{broker.base}/github", content=tampered, headers=headers)

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 401
    assert SECRET not in response.text
    assert headers["X-Hub-Signature-256"][7:] not in response.text
    assert stored(kafka, delivery_id) == []


def test_given_a_wrong_secret_when_posted_then_401(broker: RunningBroker) -> None:
    body = PAYLOAD_FILE.read_bytes()

    response = httpx.post(f"{broker.base}/github", content=body,
                          headers=webhook_headers(body, secret="not-the-secret"))

    assert response.status_code == 401


def test_given_no_delivery_header_when_posted_then_400_naming_it(
        kafka: str, broker: RunningBroker) -> None:
    body = PAYLOAD_FILE.read_bytes()
    headers = {k: v for k, v in webhook_headers(body).items() if k != "X-GitHub-Delivery"}

    response = httpx.post(f"{broker.base}/github", content=body, headers=headers)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == "header X-GitHub-Delivery"


def test_given_webhooks_were_handled_when_the_log_is_read_then_no_secret_or_signature(
        broker: RunningBroker) -> None:
    body = PAYLOAD_FILE.read_bytes()
    good = webhook_headers(body)
    bad = {**good, "X-Hub-Signature-256": "sha256=" + "ab" * 32}
    assert httpx.post(f"{broker.base}/github", content=body, headers=good).status_code == 202
    assert httpx.post(f"{broker.base}/github", content=body, headers=bad).status_code == 401

    text = broker.log.read_text()

    assert good["X-GitHub-Delivery"] in text  # the log does speak of the deliveries…
    for secret in (SECRET, good["X-Hub-Signature-256"][7:], "ab" * 32):
        assert secret not in text  # …but never of the secret or a signature
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "github webhook accepted" for line in lines)
