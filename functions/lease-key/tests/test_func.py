"""lease-key answers every event with 501 until its capability is built."""

from __future__ import annotations

from function import new
from tests.factory import assert_not_built


async def test_given_any_event_when_posted_then_501_problem_says_not_built() -> None:
    await assert_not_built(new())
