"""The bounty flow end to end, in the running stack (the story of tests/test_bounty_flow.py).

Prepared once per run, untimed: a repository of the run's own; a solver of the run's own
(a new login; the golden pull request's author is changed to it) links a wallet (`/link 0x…` comment
→ SIWE challenge → signed → posted through the signing page → `identity.linked`).

Per sample, prepared untimed: a maintainer offers `$USDC:100$` on a new issue (signed
webhook) → `bounty.requested` → the funder's wallet signs the pledge (EIP-712), the page
posts it → `bounty.funded` → parse-comment's bot comment says funded (so parse-comment
knows the bounty is funded before the claim).

**Timed**: from just before the signed `pull_request` webhook (closed, merged, "Fixes
#<issue>") is POSTed to the stack's GitHub webhook ingress, to
- `verified`: the payout's `tx.verified` read from the broker topic, and
- `paid`: the bot's comment on the issue (polled on the GitHub API stand-in) showing the
  transaction hash: what the solver sees.
In between: broker → parse-comment (claim) → `bounty.claimed` → link-identity →
`payout.requested` → sign-tx (lease-key, nonce, sign) → `tx.signed` → verify-tx →
`tx.verified` → parse-comment edits its comment.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from bench.measure import percentile
from bench.processes import BenchFailure
from tests.test_bounty_flow import TOPIC, Story, pledge
from tests.topic import Seen, Watch

SAMPLES = 10
STEP = 60.0        # seconds any one step may take
POLL = 0.02        # seconds between looks at the stand-in's comments

Say = Callable[[str], None]


@dataclass(frozen=True)
class BountyResult:
    verified_ms: list[float]
    paid_ms: list[float]

    def document(self) -> dict[str, Any]:
        def shape(samples: list[float]) -> dict[str, Any]:
            return {"p50": percentile(samples, 50), "p99": percentile(samples, 99),
                    "mean": statistics.fmean(samples),
                    "samples": [round(v, 3) for v in samples]}
        return {"samples": len(self.paid_ms), "to_tx_verified_ms": shape(self.verified_ms),
                "to_comment_paid_ms": shape(self.paid_ms)}

    def table(self) -> str:
        lines = [f"bounty flow, {len(self.paid_ms)} bounties (merged-PR webhook in → …)",
                 f"  → tx.verified on the broker: p50 {percentile(self.verified_ms, 50):.0f} "
                 f"ms, p99 {percentile(self.verified_ms, 99):.0f} ms",
                 f"  → bot comment says paid:     p50 {percentile(self.paid_ms, 50):.0f} ms, "
                 f"p99 {percentile(self.paid_ms, 99):.0f} ms"]
        return "\n".join(lines)


class _Flow:
    def __init__(self, stack_env: Mapping[str, str]) -> None:
        self.story = Story(dict(stack_env))
        self.env = stack_env
        self.watch = Watch(stack_env["KAFKA_BOOTSTRAP_SERVERS"], TOPIC)
        self.seen: list[Seen] = []
        # A login of the run's own: the stack's topic keeps every run's identity events,
        # and a test that looks for `contributor-jane`'s challenge must not find ours.
        self.solver = f"bench-solver-{uuid.uuid4().hex[:8]}"
        self.solver_id = random.randrange(10**8, 10**9)

    def close(self) -> None:
        self.watch.close()

    def awaited(self, event_type: str, **fields: Any) -> Seen:
        deadline = time.monotonic() + STEP
        while True:
            for seen in self.seen:
                if seen.type == event_type and isinstance(seen.data, dict) and all(
                        seen.data.get(k) == v for k, v in fields.items()):
                    return seen
            if time.monotonic() > deadline:
                raise BenchFailure(f"bounty flow: no {event_type} {fields} within {STEP:.0f} s")
            self.seen.extend(self.watch.poll(50))

    def comment_of(self, bounty_id: str) -> str:
        response = httpx.get(f"{self.env['GITHUB_API_URL']}/_stand-in/comments",
                             params={"repository": self.story.repository}, timeout=5)
        response.raise_for_status()
        return "\n".join(str(c["body"]) for c in response.json()
                         if bounty_id in str(c["body"]))

    def until_comment(self, bounty_id: str, text: str) -> float:
        deadline = time.monotonic() + STEP
        while text not in self.comment_of(bounty_id):
            if time.monotonic() > deadline:
                raise BenchFailure(f"bounty flow: the bot's comment on {bounty_id} never "
                                   f"showed {text!r}")
            time.sleep(POLL)
        return time.perf_counter()

    def link(self) -> None:
        solver = Account.create()
        comment = self.story.payload("issue_comment.created.bounty.json")
        comment["comment"]["id"] = random.randrange(10**9, 10**10)
        comment["comment"]["body"] = f"/link {solver.address}"
        comment["comment"]["user"].update(login=self.solver, id=self.solver_id)
        comment["comment"]["author_association"] = "CONTRIBUTOR"
        comment["sender"].update(login=self.solver, id=self.solver_id)
        self.story.webhook("issue_comment", comment)
        challenge = self.awaited("dev.eventworks.identity.challenged",
                                 github_login=self.solver)
        (message,) = parse_qs(urlsplit(challenge.data["sign_url"]).query)["link"]
        signed = Account.sign_message(encode_defunct(text=message), solver.key)
        self.story.through_the_page("dev.eventworks.identity.link", {
            "message": message, "signature": "0x" + bytes(signed.signature).hex()})
        self.awaited("dev.eventworks.identity.linked", github_login=self.solver)

    def funded(self, issue: int) -> str:
        """A new bounty on issue #`issue`, funded; its id."""
        offer = self.story.payload("issue_comment.created.bounty.json")
        offer["comment"]["id"] = random.randrange(10**9, 10**10)
        offer["issue"]["number"] = issue
        self.story.webhook("issue_comment", offer)
        requested = self.awaited("dev.eventworks.bounty.requested",
                                 comment_id=offer["comment"]["id"]).data
        typed = pledge(requested)
        funder = Account.create()
        signature = Account.sign_message(encode_typed_data(full_message=typed), funder.key)
        self.story.through_the_page("dev.eventworks.bounty.signed", {
            "bounty_id": requested["bounty_id"], "funder_address": funder.address,
            "typed_data": typed, "signature": "0x" + bytes(signature.signature).hex(),
            "repository": self.story.repository, "issue_number": issue,
            "denomination": requested["denomination"],
            "amount_base_units": requested["amount_base_units"],
            "chain_id": typed["domain"]["chainId"]})
        self.awaited("dev.eventworks.bounty.funded", bounty_id=requested["bounty_id"])
        self.until_comment(requested["bounty_id"], "funded by")
        return str(requested["bounty_id"])

    def merged(self, issue: int, bounty_id: str) -> tuple[float, float]:
        """The timed part: ms to tx.verified and to the comment saying paid."""
        pull = self.story.payload("pull_request.closed.merged.json")
        pull["pull_request"]["id"] = random.randrange(10**9, 10**10)
        pull["pull_request"]["number"] = pull["number"] = 10_000 + issue
        pull["pull_request"]["body"] = f"Fix it.\n\nFixes #{issue}"
        pull["pull_request"]["user"].update(login=self.solver, id=self.solver_id)
        payout_id = f"bounty:{bounty_id}"
        started = time.perf_counter()
        self.story.webhook("pull_request", pull)
        verified: float | None = None
        deadline = time.monotonic() + STEP
        while True:
            if verified is None:
                self.seen.extend(self.watch.poll(10))
                verified = next((s.at for s in self.seen
                                 if s.type == "dev.eventworks.tx.verified"
                                 and isinstance(s.data, dict)
                                 and s.data.get("request_id") == payout_id), None)
            text = self.comment_of(bounty_id)
            if "paid to" in text and "transaction `0x" in text:
                paid = time.perf_counter()
                break
            if time.monotonic() > deadline:
                raise BenchFailure(f"bounty flow: {bounty_id} not paid within {STEP:.0f} s")
            time.sleep(POLL)
        if verified is None:  # the comment came first: it follows tx.verified, so it is read
            verified = self.awaited("dev.eventworks.tx.verified", request_id=payout_id).at
        return (verified - started) * 1000, (paid - started) * 1000


def run(stack_env: Mapping[str, str], *, samples: int = SAMPLES, say: Say = print) -> BountyResult:
    say(f"bounty flow: linking the solver, then {samples} bounties funded and paid…")
    flow = _Flow(stack_env)
    verified: list[float] = []
    paid: list[float] = []
    try:
        flow.link()
        for n in range(samples):
            issue = 100 + n
            bounty_id = flow.funded(issue)
            to_verified, to_paid = flow.merged(issue, bounty_id)
            verified.append(to_verified)
            paid.append(to_paid)
            say(f"  bounty {n + 1}/{samples}: tx.verified after {to_verified:.0f} ms, "
                f"comment says paid after {to_paid:.0f} ms")
    finally:
        flow.close()
    return BountyResult(verified, paid)
