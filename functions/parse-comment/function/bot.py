"""The bot's comments on GitHub, over GitHub's REST API (a token or a GitHub App installation).

Safe under at-least-once delivery: a comment is written with a hidden marker naming its
key (`render.marker`), inside the transaction that records its id (func.py), and a first
post is announced beforehand in a row of its own that commits at once (`store.begin_post`).
So:

- the id is known (recorded by an earlier, committed delivery): edit that comment;
- it is not, and no earlier try announced a post: post, with no search (`unsure=False`);
- it is not, but an earlier try announced one and did not commit (its outcome is unknown):
  look for a bot comment with the marker on the issue and edit it; only when there is
  none, post.

A retry therefore edits, never posts a second comment, and a first post costs one call,
not one per page of the issue's comments. GitHub unreachable, slow or failing →
`Unavailable` (503): the transaction rolls back and the broker retries. No retries of our
own: the broker's are the retries.

Why not PyGithub: three REST calls do not need it, and it costs a function's cold start
more than everything else it imports (requests, urllib3, PyJWT, cryptography, PyNaCl).
httpx (which the outbox relay uses too) is imported at the first call, PyJWT only by a
GitHub App at its first installation token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from eventing.errors import Unavailable
from function.render import marker, with_marker

if TYPE_CHECKING:
    from eventing.http import httpx

log = logging.getLogger("parse-comment.bot")

API_VERSION = "2022-11-28"
PER_PAGE = 100
# An installation token lives an hour; take a new one a little before it ends.
TOKEN_MARGIN = timedelta(minutes=5)
# GitHub accepts an app JWT of at most 10 minutes; backdated against clock drift.
APP_JWT_SECONDS = 540
APP_JWT_BACKDATE = 60


@dataclass(frozen=True)
class Credentials:
    """A token, or a GitHub App (id + private key) and its installation id."""

    token: str | None = None
    app_id: str | None = None
    private_key: str | None = None
    installation_id: int | None = None


class GitHubFailed(Exception):
    """GitHub answered something other than what the call needs."""

    def __init__(self, status: int) -> None:
        super().__init__(f"GitHub answered {status}")
        self.status = status


class Bot:
    def __init__(self, base_url: str, credentials: Credentials, *, timeout: int) -> None:
        self._base = base_url.rstrip("/")
        self._credentials = credentials
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._installation: tuple[str, datetime] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def close_soon(self) -> None:
        """Close on the running loop (func-python's stop hook is sync)."""
        with contextlib.suppress(RuntimeError):  # no loop left: nothing open to close
            self._closing = asyncio.get_running_loop().create_task(self.aclose())

    async def write(self, repository: str, issue_number: int, key: str, body: str,
                    comment_id: int | None, *, unsure: bool) -> int:
        """Make the bot's comment `key` on the issue say `body`; its id. `unsure`: an
        earlier try may have posted it (search for its marker before posting)."""
        from eventing.http import httpx

        try:
            return await self._write(repository, issue_number, key, body, comment_id,
                                     unsure=unsure)
        except (GitHubFailed, httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            # ValueError, KeyError, TypeError: an answer not shaped like GitHub's.
            status = getattr(exc, "status", None)
            log.warning("GitHub call failed", extra={
                "status": status, "error": type(exc).__name__, "key": key})
            raise Unavailable(f"GitHub answered {status or type(exc).__name__}; "
                              f"try again", retry_after=5) from None

    async def _write(self, repository: str, issue_number: int, key: str, body: str,
                     comment_id: int | None, *, unsure: bool) -> int:
        issue = f"/repos/{repository}/issues/{issue_number}"
        text = with_marker(key, body)
        if comment_id is not None:
            if await self._edit(repository, comment_id, text):
                return comment_id
            log.info("the bot comment was deleted on GitHub; posting anew",
                     extra={"comment_id": comment_id, "key": key})
            unsure = True  # posting anew: an earlier try may have done so already
        if unsure:
            found = await self._find(issue, key)
            if found is not None and await self._edit(repository, found, text):
                return found
        created = await self._call("POST", f"{issue}/comments", json={"body": text})
        return int(created.json()["id"])

    async def _edit(self, repository: str, comment_id: int, text: str) -> bool:
        """Edit a comment; False when GitHub no longer has it."""
        response = await self._call("PATCH", f"/repos/{repository}/issues/comments/{comment_id}",
                                    json={"body": text}, missing_ok=True)
        return response.status_code != 404

    async def _find(self, issue: str, key: str) -> int | None:
        tag = marker(key)
        url: str | None = f"{self._base}{issue}/comments?per_page={PER_PAGE}"
        while url is not None:
            response = await self._call("GET", url)
            for comment in response.json():
                user = comment.get("user") or {}
                if user.get("type") == "Bot" and (comment.get("body") or "").startswith(tag):
                    return int(comment["id"])
            url = response.links.get("next", {}).get("url")
        return None

    async def _call(self, method: str, path: str, *, json: Any = None,
                    missing_ok: bool = False) -> httpx.Response:
        http = self._client()
        url = path if path.startswith(("http://", "https://")) else f"{self._base}{path}"
        headers = {"authorization": f"Bearer {await self._token()}"}
        response = await http.request(method, url, json=json, headers=headers)
        if response.is_success or (missing_ok and response.status_code == 404):
            return response
        raise GitHubFailed(response.status_code)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            from eventing.http import httpx

            self._http = httpx.AsyncClient(timeout=self._timeout, headers={
                "accept": "application/vnd.github+json",
                "x-github-api-version": API_VERSION,
                "user-agent": "eventworks-parse-comment"})
        return self._http

    async def _token(self) -> str:
        creds = self._credentials
        if creds.token:
            return creds.token
        now = datetime.now(UTC)
        if self._installation is not None and self._installation[1] - TOKEN_MARGIN > now:
            return self._installation[0]
        response = await self._client().post(
            f"{self._base}/app/installations/{creds.installation_id}/access_tokens",
            headers={"authorization": f"Bearer {self._app_jwt(now)}"})
        if not response.is_success:
            raise GitHubFailed(response.status_code)
        answer = response.json()
        expires = datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00"))
        self._installation = (answer["token"], expires)
        return str(answer["token"])

    def _app_jwt(self, now: datetime) -> str:
        import jwt  # PyJWT, with cryptography for RS256: only a GitHub App needs them

        issued = int(now.timestamp()) - APP_JWT_BACKDATE
        key = self._credentials.private_key
        if key is None:
            raise ValueError("a GitHub App needs its private key")
        return jwt.encode({"iat": issued, "exp": issued + APP_JWT_SECONDS,
                           "iss": self._credentials.app_id}, key, algorithm="RS256")
