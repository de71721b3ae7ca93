"""The outbox (eventing/outbox.py) on the stack's real PostgreSQL, relayed to a real HTTP sink.

The relay's sink here is a scripted subscriber standing in for the broker ingress, so the
tests can take it down and bring it back; the relay posts to it exactly as to K_SINK.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import BaseModel

from eventing import outbox
from eventing.database import Database
from eventing.edge import Delivery, Edge, Reply, Route
from eventing.settings import Settings
from tests.conftest import subscriber
from tests.factory import cloudevent, served
from tests.subscriber import Answer, Received, Subscriber

# A schema no running function relays from (verify-tx has no outbox).
SCHEMA = "verify"


class Fact(BaseModel):
    n: int


@pytest.fixture
async def db(stack_env: dict[str, str]) -> AsyncIterator[Database]:
    database = Database(stack_env["DATABASE_URL"], SCHEMA)
    await database.wait_open()
    async with database.transaction() as tx:
        await tx.execute("DELETE FROM outbox")
    yield database
    await database.close()


async def put_facts(db: Database, *numbers: int) -> list[str]:
    async with db.transaction() as tx:
        return [await outbox.put(tx, source="/eventworks/test", type="dev.eventworks.test.fact",
                                 data=Fact(n=n), subject=f"fact-{n}") for n in numbers]


async def pending(db: Database) -> int:
    async with db.transaction() as tx:
        cur = await tx.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


def numbers(sink: Subscriber) -> list[int]:
    return [json.loads(r.body)["n"] for r in sink.received]


async def test_given_committed_facts_when_the_relay_flushes_then_the_sink_gets_them_in_order(
        db: Database, subscribers: list[Subscriber]) -> None:
    sink = subscriber(subscribers)
    ids = await put_facts(db, 1, 2, 3)
    relay = outbox.Relay(db, sink.url)
    try:
        assert await relay.flush() == 3
    finally:
        await relay.stop()
    assert sink.ids() == ids
    assert numbers(sink) == [1, 2, 3]
    first = sink.received[0].headers
    assert first["ce-type"] == "dev.eventworks.test.fact"
    assert first["ce-source"] == "/eventworks/test"
    assert first["ce-subject"] == "fact-1"
    assert first["content-type"].startswith("application/json")
    assert await pending(db) == 0


async def test_given_a_rolled_back_change_when_the_relay_flushes_then_nothing_is_published(
        db: Database, subscribers: list[Subscriber]) -> None:
    sink = subscriber(subscribers)
    async def change_that_fails() -> None:
        async with db.transaction() as tx:
            await outbox.put(tx, source="/eventworks/test", type="dev.eventworks.test.fact",
                             data=Fact(n=1))
            await tx.execute("SELECT 1 / 0")

    with pytest.raises(psycopg.errors.DivisionByZero):
        await change_that_fails()
    relay = outbox.Relay(db, sink.url)
    try:
        assert await relay.flush() == 0
    finally:
        await relay.stop()
    assert sink.received == []


async def test_given_the_sink_down_when_it_comes_back_then_every_fact_is_relayed_once(
        db: Database, subscribers: list[Subscriber], unused_port: int) -> None:
    await put_facts(db, 1, 2)
    down = outbox.Relay(db, f"http://127.0.0.1:{unused_port}/")
    try:
        with pytest.raises(httpx.ConnectError):
            await down.flush()
    finally:
        await down.stop()
    assert await pending(db) == 2

    sink = subscriber(subscribers)
    back = outbox.Relay(db, sink.url)
    try:
        assert await back.flush() == 2
        assert await back.flush() == 0
    finally:
        await back.stop()
    assert numbers(sink) == [1, 2]


async def test_given_the_sink_refusing_midway_then_what_went_before_stays_published(
        db: Database, subscribers: list[Subscriber]) -> None:
    def refuse_the_second(request: Received, seen: int) -> Answer:
        return Answer(503) if json.loads(request.body)["n"] == 2 else Answer(202)

    sink = subscriber(subscribers, refuse_the_second)
    await put_facts(db, 1, 2, 3)
    relay = outbox.Relay(db, sink.url)
    try:
        with pytest.raises(outbox.SinkRefused):
            await relay.flush()
        assert await pending(db) == 2  # the first is marked; 2 and 3 wait, in order
        sink.script = lambda request, seen: Answer(202)
        assert await relay.flush() == 2
    finally:
        await relay.stop()
    assert numbers(sink) == [1, 2, 2, 3]


# -- through the edge: a function with `outbox = True` ----------------------------------------
class Publisher(Edge[Settings]):
    """A function that answers nothing and publishes what it was told, as a fact."""

    name = "publisher"
    schema = SCHEMA
    outbox = True
    settings_type = Settings

    def routes(self) -> Mapping[str, Route[Any]]:
        return {"dev.eventworks.test.say": Route(Fact, self.on_say)}

    async def on_say(self, delivery: Delivery[Fact]) -> Reply | None:
        await self.publish(delivery, "dev.eventworks.test.said", delivery.data,
                           subject=f"said-{delivery.data.n}")
        return None


async def test_given_a_function_with_an_outbox_when_it_handles_an_event_twice_then_its_fact_is_relayed_once(  # noqa: E501
        db: Database, subscribers: list[Subscriber], stack_env: dict[str, str]) -> None:
    sink = subscriber(subscribers)
    say = cloudevent("dev.eventworks.test.say", {"n": 7})
    async with served(Publisher(), {"DATABASE_URL": stack_env["DATABASE_URL"],
                                    "K_SINK": sink.url}) as client:
        for _ in range(2):
            response = await client.post("/", content=say.body, headers=dict(say.headers))
            assert response.status_code == 202
        for _ in range(200):
            if sink.received:
                break
            await asyncio.sleep(0.02)
    assert numbers(sink) == [7]
    assert sink.received[0].headers["ce-type"] == "dev.eventworks.test.said"
    assert sink.received[0].headers["ce-source"] == "/eventworks/publisher"
    assert await pending(db) == 0
