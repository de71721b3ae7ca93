"""The GitHub REST API stand-in, driven in-process through its ASGI app.

The PyGithub-shaped test below sends exactly the requests PyGithub 2.x sends for
`get_repo` → `get_issue` → `create_comment` → `edit` → `get_comments` (following the
absolute `url` fields of the answers, as PyGithub does) and checks the fields it reads;
the tests at the end drive PyGithub itself over HTTP, with a token and as a GitHub App.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from stack.github_api import GitHubStandIn

ROOT = Path(__file__).resolve().parent.parent
BASE = "http://127.0.0.1:9999"  # PyGithub checks returned URLs against its base URL's host:port
AUTH = {"Authorization": "token ghs_local_stand_in_token"}
PYGITHUB = {"User-Agent": "PyGithub/Python", "Content-Type": "application/json"}


@pytest.fixture
async def github() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=GitHubStandIn()),
                                 base_url=BASE) as client:
        yield client


async def recorded(github: httpx.AsyncClient, **query: str) -> list[dict[str, object]]:
    response = await github.get("/_stand-in/comments", params=query)
    assert response.status_code == 200
    result: list[dict[str, object]] = response.json()
    return result


def follows_back(url: str, base: str = BASE) -> bool:
    """What PyGithub's Requester asserts before it follows a URL from an answer."""
    ours, theirs = urlparse(base), urlparse(url)
    return (theirs.hostname, theirs.port) == (ours.hostname, ours.port) \
        and theirs.path.startswith(ours.path)


async def test_given_pygithub_requests_when_a_comment_is_created_edited_and_listed_then_github_shapes(  # noqa: E501
        github: httpx.AsyncClient) -> None:
    headers = {**AUTH, **PYGITHUB}
    # Github(base_url=BASE, auth=Auth.Token(...)).get_repo("octo/widgets")
    repo = (await github.get("/repos/octo/widgets", headers=headers)).json()
    assert repo["full_name"] == "octo/widgets"
    assert repo["owner"]["login"] == "octo"
    assert follows_back(repo["url"])
    # repo.get_issue(12) → GET {repo.url}/issues/12
    issue = (await github.get(f"{repo['url']}/issues/12", headers=headers)).json()
    assert (issue["number"], issue["state"]) == (12, "open")
    assert follows_back(issue["url"])

    # issue.create_comment("...") → POST {issue.url}/comments {"body": ...}
    created = await github.post(f"{issue['url']}/comments", headers=headers,
                                json={"body": "Bounty $USDC:100$ registered"})
    assert created.status_code == 201
    comment = created.json()
    assert comment["body"] == "Bounty $USDC:100$ registered"
    assert comment["user"]["login"] == "eventworks[bot]"
    assert comment["user"]["type"] == "Bot"
    assert comment["issue_url"] == issue["url"]
    assert comment["html_url"] == (
        f"https://github.com/octo/widgets/issues/12#issuecomment-{comment['id']}")
    assert follows_back(comment["url"])
    assert comment["created_at"].endswith("Z")
    assert created.headers["location"] == comment["url"]

    # comment.edit("...") → PATCH {comment.url} {"body": ...}
    edited = await github.patch(comment["url"], headers=headers,
                                json={"body": "Bounty $USDC:150$ registered"})
    assert edited.status_code == 200
    assert edited.json()["id"] == comment["id"]
    assert edited.json()["body"] == "Bounty $USDC:150$ registered"

    # issue.get_comments() → GET {issue.url}/comments (PaginatedList)
    listed = await github.get(f"{issue['url']}/comments", headers=headers,
                              params={"per_page": 30})
    assert listed.status_code == 200
    assert [c["body"] for c in listed.json()] == ["Bounty $USDC:150$ registered"]
    assert "link" not in listed.headers  # one page

    # issue.get_comment(id) → GET /repos/octo/widgets/issues/comments/{id}
    single = await github.get(f"/repos/octo/widgets/issues/comments/{comment['id']}")
    assert single.json()["body"] == "Bounty $USDC:150$ registered"

    assert await recorded(github) == [{
        "id": comment["id"], "repository": "octo/widgets", "issue_number": 12,
        "body": "Bounty $USDC:150$ registered", "user": "eventworks[bot]",
        "created_at": comment["created_at"], "updated_at": edited.json()["updated_at"],
        "edits": 1, "history": ["Bounty $USDC:100$ registered"], "deleted": False}]


