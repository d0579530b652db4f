"""``ExecutionEngine`` reports to tracking; hooks receive a run's events; state changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import (
    DAG,
    DataflowPipeline,
    ErrorHandlingMode,
    ExecutionEngine,
    HookManager,
    Pipeline,
    PipelineError,
    PipelineTrackingManager,
    TrackingEventBroadcaster,
)
from taskiq_flow.dataflow.builder import node_for_task
from taskiq_flow.tracking import RunObserver
from tests.tracking.flow_tasks import add_one, df_double, df_explode, df_slow, df_total, double


async def test_the_engine_reports_each_step(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    assert isinstance(tracking, RunObserver)
    dag = DAG([node_for_task(df_double), node_for_task(df_total)])
    engine = ExecutionEngine(broker, dag, observer=tracking)
    outputs = await engine.execute({"raw": 5}, pipeline_id="engine-run")
    assert outputs == {"doubled": 10, "total": 15}
    status = await tracking.get_status("engine-run")
    assert status is not None
    assert status.status == "COMPLETED"
    assert status.pipeline_type == "dataflow"
    assert [(s.step_name, s.status, s.result) for s in status.steps] == [
        ("df_double", "COMPLETED", 10),
        ("df_total", "COMPLETED", 15),
    ]


async def test_a_failed_dataflow_step_fails_the_run(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    pipeline = DataflowPipeline(broker).with_tracking(tracking)
    pipeline.add_dataflow_task(df_double).add_dataflow_task(df_explode)
    with pytest.raises(PipelineError):
        await pipeline.kiq_dataflow(raw=1)
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "FAILED"
    assert "dataflow step failed" in (status.error or "")
    steps = {s.step_name: s for s in status.steps}
    assert steps["df_double"].status == "COMPLETED"
    assert steps["df_explode"].status == "FAILED"
    assert "RuntimeError" in (steps["df_explode"].error or "")

    lenient = DataflowPipeline(broker, error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR)
    lenient.with_tracking(tracking).add_dataflow_task(df_double).add_dataflow_task(df_explode)
    assert (await lenient.kiq_dataflow(raw=1))["doubled"] == 2
    record = await tracking.get_status(lenient.pipeline_id)
    assert record is not None
    assert record.status == "FAILED"  # outputs are returned, but a step failed


async def test_a_cancelled_run_is_cancelled(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    started = asyncio.Event()

    class Started:
        def on_step_start(self, pipeline_id: str, step_name: str) -> None:
            started.set()

    tracking.add_listener(Started())
    pipeline = DataflowPipeline(broker).with_tracking(tracking).add_dataflow_task(df_slow)
    run = asyncio.create_task(pipeline.kiq_dataflow(raw=1))
    async with asyncio.timeout(5):
        await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "CANCELLED"
    assert status.steps[0].status == "FAILED"
    assert status.steps[0].error == "run ended: CANCELLED"


async def test_every_run_goes_pending_running_then_finished(broker: InMemoryBroker) -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    broadcaster = TrackingEventBroadcaster(tracking)
    tracking.add_listener(broadcaster.on_status_update)
    with broadcaster.subscribe() as subscription:
        pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
        await (await pipeline.kiq(1)).wait_result()
        states = []
        async with asyncio.timeout(5):
            while not states or states[-1][0] != "pipeline_complete":
                event = await subscription.get()
                states.append((event["type"], event["status"]))
    assert states == [
        ("pipeline_pending", "PENDING"),
        ("pipeline_start", "RUNNING"),
        ("step_start", "RUNNING"),
        ("step_complete", "COMPLETED"),
        ("pipeline_complete", "COMPLETED"),
    ]
    assert broadcaster.subscriber_count == 0


async def test_hooks_alone_on_a_sequential_pipeline(broker: InMemoryBroker) -> None:
    hooks = HookManager()
    seen: list[tuple[str, Any]] = []

    @hooks.on("step_complete")
    async def step_done(pipeline_id: str, step_name: str, result: Any) -> None:
        seen.append((step_name, result))

    hooks.register("pipeline_complete", lambda pid, status: seen.append(("end", status.status)))
    hooks.register("step_start", lambda pid, name: 1 / 0)  # logged, harmless
    with pytest.raises(ValueError, match="unknown hook event"):
        hooks.register("nope", print)

    pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_hooks(hooks)
    assert (await (await pipeline.kiq(2)).wait_result()).return_value == 5
    assert seen == [("double", 4), ("add_one", 5), ("end", "COMPLETED")]
