"""A local stand-in for the GitHub REST API: issue comments, recorded in memory.

`python -m stack.github_api` (env `LISTEN_ADDRESS`, `host:port`) serves the routes
PyGithub 2.x calls to read a repository and an issue and to create, edit, list,
read and delete issue comments, with bodies shaped like GitHub's so PyGithub
parses them:

    GET    /repos/{owner}/{repo}
    GET    /repos/{owner}/{repo}/issues/{number}
    GET    /repos/{owner}/{repo}/issues/{number}/comments    (?per_page=&page=, Link header)
    POST   /repos/{owner}/{repo}/issues/{number}/comments    {"body": ...} → 201
    GET    /repos/{owner}/{repo}/issues/comments/{id}
    PATCH  /repos/{owner}/{repo}/issues/comments/{id}        {"body": ...} → 200
    DELETE /repos/{owner}/{repo}/issues/comments/{id}        → 204
    POST   /app/installations/{id}/access_tokens             (Bearer <app JWT>) → 201

The same routes answer under `/api/v3` (a GitHub Enterprise style base URL).
Every repository and issue exists (open, made up from its name); comments are
what was posted. Writes need an `Authorization` header (`token …`, `Bearer …`
or `Basic …`), as on GitHub; any credential is accepted. The author of every
comment is the app's bot user `eventworks[bot]`. URLs in answers are absolute
and built from the request's Host, so PyGithub follows them back here.

For tests: `GET /_stand-in/comments` lists every comment ever posted (optionally
`?repository=owner/repo&issue=12`) with its repository, issue number, edit count
and history of earlier bodies, including deleted ones; `DELETE /_stand-in/comments`
forgets them (ids keep counting up, so a stale id never names a new comment).
`GET /health/readiness` and `/health/liveness` answer 200.

A GitHub App authenticates with a JWT (RS256, signed with the app's private key, `iss` =
the app id) to get an installation token; the stand-in checks the JWT's shape and claims
(not its signature: it does not know the app's public key), answers with a fresh token,
and lists what it issued at `GET /_stand-in/installation-tokens`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import sys
import zlib
from collections import deque
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from eventing.wire import Receive, Send, lifespan
from stack import asgi_server

log = logging.getLogger("stack.github_api")

Scope = MutableMapping[str, Any]

DOCS = "https://docs.github.com/rest"
WEB = "https://github.com"
BOT = {"login": "eventworks[bot]", "id": 190000001, "node_id": "BOT_kgDOC1Z0AQ", "type": "Bot",
       "site_admin": False, "html_url": f"{WEB}/apps/eventworks"}
MAX_COMMENT_CHARS = 65536       # GitHub's limit on a comment body
MAX_REQUEST_BYTES = 1024 * 1024
API_PREFIX = "/api/v3"
NAME = r"[A-Za-z0-9_.-]+"
ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("repository", re.compile(rf"^/repos/(?P<owner>{NAME})/(?P<repo>{NAME})$")),
    ("issue", re.compile(rf"^/repos/(?P<owner>{NAME})/(?P<repo>{NAME})/issues/(?P<number>\d+)$")),
    ("issue_comments", re.compile(
        rf"^/repos/(?P<owner>{NAME})/(?P<repo>{NAME})/issues/(?P<number>\d+)/comments$")),
    ("comment", re.compile(
        rf"^/repos/(?P<owner>{NAME})/(?P<repo>{NAME})/issues/comments/(?P<id>\d+)$")),
]
INSTALLATION_TOKEN = re.compile(r"^/app/installations/(?P<id>\d+)/access_tokens$")


class HTTPError(Exception):
    """An answer in GitHub's error shape: {"message": ..., "documentation_url": ...}."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra, "documentation_url": DOCS}


NOT_FOUND = (404, "Not Found")


def _stable_id(text: str) -> int:
    return zlib.crc32(text.lower().encode()) + 1000


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Comment:
    id: int
    owner: str
    repo: str
    issue_number: int
    body: str
    created_at: datetime
    updated_at: datetime
    history: list[str] = field(default_factory=list)  # earlier bodies, oldest first
    deleted: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"


@dataclass(frozen=True)
class Request:
    method: str
    path: str                    # without the /api/v3 prefix
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    base: str                    # scheme://host[:port][/api/v3], as the client addressed us


