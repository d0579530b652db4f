"""The run state that workers share: memory and Redis stores behave alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from taskiq import InMemoryBroker

from taskiq_flow.brokers import FlowRedisStreamBroker
from taskiq_flow.chains.store import SequenceStore, store_for


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


async def test_an_item_counts_once_however_often_it_is_delivered(store: SequenceStore) -> None:
    assert await store.item_done("run-b", 0, 1, 3, {"ok": True, "v": 9}) == (True, 1)
    assert await store.item_done("run-b", 0, 1, 3, {"ok": True, "v": 99}) == (False, 1)
    assert await store.item_done("run-b", 0, 1, 0, {"ok": False, "e": "x"}) == (True, 2)
    assert await store.has_item("run-b", 0, 1, 3)
    assert not await store.has_item("run-b", 0, 1, 1)
    assert await store.items("run-b", 0, 1) == {3: {"ok": True, "v": 9}, 0: {"ok": False, "e": "x"}}
