"""``PipelineMiddleware`` subclasses observe every step (execution guide section 10.4;
core concepts section 4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from taskiq import InMemoryBroker, TaskiqResult

from taskiq_flow import Pipeline, PipelineContext
from taskiq_flow.middleware import PipelineMiddleware
from tests.sequential import seq_tasks as st


class DebugMiddleware(PipelineMiddleware):
    """The guide's example, recording instead of printing."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any]] = []
        self.contexts: list[PipelineContext] = []

    async def on_step_complete(self, ctx: PipelineContext, result: TaskiqResult[Any]) -> None:
        self.seen.append((ctx.task_id, result.return_value))
        self.contexts.append(ctx)
        await super().on_step_complete(ctx, result)


@pytest.fixture
async def broker() -> AsyncIterator[InMemoryBroker]:
    broker = InMemoryBroker()
    await broker.startup()
    try:
        yield broker
    finally:
        await broker.shutdown()


async def test_a_debug_middleware_sees_every_step_complete(broker: InMemoryBroker) -> None:
    debug = DebugMiddleware()
    broker.add_middlewares(debug)
    pipeline = Pipeline(broker).call_next(st.add_one).call_next(st.double).call_next(st.add_one)

    task = await pipeline.kiq(1)
    await task.wait_result(timeout=10)

    run = task.task_id
    assert debug.seen == [(f"{run}.0.1", 2), (f"{run}.1.1", 4), (f"{run}.2.1", 5)]
    assert [c.step_index for c in debug.contexts] == [0, 1, 2]
    assert {c.execution_mode for c in debug.contexts} == {"sequential"}
    assert {c.pipeline_id for c in debug.contexts} == {run}


async def test_the_debug_middleware_replaces_the_default_one(broker: InMemoryBroker) -> None:
    debug = DebugMiddleware()
    broker.add_middlewares(debug)

    await (await Pipeline(broker).call_next(st.double).kiq(2)).wait_result(timeout=10)

    # Pipeline.kiq adds a PipelineMiddleware only when the broker has none: the
    # subclass does the work, once per step.
    assert [m for m in broker.middlewares if isinstance(m, PipelineMiddleware)] == [debug]
    assert len(debug.seen) == 1


async def test_a_debug_middleware_sees_each_map_item_and_failures(
    broker: InMemoryBroker,
) -> None:
    debug = DebugMiddleware()
    broker.add_middlewares(debug)
    pipeline = Pipeline(broker).on_error("continue").map(st.fail_on_three).call_next(st.total)

    task = await pipeline.kiq([1, 3])
    await task.wait_result(timeout=10)

    run = task.task_id
    assert sorted(task_id for task_id, _ in debug.seen) == [
        f"{run}.0.1.0",
        f"{run}.0.1.1",
        f"{run}.1.1",
    ]
    assert dict(debug.seen)[f"{run}.0.1.1"] is None  # the failed item: no value
    assert dict(debug.seen)[f"{run}.1.1"] == 2


async def test_pipelines_without_middleware_get_one(broker: InMemoryBroker) -> None:
    # "Without it, pipelines won't work": the library adds it when it is missing.
    assert not broker.middlewares

    task = await Pipeline(broker).call_next(st.double).kiq(5)

    assert (await task.wait_result(timeout=10)).return_value == 10
    assert any(isinstance(m, PipelineMiddleware) for m in broker.middlewares)
