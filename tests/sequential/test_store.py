"""The run state that workers share: memory and Redis stores behave alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from taskiq import InMemoryBroker

from taskiq_flow.brokers import FlowRedisStreamBroker
from taskiq_flow.chains.store import (
    RedisSequenceStore,
    SequenceStore,
    StreamAck,
    StreamSend,
    store_for,
)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[SequenceStore]:
    broker = InMemoryBroker() if request.param == "memory" else FlowRedisStreamBroker(redis_url)
    try:
        yield store_for(broker)
    finally:
        await broker.shutdown()


async def test_advance_records_while_running_and_refuses_after_the_end(
    store: SequenceStore,
) -> None:
    await store.save_spec("run-a", "{}")
    assert await store.advance("run-a", {"step": 1, "step_name": "double"}, {0: [1, 2]})
    status = await store.status("run-a")
    assert (status["step"], status["step_name"], status["outputs"]) == (1, "double", {0: [1, 2]})

    assert await store.finish_once("run-a")
    assert not await store.finish_once("run-a")
    assert not await store.advance("run-a", {"step": 2, "step_name": "late"}, {1: "late"})
    status = await store.status("run-a")
    assert (status["step"], status["outputs"]) == (1, {0: [1, 2]})


async def test_finish_once_records_the_end_only_for_the_first_caller(
    store: SequenceStore,
) -> None:
    await store.save_spec("run-f", "{}")
    assert await store.finish_once("run-f", {"phase": "Succeeded"}, {2: 42})
    assert not await store.finish_once("run-f", {"phase": "Failed"}, {2: "late"})
    status = await store.status("run-f")
    assert (status["phase"], status["outputs"]) == ("Succeeded", {2: 42})


async def test_a_step_is_acknowledged_in_the_script_that_sends_the_next(redis_url: str) -> None:
    broker = FlowRedisStreamBroker(redis_url, queue_name="store-q")
    store = store_for(broker)
    assert isinstance(store, RedisSequenceStore)
    redis = broker._client
    try:
        await redis.xgroup_create("store-q", "g", id="0", mkstream=True)
        await redis.xadd("store-q", {b"data": b"step 0"})
        [(_, [(step0, _)])] = await redis.xreadgroup("g", "w", {"store-q": ">"})
        await store.save_spec("run-s", "{}")

        running = await store.advance(
            "run-s",
            {"step": 1},
            {0: "out"},
            send=StreamSend("store-q", b"step 1"),
            ack=StreamAck("store-q", "g", step0),
        )

        assert running
        assert (await redis.xpending("store-q", "g"))["pending"] == 0
        entries = await redis.xrange("store-q")
        assert [fields[b"data"] for _, fields in entries] == [b"step 0", b"step 1"]
        assert (await store.status("run-s"))["outputs"] == {0: "out"}

        # A late redelivery of step 1 after the run ended: acknowledged, nothing sent.
        [(_, [(step1, _)])] = await redis.xreadgroup("g", "w", {"store-q": ">"})
        assert await store.finish_once("run-s")
        running = await store.advance(
            "run-s",
            {"step": 2},
            {1: "late"},
            send=StreamSend("store-q", b"step 2", maxlen=100),
            ack=StreamAck("store-q", "g", step1),
        )
        assert not running
        assert (await redis.xpending("store-q", "g"))["pending"] == 0
        assert await redis.xlen("store-q") == 2
    finally:
        await broker.shutdown()


async def test_an_item_of_a_finished_run_records_nothing(store: SequenceStore) -> None:
    await store.save_spec("run-late", "{}")
    assert await store.finish_once("run-late")

    assert await store.item_done("run-late", 0, 1, 0, {"ok": True, "v": 1}) == (False, -1)
    assert await store.items("run-late", 0, 1) == {}


async def test_an_item_counts_once_however_often_it_is_delivered(store: SequenceStore) -> None:
    assert await store.item_done("run-b", 0, 1, 3, {"ok": True, "v": 9}) == (True, 1)
    assert await store.item_done("run-b", 0, 1, 3, {"ok": True, "v": 99}) == (False, 1)
    assert await store.item_done("run-b", 0, 1, 0, {"ok": False, "e": "x"}) == (True, 2)
    assert await store.has_item("run-b", 0, 1, 3)
    assert not await store.has_item("run-b", 0, 1, 1)
    assert await store.items("run-b", 0, 1) == {3: {"ok": True, "v": 9}, 0: {"ok": False, "e": "x"}}


async def test_an_item_is_acknowledged_with_its_result_unless_it_completes_the_step(
    redis_url: str,
) -> None:
    broker = FlowRedisStreamBroker(redis_url, queue_name="items-q")
    store = store_for(broker)
    assert isinstance(store, RedisSequenceStore)
    redis = broker._client
    try:
        await redis.xgroup_create("items-q", "g", id="0", mkstream=True)
        for item in (0, 1):
            await redis.xadd("items-q", {b"data": f"item {item}".encode()})
        [(_, [(first, _), (second, _)])] = await redis.xreadgroup("g", "w", {"items-q": ">"})

        assert await store.item_done(
            "run-i", 0, 1, 0, "a", ack=StreamAck("items-q", "g", first), total=2
        ) == (True, 1)
        assert (await redis.xpending("items-q", "g"))["pending"] == 1  # item 0 is done with

        # The last item stays pending: it is acknowledged with what it sends next.
        assert await store.item_done(
            "run-i", 0, 1, 1, "b", ack=StreamAck("items-q", "g", second), total=2
        ) == (True, 2)
        pending = await redis.xpending_range("items-q", "g", min="-", max="+", count=10)
        assert [entry["message_id"] for entry in pending] == [second]
    finally:
        await broker.shutdown()
