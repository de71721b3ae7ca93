"""The gateway, the public edge of a cluster (gateway/, broker/gateway.py).

Three tiers: what an edge admits, on plain values (broker/admission.py); the gateway
function in-process through func-python's HTTP middleware, posting to a real HTTP
receiver that stands where the Knative Broker's ingress would; and the gateway in front
of the running local stack's real broker ingress, whose Kafka topic is read back."""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.v1.event import CloudEvent
from func_python.http import ASGIApplication

from broker import admission, webhook
from broker.gateway import SOURCE
from eventing import auth, oidc
from stack import services
from tests.factory import DATA, identity_link
from tests.subscriber import Answer, Subscriber
from tests.tansu import only
from tests.test_functions_layout import pins

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = f"gateway-test-secret-{uuid.uuid4()}"
WEBHOOK_SECRET = f"gateway-webhook-secret-{uuid.uuid4()}"
STRUCTURED = {"content-type": "application/cloudevents+json"}
TASK_CREATE = "dev.eventworks.todo.task.create"
TOPIC = f"knative-broker-{services.BROKER_NAMESPACE}-{services.BROKER_NAME}"


def _gateway_function() -> Any:
    """The staged package's `new`, as func's scaffolding imports it (`from function
    import new`), loaded from gateway/ without putting it on sys.path for good."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "gateway_function", ROOT / "gateway" / "function" / "__init__.py",
        submodule_search_locations=[str(ROOT / "gateway" / "function")])
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gateway_function"] = module
    spec.loader.exec_module(module)
    return module.new()


def command(**changes: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/clients/cli",
            "type": TASK_CREATE, "datacontenttype": "application/json",
            "data": {"list_id": "l-1", "title": "write the docs"}, **changes}


def bearer(user: str = "alice", role: auth.Role = "user") -> dict[str, str]:
    return {"authorization": f"Bearer {auth.sign(JWT_SECRET, user, role)}"}


def signed_webhook(body: bytes, *, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"content-type": "application/json", "x-github-event": "issue_comment",
            "x-github-delivery": str(uuid.uuid4()),
            "x-hub-signature-256": webhook.sign(secret, body)}


# -- tier 1: what an edge admits ------------------------------------------------------------

def test_given_a_forged_auth_context_when_admitted_for_a_verified_user_then_only_the_edges_is_kept():  # noqa: E501
    event = CloudEvent({"id": "1", "source": "/x", "type": TASK_CREATE, "authtype": "app_user",
                        "authid": "mallory", "authrole": "admin", "authclaims": "{}"}, None)

    admitted = admission.admit(event, b"", binary=True,
                               context=auth.Identity("alice", "user").context())

    attributes = dict(admitted.attributes)
    assert (attributes["authtype"], attributes["authid"], attributes["authrole"]) == (
        "app_user", "alice", "user")
    assert "authclaims" not in attributes


def test_given_a_forged_auth_context_when_admitted_without_a_token_then_it_is_unauthenticated():
    event = CloudEvent({"id": "1", "source": "/x", "type": TASK_CREATE, "authid": "mallory"},
                       None)

    admitted = admission.admit(event, b"", binary=True, context=auth.UNAUTHENTICATED_CONTEXT)

    assert dict(admitted.attributes) == {"specversion": "1.0", "id": "1", "source": "/x",
                                         "type": TASK_CREATE, "authtype": "unauthenticated",
                                         "time": dict(admitted.attributes)["time"]}


def test_given_an_admitted_event_when_spelled_for_http_then_ce_headers_and_its_content_type():
    event = CloudEvent({"id": "7", "source": "/x", "type": "t", "datacontenttype":
                        "application/json", "partitionkey": "k"}, {"a": 1})

    admitted = admission.admit(event, b'{"a": 1}', binary=False, sent_time=False)

    assert admitted.http_headers() == {
        "ce-specversion": "1.0", "ce-id": "7", "ce-source": "/x", "ce-type": "t",
        "content-type": "application/json", "ce-partitionkey": "k"}
    assert (admitted.value, admitted.key) == (b'{"a":1}', b"k")


def test_given_a_mounted_oidc_token_when_read_then_it_is_the_bearer_and_absent_none(tmp_path):
    token = tmp_path / "token"
    token.write_text("eyJ.sinkbinding.token\n")

    assert oidc.authorization(token) == {"authorization": "Bearer eyJ.sinkbinding.token"}
    assert oidc.authorization(tmp_path / "missing") == {}


def test_given_the_gateway_pyproject_then_its_pins_agree_with_requirements():
    project = tomllib.loads((ROOT / "gateway" / "pyproject.toml").read_text())["project"]
    root = pins((ROOT / "requirements.txt").read_text().splitlines())

    assert project["name"] == "function"
    assert {name: root.get(name) for name in pins(project["dependencies"])} == pins(
        project["dependencies"])


# -- tier 2: the function in-process, a real HTTP receiver as the Broker ----------------------

@pytest.fixture
def broker() -> Iterator[Subscriber]:
    receiver = Subscriber()
    yield receiver
    receiver.close()


def env_for(sink: str, **more: str) -> dict[str, str]:
    return {"K_SINK": sink, "JWT_SECRET": JWT_SECRET, "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SIGNING_PAGE_DIR": str(ROOT / "signing-page"),
            "OIDC_TOKEN_FILE": str(ROOT / ".no-oidc-token"), **more}


async def gateway_client(env: Mapping[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    function = _gateway_function()
    function.start(dict(env))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ASGIApplication(function)),
                                 base_url="http://gateway.test") as client:
        yield client
    await function.gateway.close()


@pytest.fixture
async def gateway(broker: Subscriber) -> AsyncIterator[httpx.AsyncClient]:
    async for client in gateway_client(env_for(broker.url)):
        yield client


async def test_given_a_verified_token_when_a_command_is_posted_then_the_broker_gets_its_user(
        gateway, broker):
    event = command()

    answer = await gateway.post("/events", content=json.dumps(event),
                                headers={**STRUCTURED, **bearer("alice", "manager")})

    assert answer.status_code == 202
    [forwarded] = broker.of(event["id"])
    assert (forwarded.headers["ce-authtype"], forwarded.headers["ce-authid"],
            forwarded.headers["ce-authrole"]) == ("app_user", "alice", "manager")
    assert forwarded.headers["ce-type"] == TASK_CREATE
    assert json.loads(forwarded.body) == event["data"]
    # The client's token is the gateway's to verify, never passed on.
    assert "authorization" not in forwarded.headers


async def test_given_a_forged_authid_with_a_token_when_posted_binary_then_the_tokens_user_wins(
        gateway, broker):
    event = command()
    headers = {"ce-specversion": "1.0", "ce-id": event["id"], "ce-source": "/clients/cli",
               "ce-type": TASK_CREATE, "ce-authid": "mallory", "ce-authrole": "admin",
               "content-type": "application/json", **bearer("alice")}

    answer = await gateway.post("/events", content=json.dumps(event["data"]), headers=headers)

    assert answer.status_code == 202
    [forwarded] = broker.of(event["id"])
    assert (forwarded.headers["ce-authid"], forwarded.headers["ce-authrole"]) == ("alice", "user")
    assert forwarded.body == json.dumps(event["data"]).encode()
    assert "ce-time" not in forwarded.headers


@pytest.mark.parametrize("token", ["not-a-jwt", auth.sign("another-secret-" + "x" * 32, "alice"),
                                   auth.sign(JWT_SECRET, "alice", ttl_seconds=-3600)])
async def test_given_a_bad_token_when_a_command_is_posted_then_401_problem_and_nothing_forwarded(
        gateway, broker, token):
    event = command()

    answer = await gateway.post("/events", content=json.dumps(event),
                                headers={**STRUCTURED, "authorization": f"Bearer {token}"})

    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.json()["field"] == "header authorization"
    assert broker.of(event["id"]) == []


async def test_given_no_token_when_a_command_is_posted_with_a_forged_authid_then_401_and_nothing_forwarded(  # noqa: E501
        gateway, broker):
    event = command(authtype="app_user", authid="alice")

    answer = await gateway.post("/events", content=json.dumps(event), headers=STRUCTURED)

    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert broker.of(event["id"]) == []


async def test_given_the_pages_identity_link_without_a_token_when_posted_then_forwarded_unauthenticated(  # noqa: E501
        gateway, broker):
    event = identity_link(authid="alice")

    answer = await gateway.post("/events", content=json.dumps(event), headers=STRUCTURED)

    assert answer.status_code == 202
    [forwarded] = broker.of(event["id"])
    assert forwarded.headers["ce-authtype"] == "unauthenticated"
    assert "ce-authid" not in forwarded.headers
    assert forwarded.headers["ce-source"] == SOURCE
    assert json.loads(forwarded.body) == event["data"]


@pytest.mark.parametrize(("changes", "field"), [
    ({"source": "/eventworks/somewhere-else"}, "source"),
    ({"data": {"message": "hi", "signature": "0x1234"}}, "data.signature"),
])
async def test_given_a_page_type_the_page_did_not_make_when_posted_then_400_naming_the_field(
        gateway, broker, changes, field):
    event = identity_link(**changes)

    answer = await gateway.post("/events", content=json.dumps(event), headers=STRUCTURED)

    assert answer.status_code == 400
    assert answer.json()["field"] == field
    assert broker.of(event["id"]) == []


async def test_given_a_signed_webhook_when_posted_then_the_broker_gets_githubsources_event(
        gateway, broker):
    body = (DATA / "github" / "issue_comment.created.json").read_bytes()
    headers = signed_webhook(body)

    answer = await gateway.post("/github", content=body, headers=headers)

    assert answer.status_code == 202
    [forwarded] = broker.of(headers["x-github-delivery"])
    assert forwarded.headers["ce-type"] == "dev.knative.source.github.issue_comment"
    assert forwarded.headers["ce-source"].startswith("https://github.com/")
    assert forwarded.body == body
    assert "ce-authtype" not in forwarded.headers


@pytest.mark.parametrize("secret", [f"not-{WEBHOOK_SECRET}", WEBHOOK_SECRET[:-1]])
async def test_given_a_webhook_signed_with_another_secret_when_posted_then_401_and_nothing_forwarded(  # noqa: E501
        gateway, broker, secret):
    body = (DATA / "github" / "issue_comment.created.json").read_bytes()
    headers = signed_webhook(body, secret=secret)

    answer = await gateway.post("/github", content=body, headers=headers)

    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert broker.of(headers["x-github-delivery"]) == []


@pytest.mark.parametrize(("status", "expected"), [(500, 503), (403, 503), (429, 503),
                                                  (400, 400)])
async def test_given_the_broker_refusing_when_a_command_is_posted_then_its_fault_passes_and_the_rest_is_503(  # noqa: E501
        status, expected):
    refusing = Subscriber(lambda request, seen: Answer(
        status, {"content-type": "application/problem+json"}, b'{"status": %d}' % status))
    try:
        async for gateway in gateway_client(env_for(refusing.url)):
            answer = await gateway.post("/events", content=json.dumps(command()),
                                        headers={**STRUCTURED, **bearer()})

            assert answer.status_code == expected
            assert answer.headers["content-type"] == "application/problem+json"
            if expected == 503:
                assert answer.headers["retry-after"] == "1"
    finally:
        refusing.close()


async def test_given_the_broker_down_when_a_command_is_posted_then_503_retryable(unused_port):
    async for gateway in gateway_client(env_for(f"http://127.0.0.1:{unused_port}/")):
        answer = await gateway.post("/events", content=json.dumps(command()),
                                    headers={**STRUCTURED, **bearer()})

        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"


async def test_given_a_mounted_oidc_token_when_forwarding_then_the_broker_gets_the_bindings_token(
        broker, tmp_path):
    token = tmp_path / "token"
    token.write_text("sinkbinding-oidc-token")
    event = command()
    async for gateway in gateway_client(env_for(broker.url, OIDC_TOKEN_FILE=str(token))):
        answer = await gateway.post("/events", content=json.dumps(event),
                                    headers={**STRUCTURED, **bearer()})

        assert answer.status_code == 202
    [forwarded] = broker.of(event["id"])
    assert forwarded.headers["authorization"] == "Bearer sinkbinding-oidc-token"


async def test_given_the_gateway_when_read_then_the_page_and_health_answer(gateway):
    page = await gateway.get("/")
    live = await gateway.get("/health/liveness")
    ready = await gateway.get("/health/readiness")

    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (live.status_code, ready.status_code) == (200, 200)


async def test_given_no_k_sink_when_the_gateway_starts_then_it_refuses():
    function = _gateway_function()

    with pytest.raises(RuntimeError, match="settings are invalid"):
        function.start({"JWT_SECRET": JWT_SECRET})


# -- tier 3: in front of the running stack's real broker ingress ------------------------------

@pytest.mark.stack
async def test_given_the_stacks_broker_as_sink_when_the_page_posts_then_kafka_stores_it_unauthenticated(  # noqa: E501
        stack_env):
    event = identity_link(authid="alice")
    async for gateway in gateway_client(env_for(stack_env["BROKER_URL"])):
        answer = await gateway.post("/events", content=json.dumps(event), headers=STRUCTURED)

        assert answer.status_code == 202
    record = only(stack_env["KAFKA_BOOTSTRAP_SERVERS"], event["id"], TOPIC)
    assert record.headers["ce_authtype"] == b"unauthenticated"
    assert "ce_authid" not in record.headers
    assert json.loads(record.value) == event["data"]


@pytest.mark.stack
async def test_given_the_stacks_broker_as_sink_when_a_signed_webhook_arrives_then_kafka_stores_the_github_event(  # noqa: E501
        stack_env):
    body = (DATA / "github" / "issue_comment.created.json").read_bytes()
    headers = signed_webhook(body)
    async for gateway in gateway_client(env_for(stack_env["BROKER_URL"])):
        answer = await gateway.post("/github", content=body, headers=headers)

        assert answer.status_code == 202
    record = only(stack_env["KAFKA_BOOTSTRAP_SERVERS"], headers["x-github-delivery"], TOPIC)
    assert record.headers["ce_type"] == b"dev.knative.source.github.issue_comment"
    assert record.value == body
