"""Dataflow pipelines run to the right outputs, in-process and on worker processes."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from taskiq import AsyncBroker

from taskiq_flow import DataflowPipeline, ErrorHandlingMode, PipelineError
from tests.integration import flow_tasks as ft

pytestmark = pytest.mark.timeout(30)


async def test_a_diamond_joins_both_branches(flow_broker: AsyncBroker) -> None:
    pipeline = DataflowPipeline.from_tasks(flow_broker, [ft.load, ft.left, ft.right, ft.join])

    outputs = await pipeline.kiq_dataflow(seed=10)

    assert outputs == {
        "loaded": [10, 11, 12, 13, 14],
        "left": 60,
        "right": 14,
        "joined": {"left": 60, "right": 14},
    }
    assert pipeline.get_execution_report().success_rate == 1.0


async def test_fan_out_then_fan_in(flow_broker: AsyncBroker) -> None:
    pipeline = DataflowPipeline.from_tasks(
        flow_broker, [ft.numbers, ft.total, ft.squares, ft.evens, ft.odds, ft.summary]
    )

    outputs = await pipeline.kiq_dataflow(count=10)

    assert outputs["summary"] == {"total": 55, "squares": 385, "evens": 5, "odds": 5}


async def test_a_flaky_step_succeeds_on_its_third_attempt(
    flow_broker: AsyncBroker, flow_redis: str
) -> None:
    key = f"attempts:{uuid.uuid4().hex}"
    pipeline = DataflowPipeline.from_tasks(flow_broker, [ft.flaky])

    outputs = await pipeline.kiq_dataflow(attempt_key=key, fail_times=2)

    assert outputs == {"flaky_value": 3}
    assert pipeline.get_execution_report().steps["flaky"].attempts == 3
    client = aioredis.Redis.from_url(flow_redis)
    try:
        assert int(await client.get(key) or 0) == 3  # counted wherever the attempts ran
    finally:
        await client.aclose()


async def test_fail_fast_raises_with_what_succeeded_before(flow_broker: AsyncBroker) -> None:
    pipeline = DataflowPipeline.from_tasks(
        flow_broker,
        [ft.load, ft.always_fails, ft.after_doomed],
        error_mode=ErrorHandlingMode.FAIL_FAST,
    )

    with pytest.raises(PipelineError) as raised:
        await pipeline.kiq_dataflow(seed=1)

    error = raised.value
    assert error.failed_node == "always_fails"
    assert error.partial_results == {"loaded": [1, 2, 3, 4, 5]}
    assert error.errors["always_fails"] == "ValueError: cannot handle 5 numbers"
    steps = pipeline.get_execution_report().steps
    assert steps["after_doomed"].status != "Succeeded"
    assert steps["after_doomed"].attempts == 0  # never sent


async def test_continue_on_error_finishes_independent_branches(
    flow_broker: AsyncBroker,
) -> None:
    pipeline = DataflowPipeline.from_tasks(
        flow_broker,
        [ft.load, ft.left, ft.right, ft.join, ft.always_fails, ft.after_doomed],
        error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR,
    )

    outputs = await pipeline.kiq_dataflow(seed=0)

    assert outputs == {
        "loaded": [0, 1, 2, 3, 4],
        "left": 10,
        "right": 4,
        "joined": {"left": 10, "right": 4},
    }
    report = pipeline.get_execution_report()
    assert report.status == "Failed"
    assert report.steps["always_fails"].status == "Failed"
    assert report.steps["after_doomed"].status == "Skipped"
    assert report.steps["join"].status == "Succeeded"
