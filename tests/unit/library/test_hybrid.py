"""Dataflow guide §6.1: a dataflow pipeline run inside a task of another pipeline."""

from __future__ import annotations

from typing import Any

from taskiq import InMemoryBroker

from taskiq_flow import DataflowPipeline, pipeline_task


def inner_tasks(broker: InMemoryBroker, calls: list[str]) -> list[Any]:
    """data → task_a → (task_b ∥ task_c)."""

    @broker.task
    @pipeline_task(output="cleaned")
    async def task_a(data: list[int]) -> list[int]:
        calls.append("task_a")
        return [x for x in data if x >= 0]

    @broker.task
    @pipeline_task(output="total")
    async def task_b(cleaned: list[int]) -> int:
        calls.append("task_b")
        return sum(cleaned)

    @broker.task
    @pipeline_task(output="largest")
    async def task_c(cleaned: list[int]) -> int:
        calls.append("task_c")
        return max(cleaned)

    return [task_a, task_b, task_c]


async def test_nested_dataflow_pipeline_inside_a_task(broker: InMemoryBroker) -> None:
    calls: list[str] = []
    task_a, task_b, task_c = inner_tasks(broker, calls)

    @broker.task
    @pipeline_task(output="summary")
    async def run_dataflow_subset(data: list[int]) -> dict[str, Any]:
        # Inner dataflow pipeline
        sub_pipeline = DataflowPipeline.from_tasks(broker, [task_a, task_b, task_c])
        return await sub_pipeline.kiq_dataflow(data=data)

    @broker.task
    @pipeline_task(output="report")
    async def finalize(summary: dict[str, Any]) -> str:
        calls.append("finalize")
        return f"total={summary['total']} largest={summary['largest']}"

    main_pipeline = DataflowPipeline.from_tasks(broker, [run_dataflow_subset, finalize])

    results = await main_pipeline.kiq_dataflow(data=[3, -1, 7, 2])

    assert results == {
        "summary": {"cleaned": [3, 7, 2], "total": 12, "largest": 7},
        "report": "total=12 largest=7",
    }
    assert calls[0] == "task_a"
    assert sorted(calls[1:3]) == ["task_b", "task_c"]
    assert calls[3] == "finalize"


async def test_nested_pipeline_task_kicked_directly(broker: InMemoryBroker) -> None:
    calls: list[str] = []
    tasks = inner_tasks(broker, calls)

    @broker.task
    async def run_dataflow_subset(data: list[int]) -> dict[str, Any]:
        sub_pipeline = DataflowPipeline.from_tasks(broker, tasks)
        return await sub_pipeline.kiq_dataflow(data=data)

    kicked = await run_dataflow_subset.kiq(data=[5, 1])
    result = await kicked.wait_result(timeout=5)

    assert not result.is_err
    assert result.return_value == {"cleaned": [5, 1], "total": 6, "largest": 5}


async def test_nested_failure_fails_the_outer_step(broker: InMemoryBroker) -> None:
    calls: list[str] = []
    tasks = inner_tasks(broker, calls)

    @broker.task
    @pipeline_task(output="summary")
    async def run_dataflow_subset(data: list[int]) -> dict[str, Any]:
        sub_pipeline = DataflowPipeline.from_tasks(broker, tasks)
        return await sub_pipeline.kiq_dataflow(data=data)

    main_pipeline = DataflowPipeline.from_tasks(
        broker, [run_dataflow_subset], error_mode="CONTINUE_ON_ERROR"
    )

    # Every value is negative: task_c's max() of an empty list fails inside.
    results = await main_pipeline.kiq_dataflow(data=[-1, -2])

    assert results == {}
    error = main_pipeline.get_execution_report().errors["run_dataflow_subset"]
    assert "task_c" in error
    assert "max()" in error
