"""The chaos run (stack/chaos.py) on the session's stack, small: work flows while its
functions and dispatcher are SIGKILLed at random and restarted by the supervisor; then
nothing may be lost, signed twice, given a reused or skipped nonce, or left unverified.
`./taskw chaos -- --count 1000` is the big run."""

from __future__ import annotations

import httpx
import pytest

from stack import chaos, services
from stack.layout import Layout
from tests.tansu import wait_until

pytestmark = pytest.mark.stack

VICTIMS = ["sign-tx", "verify-tx", "lease-key", "dispatcher"]


def test_given_parts_killed_at_random_when_work_flows_then_every_invariant_holds(stack_env):
    outcome = chaos.run(Layout.from_env(), stack_env, workloads=sorted(chaos.WORKLOADS),
                        count=60, kill_every=1.5, victims=VICTIMS, seed=7,
                        settle_seconds=240, max_kills=6)
    # Whatever was killed is back before the next test uses the stack.
    for name in ("sign-tx", "verify-tx", "lease-key"):
        url = stack_env[services.env_key(name)]
        wait_until(lambda url=url: _ready(url), f"{name} ready again", timeout=60)

    assert outcome.problems == ()
    assert outcome.kills >= 1
    assert outcome.events >= 60


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/readiness", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
