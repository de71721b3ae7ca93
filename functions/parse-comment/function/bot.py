"""The bot's comments on GitHub, through PyGithub (a token or a GitHub App installation).

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
`Unavailable` (503): the transaction rolls back and the broker retries. PyGithub is
synchronous: every call runs in a worker thread, with a short timeout and no retries of
its own (the broker's are the retries).

PyGithub (with requests, urllib3, PyJWT, cryptography) costs more import time than
anything else the function loads, so it is imported at the first write, not at start:
events that comment on nothing (the decision path) never load it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventing.errors import Unavailable
from function.render import marker, with_marker

if TYPE_CHECKING:
    from github import Auth, Github
    from github.Issue import Issue

log = logging.getLogger("parse-comment.bot")


@dataclass(frozen=True)
class Credentials:
    """A token, or a GitHub App (id + private key) and its installation id."""

    token: str | None = None
    app_id: str | None = None
    private_key: str | None = None
    installation_id: int | None = None

    def auth(self) -> Auth.Auth:
        from github import Auth

        if self.token:
            return Auth.Token(self.token)
        if self.app_id and self.private_key and self.installation_id is not None:
            return Auth.AppAuth(self.app_id, self.private_key).get_installation_auth(
                self.installation_id)
        raise ValueError("no GitHub credentials")


class Bot:
    def __init__(self, base_url: str, credentials: Credentials, *, timeout: int) -> None:
        self._base = base_url.rstrip("/")
        self._credentials = credentials
        self._timeout = timeout
        self._github: Github | None = None

    def _client(self) -> Github:
        if self._github is None:
            from github import Github

            # lazy: get_repo/get_issue/get_comment make no request of their own; only the
            # reads and writes below reach GitHub. No throttle between writes: each delivery
            # makes at most a few, and GitHub's secondary limits answer 403/429 → 503 → retry.
            self._github = Github(auth=self._credentials.auth(), base_url=self._base,
                                  timeout=self._timeout, retry=None, lazy=True,
                                  seconds_between_requests=None, seconds_between_writes=None)
        return self._github

    def close(self) -> None:
        if self._github is not None:
            self._github.close()
            self._github = None

    async def write(self, repository: str, issue_number: int, key: str, body: str,
                    comment_id: int | None, *, unsure: bool) -> int:
        """Make the bot's comment `key` on the issue say `body`; its id. `unsure`: an
        earlier try may have posted it (search for its marker before posting)."""
        import requests
        from github import GithubException

        try:
            return await asyncio.to_thread(self._write, repository, issue_number, key, body,
                                           comment_id, unsure)
        except (GithubException, requests.RequestException) as exc:
            status = getattr(exc, "status", None)
            log.warning("GitHub call failed", extra={
                "status": status, "error": type(exc).__name__, "key": key})
            raise Unavailable(f"GitHub answered {status or type(exc).__name__}; "
                              f"try again", retry_after=5) from None

    def _write(self, repository: str, issue_number: int, key: str, body: str,
               comment_id: int | None, unsure: bool) -> int:
        from github import UnknownObjectException

        issue = self._client().get_repo(repository).get_issue(issue_number)
        text = with_marker(key, body)
        if comment_id is not None:
            try:
                issue.get_comment(comment_id).edit(text)
                return comment_id
            except UnknownObjectException:
                log.info("the bot comment was deleted on GitHub; posting anew",
                         extra={"comment_id": comment_id, "key": key})
                unsure = True  # posting anew: an earlier try may have done so already
        if unsure:
            found = self._find(issue, key)
            if found is not None:
                issue.get_comment(found).edit(text)
                return found
        return int(issue.create_comment(text).id)

    @staticmethod
    def _find(issue: Issue, key: str) -> int | None:
        tag = marker(key)
        for comment in issue.get_comments():
            if comment.user.type == "Bot" and (comment.body or "").startswith(tag):
                return int(comment.id)
        return None
