"""The one small factory for events in tests, and a way to post them in-process.

`post_to` drives a function instance through func-python's real ASGI
application (the same decode/encode path `kn func` serves), with httpx's ASGI
transport instead of a socket.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from func_python.cloudevent import ASGIApplication

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Event:
    """A CloudEvent as it travels over HTTP in binary mode."""

    headers: Mapping[str, str]
    body: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.attributes["id"]

    def structured(self) -> tuple[dict[str, str], bytes]:
        document: dict[str, Any] = dict(self.attributes)
        document["datacontenttype"] = "application/json"
        document["data"] = json.loads(self.body) if self.body else None
        return {"content-type": "application/cloudevents+json"}, json.dumps(document).encode()


def cloudevent(event_type: str, data: Any, *, id: str | None = None,
               source: str = "/tests/factory", subject: str | None = None,
               **extensions: str) -> Event:
    attributes = {"specversion": "1.0", "id": id or str(uuid.uuid4()), "source": source,
                  "type": event_type, **extensions}
    if subject is not None:
        attributes["subject"] = subject
    headers = {f"ce-{k}": v for k, v in attributes.items()}
    headers["content-type"] = "application/json"
    return Event(headers=headers, body=json.dumps(data).encode(), attributes=attributes)


def golden(name: str) -> dict[str, Any]:
    """A fresh copy of a golden file under tests/data/ (edit it freely)."""
    return copy.deepcopy(json.loads((DATA / name).read_text()))


def issue_comment(body: str = "$USDC:100$", *, action: str = "created",
                  sender_type: str = "User") -> dict[str, Any]:
    """The real issue_comment payload with the given body, action and sender type, as a
    comment of its own (a fresh comment id): parse-comment keeps one bounty per comment."""
    payload = golden("github/issue_comment.created.json")
    payload["comment"]["id"] = uuid.uuid4().int % 10**12
    payload["action"] = action
    payload["comment"]["body"] = body
    payload["sender"]["type"] = sender_type
    payload["comment"]["user"]["type"] = sender_type
    return payload


def github(event_name: str, payload: Mapping[str, Any], *, delivery: str | None = None) -> Event:
    """A webhook as Knative's GitHubSource turns it into a CloudEvent."""
    repo = payload["repository"]["full_name"]
    return cloudevent(f"dev.knative.source.github.{event_name}", payload,
                      id=delivery or str(uuid.uuid4()), source=f"https://github.com/{repo}")


async def post_to(function: Any, event: Event | None = None, *, body: bytes | None = None,
                  headers: Mapping[str, str] | None = None, method: str = "POST",
                  env: Mapping[str, str] | None = None) -> httpx.Response:
    """Start the function with `env`, post one request through func-python, stop it."""
    async with served(function, env) as client:
        return await client.request(method, "/", content=event.body if event else body,
                                    headers=dict(event.headers if event else headers or {}))


async def asgi_call(app: Any, method: str, headers: list[tuple[bytes, bytes]],
                    body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request to an ASGI app by calling it, without an HTTP client (whose request
    building and response parsing would be the caller's cost): (status, headers, body)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": "/", "raw_path": b"/",
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("function.test", 80)}
    request = [{"type": "http.request", "body": body, "more_body": False}]
    status = [0]
    answered: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return request.pop() if request else {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
            answered.extend(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status[0], answered, b"".join(chunks)


class served:  # noqa: N801 - used as `async with served(f, env) as client`
    """A started function behind func-python's ASGI app, as an httpx client."""

    def __init__(self, function: Any, env: Mapping[str, str] | None = None) -> None:
        self.function = function
        self.env = dict(env or {})
        self.app = ASGIApplication(function)

    async def __aenter__(self) -> httpx.AsyncClient:
        self.function.start(self.env)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                        base_url="http://function.test")
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.function.aclose()


async def assert_not_built(function: Any) -> None:
    """A function whose capability has its own issue: events get 501 problem+json saying
    so, and a request that is no CloudEvent still gets the edge's 400."""
    response = await post_to(function, cloudevent("dev.eventworks.anything", {"x": 1}))
    assert response.status_code == 501
    assert response.headers["content-type"] == "application/problem+json"
    assert "not built" in response.json()["detail"]
    response = await post_to(function, body=b"hello", headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["field"] == "content-type"


async def probed_ready(client: httpx.AsyncClient, attempts: int = 100) -> httpx.Response:
    """/health/readiness, asked until it answers 200 (stores open in the background)."""
    import asyncio

    for _ in range(attempts):
        response = await client.get("/health/readiness")
        if response.status_code == 200:
            break
        await asyncio.sleep(0.05)
    return response


def pledge_typed_data(*, bounty_id: str, repository: str, issue_number: int,
                      denomination: str, amount_base_units: Any, chain_id: int,
                      name: str = "eventworks bounty", version: str = "1") -> dict[str, Any]:
    """A bounty pledge as the signing page has a wallet sign it (eth_signTypedData_v4): the
    typed data verify-tx checks (functions/verify-tx/function/pledge.py)."""
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"},
                             {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}],
            "Pledge": [{"name": "bountyId", "type": "string"},
                       {"name": "repository", "type": "string"},
                       {"name": "issueNumber", "type": "uint256"},
                       {"name": "denomination", "type": "string"},
                       {"name": "amountBaseUnits", "type": "uint256"}]},
        "primaryType": "Pledge",
        "domain": {"name": name, "version": version, "chainId": chain_id},
        "message": {"bountyId": bounty_id, "repository": repository,
                    "issueNumber": issue_number, "denomination": denomination,
                    "amountBaseUnits": amount_base_units},
    }


def identity_link(**changes: Any) -> dict[str, Any]:
    """The signing page's `identity.link` as it posts it (structured mode), signed by a
    test key; `changes` replace or add top-level members."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    message = f"a message {uuid.uuid4()}"
    signed = Account.from_key("0x" + "4e" * 32).sign_message(encode_defunct(text=message))
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/eventworks/signing-page",
            "type": "dev.eventworks.identity.link", "datacontenttype": "application/json",
            "data": {"message": message, "signature": "0x" + bytes(signed.signature).hex()},
            **changes}
