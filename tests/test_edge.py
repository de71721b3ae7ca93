"""Tier 1: the edge's pure parts — status rules, data validation, problem documents."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from eventing import errors
from eventing.edge import status_of, validate
from eventing.events import IssueCommentEvent
from eventing.wire import problem


@pytest.mark.parametrize(("error", "status"), [
    (errors.InvalidEvent("x"), 400),
    (errors.UnknownEventType("t"), 400),
    (errors.PayloadTooLarge("x"), 413),
    (errors.MethodNotAllowed("x"), 405),
    (errors.Unauthorized("x"), 401),
    (errors.Forbidden("x"), 403),
    (errors.NotFound("x"), 404),
    (errors.Conflict("x"), 409),
    (errors.Unavailable("x"), 503),
    (errors.NotBuilt("x"), 501),
    (errors.EventworksError("x"), 500),
])
def test_given_error_when_mapped_then_knative_status(error, status):
    assert status_of(error) == status


class Inner(BaseModel):
    count: int


class Outer(BaseModel):
    items: list[Inner]


def test_given_bad_nested_item_when_validated_then_field_path_names_it():
    with pytest.raises(errors.InvalidEvent) as raised:
        validate(Outer, {"items": [{"count": 1}, {"count": "many"}]})
    assert raised.value.field == "data.items[1].count"


def test_given_no_data_when_validated_then_invalid_naming_data():
    with pytest.raises(errors.InvalidEvent) as raised:
        validate(IssueCommentEvent, None)
    assert raised.value.field == "data"


def test_given_every_missing_field_when_validated_then_all_are_listed():
    with pytest.raises(errors.InvalidEvent) as raised:
        validate(IssueCommentEvent, {"action": "created"})
    fields = {e["field"] for e in raised.value.errors}
    assert {"data.issue", "data.comment", "data.repository", "data.sender"} <= fields


def test_given_internal_error_when_rendered_then_no_detail_leaks():
    body = json.loads(problem(500, None, event_id="e1"))
    assert body == {"type": "urn:eventworks:problem:internal", "title": "Internal error",
                    "status": 500, "detail": "the function failed; the event will be retried",
                    "event_id": "e1"}


def test_given_field_error_when_rendered_then_rfc9457_members_and_field():
    body = json.loads(problem(400, errors.InvalidEvent("bad", field="data.x"), event_id=None))
    assert body["type"] == "urn:eventworks:problem:invalid-event"
    assert body["status"] == 400
    assert body["field"] == "data.x"
