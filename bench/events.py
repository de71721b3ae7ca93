"""The event every request carries: a real GitHub issue_comment webhook, as
Knative's GitHubSource delivers it, asking for a bounty."""

from __future__ import annotations

import uuid

from tests.factory import github, issue_comment


class Events:
    """One payload, a fresh `ce-id` per request (`fresh`: a new comment too).

    parse-comment keeps an idempotency inbox keyed by (source, id): a repeated id
    would be answered from the inbox and measure a different, cheaper path.
    """

    def __init__(self, comment: str = "Worth $USDC:100$") -> None:
        self.comment = comment
        template = github("issue_comment", issue_comment(comment))
        self.body: bytes = template.body
        self._headers = dict(template.headers)

    def headers(self) -> dict[str, str]:
        return {**self._headers, "ce-id": str(uuid.uuid4())}

    def fresh(self) -> tuple[bytes, dict[str, str]]:
        """A comment of its own (new comment id) in a delivery of its own (new ce-id):
        parse-comment keeps one bounty per comment, so a known comment would measure the
        cheaper 'nothing changed' path instead of a new bounty."""
        event = github("issue_comment", issue_comment(self.comment))
        return event.body, dict(event.headers)