async def test_given_comments_when_created_then_ids_increase_and_issues_count_them(
        github: httpx.AsyncClient) -> None:
    ids = []
    for number, body in ((1, "a"), (1, "b"), (2, "c")):
        response = await github.post(f"/repos/octo/widgets/issues/{number}/comments",
                                     headers=AUTH, json={"body": body})
        ids.append(response.json()["id"])

    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert (await github.get("/repos/octo/widgets/issues/1")).json()["comments"] == 2
    assert [c["body"] for c in await recorded(github, repository="octo/widgets", issue="1")] \
        == ["a", "b"]


async def test_given_no_authorization_when_writing_then_401_like_github(
        github: httpx.AsyncClient) -> None:
    created = await github.post("/repos/octo/widgets/issues/1/comments", json={"body": "x"})
    bad = await github.post("/repos/octo/widgets/issues/1/comments", json={"body": "x"},
                            headers={"Authorization": "token "})

    assert created.status_code == 401
    assert created.json()["message"] == "Requires authentication"
    assert "documentation_url" in created.json()
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials"
    assert await recorded(github) == []


async def test_given_a_bearer_token_when_writing_then_accepted(
        github: httpx.AsyncClient) -> None:
    response = await github.post("/repos/octo/widgets/issues/1/comments", json={"body": "x"},
                                 headers={"Authorization": "Bearer ghs_installation"})

    assert response.status_code == 201


async def test_given_reads_without_authorization_when_sent_then_answered(
        github: httpx.AsyncClient) -> None:
    assert (await github.get("/repos/octo/widgets")).status_code == 200
    assert (await github.get("/repos/octo/widgets/issues/3/comments")).json() == []


async def test_given_a_bad_comment_body_when_posted_then_400_or_422(
        github: httpx.AsyncClient) -> None:
    not_json = await github.post("/repos/octo/widgets/issues/1/comments", headers=AUTH,
                                 content=b"{nope")
    missing = await github.post("/repos/octo/widgets/issues/1/comments", headers=AUTH,
                                json={"text": "x"})
    too_long = await github.post("/repos/octo/widgets/issues/1/comments", headers=AUTH,
                                 json={"body": "x" * 65537})

    assert not_json.status_code == 400
    assert not_json.json()["message"] == "Problems parsing JSON"
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "body"
    assert too_long.status_code == 422


async def test_given_unknown_routes_or_comments_when_requested_then_404_not_found(
        github: httpx.AsyncClient) -> None:
    for response in (
        await github.get("/nothing/here"),
        await github.get("/repos/octo/widgets/pulls/1"),
        await github.get("/repos/octo/widgets/issues/comments/404"),
        await github.patch("/repos/octo/widgets/issues/comments/404", headers=AUTH,
                           json={"body": "x"}),
    ):
        assert response.status_code == 404
        assert response.json()["message"] == "Not Found"


async def test_given_a_comment_of_another_repository_when_read_then_404(
        github: httpx.AsyncClient) -> None:
    created = (await github.post("/repos/octo/widgets/issues/1/comments", headers=AUTH,
                                 json={"body": "x"})).json()

    response = await github.get(f"/repos/octo/gadgets/issues/comments/{created['id']}")

    assert response.status_code == 404


async def test_given_a_deleted_comment_when_listed_then_gone_but_recorded(
        github: httpx.AsyncClient) -> None:
    created = (await github.post("/repos/octo/widgets/issues/1/comments", headers=AUTH,
                                 json={"body": "x"})).json()

    deleted = await github.delete(created["url"], headers=AUTH)

    assert deleted.status_code == 204
    assert (await github.get(created["url"])).status_code == 404
    assert (await github.get("/repos/octo/widgets/issues/1/comments")).json() == []
    assert (await recorded(github))[0]["deleted"] is True


async def test_given_many_comments_when_listed_by_page_then_link_headers_like_github(
        github: httpx.AsyncClient) -> None:
    for n in range(5):
        await github.post("/repos/octo/widgets/issues/7/comments", headers=AUTH,
                          json={"body": f"c{n}"})

    first = await github.get("/repos/octo/widgets/issues/7/comments", params={"per_page": 2})
    links = httpx.Response(200, headers={"link": first.headers["link"]}).links
    last = await github.get(links["last"]["url"])

    assert [c["body"] for c in first.json()] == ["c0", "c1"]
    assert follows_back(links["next"]["url"])
    assert [c["body"] for c in (await github.get(links["next"]["url"])).json()] == ["c2", "c3"]
    assert [c["body"] for c in last.json()] == ["c4"]
    assert 'rel="prev"' in last.headers["link"]


