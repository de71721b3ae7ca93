"""verify-tx answers every event with 501 until its capability is built."""

from __future__ import annotations

from function import new
from tests.factory import cloudevent, post_to


async def test_given_any_event_when_posted_then_501_problem_says_not_built() -> None:
    response = await post_to(new(), cloudevent("dev.eventworks.anything", {"x": 1}))
    assert response.status_code == 501
    assert response.headers["content-type"] == "application/problem+json"
    assert "not built" in response.json()["detail"]


async def test_given_not_a_cloudevent_when_posted_then_400_problem() -> None:
    response = await post_to(new(), body=b"hello", headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["field"] == "content-type"
