"""The worker middleware on a real Redis: references, outputs, events, skips, unknown tasks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from taskiq import InMemoryBroker
from taskiq.kicker import AsyncKicker

from taskiq_flow_worker import FlowWorkerMiddleware
from taskiq_flow_worker import protocol as p

EVENTS = "test:events"


@pytest.fixture
async def setup(redis_url: str) -> AsyncIterator[tuple[InMemoryBroker, Redis, list[int]]]:
    broker = InMemoryBroker().with_middlewares(FlowWorkerMiddleware(redis_url))
    calls: list[int] = []

    @broker.task(task_name="t:pick")
    async def pick(x: int, factor: int = 1) -> int:
        calls.append(x)
        return x * factor

    @broker.task(task_name="t:sum")
    def total(values: list[int]) -> int:
        return sum(values)

    await broker.startup()
    client = Redis.from_url(redis_url)
    yield broker, client, calls
    await broker.shutdown()
    await client.aclose()


def labels(step: str, item: int | None = None) -> dict[str, Any]:
    found = {p.LABEL_RUN: "u", p.LABEL_STEP: step, p.LABEL_ATTEMPT: "1", p.LABEL_EVENTS: EVENTS}
    if item is not None:
        found[p.LABEL_ITEM] = str(item)
    return found


async def kick(broker: InMemoryBroker, task: str, tid: str, lbl: dict[str, Any], **kw: Any) -> None:
    await AsyncKicker(task, broker, lbl).with_task_id(tid).kiq(**kw)
    await broker.wait_all()


async def events(client: Redis) -> list[p.StepEvent]:
    return [p.StepEvent.decode(fields) for _, fields in await client.xrange(EVENTS)]


async def test_references_outputs_and_events(
    setup: tuple[InMemoryBroker, Redis, list[int]],
) -> None:
    broker, client, calls = setup
    await client.set(p.output_key("u", "src"), json.dumps([5, 6, 7]))
    ref = p.item_ref("u", "src", 2)
    await kick(broker, "t:pick", "u.m.1.0", labels("m", 0), x=ref, factor=2)
    assert calls == [7]
    assert json.loads(await client.get(p.output_key("u", "m", 0)) or "null") == 14
    await client.set(p.output_key("u", "m", 1), "1")
    await kick(broker, "t:sum", "u.s.1", labels("s"), values=p.items_ref("u", "m", 2))
    assert json.loads(await client.get(p.output_key("u", "s")) or "null") == 15
    got = await events(client)
    assert [(e.step, e.item, e.ok) for e in got] == [("m", 0, True), ("s", None, True)]
    assert got[0].size == 2


async def test_a_finished_task_is_not_run_again_but_reported(
    setup: tuple[InMemoryBroker, Redis, list[int]],
) -> None:
    broker, client, calls = setup
    await kick(broker, "t:pick", "u.a.1", labels("a"), x=3)
    await kick(broker, "t:pick", "u.a.1", labels("a"), x=3)  # redelivered
    assert calls == [3]
    assert len(await events(client)) == 2


async def test_cancelled_runs_are_skipped(
    setup: tuple[InMemoryBroker, Redis, list[int]],
) -> None:
    broker, client, calls = setup
    await client.set(p.cancelled_key("u"), "1")
    await kick(broker, "t:pick", "u.a.1", labels("a"), x=3)
    assert calls == []
    assert await events(client) == []


async def test_unknown_task_names_are_step_failures(
    setup: tuple[InMemoryBroker, Redis, list[int]],
) -> None:
    broker, client, _ = setup
    await kick(broker, "t:nope", "u.a.1", labels("a"))
    (event,) = await events(client)
    assert not event.ok
    assert "unknown task 't:nope'" in (event.error or "")


async def test_a_filter_item_stores_the_item_it_keeps(
    setup: tuple[InMemoryBroker, Redis, list[int]],
) -> None:
    broker, client, calls = setup
    await client.set(p.output_key("u", "src"), json.dumps([5, 0, 7]))
    for index in range(3):
        lbl = {**labels("f", index), p.LABEL_FILTER: "x"}
        ref = p.item_ref("u", "src", index)
        await kick(broker, "t:pick", f"u.f.1.{index}", lbl, x=ref, factor=1)
    assert calls == [5, 0, 7]
    # The kept items themselves (not the task's result), and nothing for the dropped one.
    assert json.loads(await client.get(p.output_key("u", "f", 0)) or "null") == 5
    assert await client.get(p.output_key("u", "f", 1)) is None
    assert json.loads(await client.get(p.output_key("u", "f", 2)) or "null") == 7
    got = await events(client)
    assert [(e.item, e.keep, e.size) for e in got] == [(0, True, 1), (1, False, None), (2, True, 1)]
    # A step consuming the filter's output reads the kept items, in order.
    await kick(broker, "t:sum", "u.s.1", labels("s"), values=p.items_ref("u", "f", 2, [0, 2]))
    assert json.loads(await client.get(p.output_key("u", "s")) or "null") == 12
    # A redelivered item is reported again the same way.
    await kick(broker, "t:pick", "u.f.1.1", {**labels("f", 1), p.LABEL_FILTER: "x"}, x=0)
    assert (await events(client))[-1].keep is False
    assert calls == [5, 0, 7]