async def test_given_an_enterprise_style_base_url_when_used_then_urls_keep_the_prefix(
        github: httpx.AsyncClient) -> None:
    base = f"{BASE}/api/v3"
    issue = (await github.get(f"{base}/repos/octo/widgets/issues/1")).json()
    created = await github.post(f"{issue['url']}/comments", headers=AUTH, json={"body": "x"})

    assert created.status_code == 201
    assert created.json()["url"].startswith(f"{base}/repos/octo/widgets/issues/comments/")
    assert follows_back(created.json()["url"], base)


async def test_given_recorded_comments_when_reset_then_none_recorded_and_ids_move_on(
        github: httpx.AsyncClient) -> None:
    first = (await github.post("/repos/octo/widgets/issues/1/comments", headers=AUTH,
                               json={"body": "x"})).json()

    assert (await github.delete("/_stand-in/comments")).status_code == 200

    assert await recorded(github) == []
    assert (await github.get(first["url"])).status_code == 404
    again = (await github.post("/repos/octo/widgets/issues/1/comments", headers=AUTH,
                               json={"body": "y"})).json()
    assert again["id"] > first["id"]


async def test_given_the_stand_in_when_probed_then_live_and_ready(
        github: httpx.AsyncClient) -> None:
    assert (await github.get("/health/liveness")).status_code == 200
    assert (await github.get("/health/readiness")).status_code == 200


def test_given_the_module_when_run_then_it_serves_on_listen_address_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "github-api.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "stack.github_api"], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/readiness",
                             timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the stand-in did not become ready"
            time.sleep(0.05)
        created = httpx.post(f"http://127.0.0.1:{port}/repos/o/r/issues/1/comments",
                             headers=AUTH, json={"body": "hi"})
        assert created.status_code == 201
        assert created.json()["url"].startswith(f"http://127.0.0.1:{port}/repos/o/r/")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
    assert code == 0, log.read_text()


# -- PyGithub itself, over HTTP ------------------------------------------------------------
def _pygithub_round_trip(url: str, auth: object) -> list[str]:
    from github import Github

    client = Github(auth=auth, base_url=url, retry=None, timeout=5,  # type: ignore[arg-type]
                    seconds_between_requests=None, seconds_between_writes=None)
    try:
        issue = client.get_repo("octo/widgets").get_issue(12)
        comment = issue.create_comment("first")
        comment.edit("second")
        assert issue.get_comment(comment.id).body == "second"
        return [c.body for c in issue.get_comments()]
    finally:
        client.close()


async def test_given_pygithub_with_a_token_when_it_comments_then_the_stand_in_records_it() -> None:
    import asyncio

    from github import Auth

    from tests.github_stand_in import github_stand_in

    async with github_stand_in() as served:
        bodies = await asyncio.to_thread(_pygithub_round_trip, served.url,
                                         Auth.Token("ghs_local_stand_in_token"))
        (recorded_comment,) = await served.comments(repository="octo/widgets")
    assert bodies == ["second"]
    assert recorded_comment["history"] == ["first"]


async def test_given_pygithub_as_an_app_when_it_comments_then_an_installation_token_is_issued(
        ) -> None:
    import asyncio

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from github import Auth

    from tests.github_stand_in import github_stand_in

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    auth = Auth.AppAuth(123, pem).get_installation_auth(45)
    async with github_stand_in() as served:
        bodies = await asyncio.to_thread(_pygithub_round_trip, served.url, auth)
    assert bodies == ["second"]
    assert [(t["app_id"], t["installation_id"]) for t in served.app.installation_tokens] == [
        ("123", 45)]


async def test_given_no_app_jwt_when_asking_for_an_installation_token_then_401(
        github: httpx.AsyncClient) -> None:
    response = await github.post("/app/installations/1/access_tokens", headers=AUTH)
    assert response.status_code == 401
    response = await github.post("/app/installations/1/access_tokens",
                                 headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401
