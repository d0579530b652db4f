"""The operator's Redis side: a task id is sent once, state round-trips, cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from taskiq_flow_operator.driving import Kick
from taskiq_flow_operator.storing import Store
from taskiq_flow_worker import protocol as p


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    client = Redis.from_url(redis_url)
    yield Store(client, events_stream="test:events")
    await client.aclose()


async def test_a_task_id_is_sent_once(store: Store) -> None:
    kick = Kick("m:t", "u.a.1", "a", 1, None, {"x": 1})
    assert await store.kick("u", "q", [kick, kick]) == 1
    assert await store.kick("u", "q", [kick]) == 0  # a restarted operator's re-kick
    assert await store.redis.xlen("q") == 1


async def test_state_events_and_cleanup(store: Store) -> None:
    await store.save_state("u", {"machine": {"nodes": {}}})
    assert await store.load_state("u") == {"machine": {"nodes": {}}}
    await store.ensure_group()
    await store.ensure_group()  # idempotent
    await store.redis.xadd("test:events", p.StepEvent("u", "a", 1, True).encode())
    ((entry, event),) = await store.read_events(pending=False, block_ms=100)
    assert event.step == "a"
    # Not acknowledged: a restarted operator reads it again from its pending list.
    assert [e.step for _, e in await store.read_events(pending=True, block_ms=0)] == ["a"]
    await store.ack([entry])
    assert await store.read_events(pending=True, block_ms=0) == []
    await store.mark_cancelled("u")
    assert await store.delete_run("u") >= 2
    assert await store.load_state("u") is None