class GitHubStandIn:
    """The stand-in as a raw ASGI application; its state lives in the instance."""

    def __init__(self) -> None:
        self.comments: dict[int, Comment] = {}
        self.installation_tokens: list[dict[str, Any]] = []
        # (method, path) of the latest API calls, for tests that count GitHub calls.
        self.calls: deque[tuple[str, str]] = deque(maxlen=10_000)
        self._next_id = 1

    # -- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            request = await _read(scope, receive)
            status, body, headers = self.route(request)
        except HTTPError as error:
            status, body, headers = error.status, error.body, {}
        await _respond(send, status, body, headers)

    def route(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        path, method = request.path.rstrip("/") or "/", request.method
        if path in ("/health/readiness", "/health/liveness") and method in ("GET", "HEAD"):
            return 200, {"status": "ok"}, {}
        if path == "/_stand-in/comments":
            if method == "GET":
                return 200, self._recorded(request.query), {}
            if method == "DELETE":
                self.comments.clear()
                return 200, {"deleted": "all"}, {}
        if path == "/_stand-in/installation-tokens" and method == "GET":
            return 200, self.installation_tokens, {}
        self.calls.append((method, path))
        installation = INSTALLATION_TOKEN.match(path)
        if installation is not None and method == "POST":
            return 201, self._installation_token(request, int(installation["id"])), {}
        for name, pattern in ROUTES:
            match = pattern.match(path)
            if match is not None:
                return self._dispatch(name, method, match.groupdict(), request)
        raise HTTPError(*NOT_FOUND)

    def _dispatch(self, route: str, method: str, args: dict[str, str],
                  request: Request) -> tuple[int, Any, dict[str, str]]:
        owner, repo = args["owner"], args["repo"]
        if method in ("POST", "PATCH", "PUT", "DELETE"):
            _authorize(request.headers)
        if route == "repository" and method == "GET":
            return 200, _repository(request.base, owner, repo), {}
        if route == "issue" and method == "GET":
            number = _number(args["number"])
            return 200, self._issue(request.base, owner, repo, number), {}
        if route == "issue_comments" and method == "GET":
            return self._list(request, owner, repo, _number(args["number"]))
        if route == "issue_comments" and method == "POST":
            comment = self._create(owner, repo, _number(args["number"]), _comment_body(request))
            rendered = _comment(request.base, comment)
            return 201, rendered, {"location": rendered["url"]}
        if route == "comment":
            comment = self._find(owner, repo, int(args["id"]))
            if method == "GET":
                return 200, _comment(request.base, comment), {}
            if method == "PATCH":
                self._edit(comment, _comment_body(request))
                return 200, _comment(request.base, comment), {}
            if method == "DELETE":
                comment.deleted = True
                log.info("comment deleted", extra={"comment_id": comment.id})
                return 204, None, {}
        raise HTTPError(*NOT_FOUND)

    def _installation_token(self, request: Request, installation_id: int) -> dict[str, Any]:
        app_id = _app_jwt_issuer(request.headers)
        expires = datetime.now(UTC) + timedelta(hours=1)
        token = f"ghs_standin{secrets.token_hex(16)}"
        self.installation_tokens.append({"app_id": app_id, "installation_id": installation_id,
                                         "expires_at": _timestamp(expires)})
        log.info("installation token issued", extra={"installation_id": installation_id})
        return {"token": token, "expires_at": _timestamp(expires), "permissions": {
            "issues": "write", "pull_requests": "read", "metadata": "read"},
            "repository_selection": "all"}

    # -- state ----------------------------------------------------------------------------
    def _create(self, owner: str, repo: str, number: int, body: str) -> Comment:
        now = datetime.now(UTC)
        comment = Comment(id=self._next_id, owner=owner, repo=repo, issue_number=number,
                          body=body, created_at=now, updated_at=now)
        self._next_id += 1
        self.comments[comment.id] = comment
        log.info("comment created", extra={"comment_id": comment.id,
                                           "issue": f"{owner}/{repo}#{number}"})
        return comment

    def _edit(self, comment: Comment, body: str) -> None:
        comment.history.append(comment.body)
        comment.body = body
        comment.updated_at = datetime.now(UTC)
        log.info("comment edited", extra={"comment_id": comment.id,
                                          "edits": len(comment.history)})

    def _find(self, owner: str, repo: str, comment_id: int) -> Comment:
        comment = self.comments.get(comment_id)
        if comment is None or comment.deleted \
                or comment.full_name.lower() != f"{owner}/{repo}".lower():
            raise HTTPError(*NOT_FOUND)
        return comment

    def _on_issue(self, owner: str, repo: str, number: int) -> list[Comment]:
        full_name = f"{owner}/{repo}".lower()
        return [c for c in self.comments.values()
                if not c.deleted and c.issue_number == number
                and c.full_name.lower() == full_name]

    def _issue(self, base: str, owner: str, repo: str, number: int) -> dict[str, Any]:
        url = f"{base}/repos/{owner}/{repo}/issues/{number}"
        created = _timestamp(datetime(2024, 1, 1, tzinfo=UTC))
        author = _user(base, owner)
        return {
            "id": _stable_id(f"{owner}/{repo}#{number}"),
            "node_id": f"I_{_stable_id(f'{owner}/{repo}#{number}')}",
            "number": number, "title": f"Issue #{number}", "state": "open", "locked": False,
            "body": "", "user": author, "labels": [], "assignee": None, "assignees": [],
            "milestone": None, "comments": len(self._on_issue(owner, repo, number)),
            "created_at": created, "updated_at": created, "closed_at": None,
            "author_association": "OWNER",
            "url": url, "html_url": f"{WEB}/{owner}/{repo}/issues/{number}",
            "comments_url": f"{url}/comments",
            "repository_url": f"{base}/repos/{owner}/{repo}",
        }

    def _list(self, request: Request, owner: str, repo: str,
              number: int) -> tuple[int, Any, dict[str, str]]:
        comments = sorted(self._on_issue(owner, repo, number), key=lambda c: c.id)
        per_page = min(max(_int_param(request.query, "per_page", 30), 1), 100)
        page = max(_int_param(request.query, "page", 1), 1)
        last = max((len(comments) + per_page - 1) // per_page, 1)
        chunk = comments[(page - 1) * per_page: page * per_page]
        url = f"{request.base}/repos/{owner}/{repo}/issues/{number}/comments"
        links = []
        if page < last:
            links += [(page + 1, "next"), (last, "last")]
        if page > 1:
            links += [(1, "first"), (page - 1, "prev")]
        headers = {}
        if links:
            headers["link"] = ", ".join(
                f'<{url}?{urlencode({"per_page": per_page, "page": p})}>; rel="{rel}"'
                for p, rel in links)
        return 200, [_comment(request.base, c) for c in chunk], headers

    def _recorded(self, query: Mapping[str, list[str]]) -> list[dict[str, Any]]:
        repository = (query.get("repository") or [""])[0].lower()
        issue = (query.get("issue") or [""])[0]
        return [{
            "id": c.id, "repository": c.full_name, "issue_number": c.issue_number,
            "body": c.body, "user": BOT["login"],
            "created_at": _timestamp(c.created_at), "updated_at": _timestamp(c.updated_at),
            "edits": len(c.history), "history": list(c.history), "deleted": c.deleted,
        } for c in sorted(self.comments.values(), key=lambda c: c.id)
            if (not repository or c.full_name.lower() == repository)
            and (not issue or str(c.issue_number) == issue)]


# -- GitHub-shaped documents ---------------------------------------------------------------

def _user(base: str, login: str) -> dict[str, Any]:
    return {"login": login, "id": _stable_id(login), "node_id": f"U_{_stable_id(login)}",
            "type": "User", "site_admin": False, "url": f"{base}/users/{login}",
            "html_url": f"{WEB}/{login}"}


def _bot(base: str) -> dict[str, Any]:
    return {**BOT, "url": f"{base}/users/{quote(str(BOT['login']))}"}


def _repository(base: str, owner: str, repo: str) -> dict[str, Any]:
    full_name = f"{owner}/{repo}"
    return {
        "id": _stable_id(full_name), "node_id": f"R_{_stable_id(full_name)}",
        "name": repo, "full_name": full_name, "owner": _user(base, owner),
        "private": False, "fork": False, "default_branch": "main",
        "html_url": f"{WEB}/{full_name}", "url": f"{base}/repos/{full_name}",
        "issues_url": f"{base}/repos/{full_name}/issues{{/number}}",
        "issue_comment_url": f"{base}/repos/{full_name}/issues/comments{{/number}}",
    }


def _comment(base: str, comment: Comment) -> dict[str, Any]:
    repo_url = f"{base}/repos/{comment.full_name}"
    return {
        "id": comment.id, "node_id": f"IC_{comment.id}",
        "url": f"{repo_url}/issues/comments/{comment.id}",
        "html_url": f"{WEB}/{comment.full_name}/issues/{comment.issue_number}"
                    f"#issuecomment-{comment.id}",
        "issue_url": f"{repo_url}/issues/{comment.issue_number}",
        "body": comment.body, "user": _bot(base),
        "created_at": _timestamp(comment.created_at),
        "updated_at": _timestamp(comment.updated_at),
        "author_association": "NONE", "performed_via_github_app": None,
    }


# -- request helpers -----------------------------------------------------------------------

def _authorize(headers: Mapping[str, str]) -> None:
    value = headers.get("authorization", "").strip()
    if not value:
        raise HTTPError(401, "Requires authentication")
    scheme, _, credential = value.partition(" ")
    if scheme.lower() not in ("token", "bearer", "basic") or not credential.strip():
        raise HTTPError(401, "Bad credentials")


def _app_jwt_issuer(headers: Mapping[str, str]) -> str:
    """The app id of a well-formed app JWT (RS256, iss, iat < exp), else 401 as GitHub."""
    scheme, _, credential = headers.get("authorization", "").strip().partition(" ")
    parts = credential.strip().split(".")
    if scheme.lower() != "bearer" or len(parts) != 3:
        raise HTTPError(401, "A JSON web token could not be decoded")
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                          for p in parts[:2])
    except ValueError:
        raise HTTPError(401, "A JSON web token could not be decoded") from None
    if not isinstance(header, dict) or header.get("alg") != "RS256" \
            or not isinstance(claims, dict) or "iss" not in claims \
            or not int(claims.get("iat", 0)) < int(claims.get("exp", 0)):
        raise HTTPError(401, "'Expiration time' claim ('exp') must be after 'Issued at'")
    return str(claims["iss"])


def _comment_body(request: Request) -> str:
    try:
        document = json.loads(request.body or b"null")
    except ValueError:
        raise HTTPError(400, "Problems parsing JSON") from None
    body = document.get("body") if isinstance(document, dict) else None
    if not isinstance(body, str):
        raise HTTPError(422, "Validation Failed", errors=[
            {"resource": "IssueComment", "code": "missing_field", "field": "body"}])
    if len(body) > MAX_COMMENT_CHARS:
        raise HTTPError(422, "Validation Failed", errors=[
            {"resource": "IssueComment", "code": "custom", "field": "body",
             "message": f"body is too long (maximum is {MAX_COMMENT_CHARS} characters)"}])
    return body


def _number(text: str) -> int:
    number = int(text)
    if number < 1:
        raise HTTPError(*NOT_FOUND)
    return number


def _int_param(query: Mapping[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[0])
    except ValueError:
        return default


async def _read(scope: Mapping[str, Any], receive: Receive) -> Request:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
               for k, v in scope.get("headers", [])}
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > MAX_REQUEST_BYTES:
            raise HTTPError(413, "Payload Too Large")
        if not message.get("more_body", False):
            break
    path = scope.get("path", "/")
    prefix = ""
    if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
        prefix, path = API_PREFIX, path[len(API_PREFIX):] or "/"
    host = headers.get("host")
    if host is None:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    base = f"{scope.get('scheme', 'http')}://{host}{prefix}"
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return Request(method=scope.get("method", "GET"), path=path, query=query,
                   headers=headers, body=bytes(body), base=base)


async def _respond(send: Send, status: int, body: Any, headers: Mapping[str, str]) -> None:
    payload = b"" if body is None else json.dumps(body).encode()
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if body is not None:
        raw.append((b"content-type", b"application/json; charset=utf-8"))
    raw.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


# -- the process ---------------------------------------------------------------------------

def main() -> int:
    from eventing import logs

    level = os.environ.get("LOG_LEVEL", "INFO")
    logs.configure("github-api", level if level in ("DEBUG", "INFO", "WARNING") else "INFO")
    listen_address = os.environ.get("LISTEN_ADDRESS", "127.0.0.1:8081")
    if not re.fullmatch(r"\S+:\d{1,5}", listen_address):
        log.error("LISTEN_ADDRESS must be host:port", extra={"value": listen_address})
        return 2
    asyncio.run(asgi_server.serve(GitHubStandIn(), listen_address, log, "github api stand-in"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
