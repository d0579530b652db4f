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


async def test_a_replica_claims_what_others_left_pending(store: Store) -> None:
    gone = Store(store.redis, events_stream="test:events", consumer="replica-a")
    idle = Store(store.redis, events_stream="test:events", consumer="replica-c")
    me = Store(store.redis, events_stream="test:events", consumer="replica-b")
    await me.ensure_group()
    for step in ("a", "b", "c"):
        await store.redis.xadd("test:events", p.StepEvent("u", step, 1, True).encode())
    assert len(await gone.read_events(pending=False, block_ms=100, count=2)) == 2
    assert await idle.read_events(pending=False, block_ms=100, count=1)
    (done,) = await idle.read_events(pending=True, block_ms=0)
    await idle.ack([done[0]])
    assert await me.read_events(pending=True, block_ms=0) == []
    # Page by page; an idle consumer holding nothing is removed, the holder is emptied.
    assert await me.adopt(stale_ms=0, page=1) == 2
    assert [e.step for _, e in await me.read_events(pending=True, block_ms=0)] == ["a", "b"]
    consumers = {c["name"]: c["pending"] for c in await me.consumers()}
    assert consumers == {"replica-a": 0, "replica-b": 2}
    assert await me.adopt() == 0  # replica-a was not idle long enough to be removed
    assert {c["name"] for c in await me.consumers()} == {"replica-a", "replica-b"}


async def test_an_item_of_a_filter_step_names_the_parameter_of_its_item(store: Store) -> None:
    import json

    kick = Kick("m:t", "u.f.1.3", "f", 1, 3, {"word": "x"}, "word")
    labels = json.loads(store.message("u", "q", kick))["labels"]
    assert labels[p.LABEL_ITEM] == "3"
    assert labels[p.LABEL_FILTER] == "word"
    plain = Kick("m:t", "u.m.1.3", "m", 1, 3, {"word": "x"})
    assert p.LABEL_FILTER not in json.loads(store.message("u", "q", plain))["labels"]
