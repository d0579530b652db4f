"""``PipelineScheduler``: interval schedules fire, cron is parsed and validated."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import DataflowPipeline, Pipeline, PipelineScheduler, PipelineTrackingManager
from taskiq_flow.scheduling import RUN_PIPELINE_TASK, next_fire_times, validate_cron
from tests.tracking.flow_tasks import df_double, df_total, double

DEADLINE = 8.0


async def _until(condition: object, event: asyncio.Event) -> None:
    async with asyncio.timeout(DEADLINE):
        while not condition():  # type: ignore[operator]
            await event.wait()
            event.clear()


async def test_an_interval_schedule_fires_repeatedly_and_runs_are_tracked(
    broker: InMemoryBroker,
) -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    finished = asyncio.Event()
    runs: list[str] = []

    class Done:
        def on_pipeline_complete(self, pipeline_id: str, status: object) -> None:
            runs.append(pipeline_id)
            finished.set()

    tracking.add_listener(Done())
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    scheduler = PipelineScheduler(broker)
    schedule_id = scheduler.schedule(
        pipeline, interval_seconds=1, kwargs={"data": 21}, label="nightly_double"
    )
    assert [s.schedule_id for s in await scheduler.list_schedules()] == [schedule_id]
    await scheduler.start()
    try:
        await _until(lambda: len(runs) >= 2, finished)
    finally:
        await scheduler.stop()
    assert len(set(runs)) == len(runs)  # every firing is a run of its own
    for run in runs[:2]:
        status = await tracking.get_status(run)
        assert status is not None
        assert status.status == "COMPLETED"
        assert status.result == 42

    assert await scheduler.cancel(schedule_id) is True
    assert await scheduler.cancel(schedule_id) is False
    assert await scheduler.list_schedules() == []


async def test_schedule_at_runs_a_function_and_cron_next_fire_times(
    broker: InMemoryBroker,
) -> None:
    calls = asyncio.Event()
    seen: list[str] = []

    async def cleanup_old_trackings() -> None:
        seen.append("cleaned")
        calls.set()

    scheduler = PipelineScheduler(broker)
    cron_id = scheduler.schedule_at(cleanup_old_trackings, run_at="0 3 * * *")
    (schedule,) = [s for s in await scheduler.list_schedules() if s.schedule_id == cron_id]
    assert schedule.cron == "0 3 * * *"
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert next_fire_times("0 3 * * *", 2, base) == [
        datetime(2026, 1, 2, 3, 0, tzinfo=UTC),
        datetime(2026, 1, 3, 3, 0, tzinfo=UTC),
    ]
    assert next_fire_times("*/15 * * * *", 1, base) == [datetime(2026, 1, 1, 12, 15, tzinfo=UTC)]

    # A one-off at a time already due fires once and is removed.
    scheduler.schedule_at(cleanup_old_trackings, run_at=datetime.now(UTC))
    await scheduler.start()
    try:
        await _until(lambda: bool(seen), calls)
    finally:
        await scheduler.stop()
    assert seen == ["cleaned"]
    assert [s.schedule_id for s in await scheduler.list_schedules()] == [cron_id]


@pytest.mark.parametrize("cron", ["61 * * * *", "not a cron", "* * *", ""])
async def test_an_invalid_cron_is_rejected_when_scheduled(
    broker: InMemoryBroker, cron: str
) -> None:
    scheduler = PipelineScheduler(broker)
    pipeline = Pipeline(broker).call_next(double)
    with pytest.raises(ValueError, match="invalid cron"):
        scheduler.schedule(pipeline, cron=cron)
    with pytest.raises(ValueError, match="invalid cron"):
        scheduler.schedule_at(lambda: None, run_at=cron)
    with pytest.raises(ValueError, match="invalid cron"):
        DataflowPipeline(broker).schedule_with_cron(cron)
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.schedule(pipeline)
    assert await scheduler.list_schedules() == []
    assert validate_cron("0 3 * * *") == "0 3 * * *"


async def test_dataflow_schedule_with_cron_and_labels(broker: InMemoryBroker) -> None:
    pipeline = DataflowPipeline(broker, name="totals")
    pipeline.add_dataflow_task(df_double).add_dataflow_task(df_total)
    schedule_id = pipeline.schedule_with_cron("*/5 * * * *", raw=3)
    assert pipeline.scheduler is not None
    (schedule,) = await pipeline.scheduler.list_schedules()
    assert schedule.schedule_id == schedule_id
    assert schedule.cron == "*/5 * * * *"
    assert schedule.task_name == RUN_PIPELINE_TASK
    assert schedule.kwargs == {"pipeline_key": "totals", "kwargs": {"raw": 3}}

    task_name = pipeline.schedule_with_labels(interval_seconds=30, raw=5)
    task = broker.find_task(task_name)
    assert task is not None
    assert task.labels["schedule"] == [{"kwargs": {"raw": 5}, "interval": 30}]
    labelled = [s for s in await PipelineScheduler(broker).list_schedules() if s.interval]
    assert [(s.task_name, s.interval) for s in labelled] == [(task_name, 30)]
    # The labelled task starts the pipeline when sent (here: called directly).
    run_id = await task.original_func(**task.labels["schedule"][0]["kwargs"])
    status_outputs = pipeline.get_execution_report()
    assert status_outputs.pipeline_id == run_id
    assert status_outputs.status == "Succeeded"


async def test_schedules_in_redis_are_shared(broker: InMemoryBroker, redis_url: str) -> None:
    pipeline = Pipeline(broker).call_next(double)
    first = PipelineScheduler(broker, redis_url=redis_url)
    schedule_id = first.schedule(pipeline, cron="0 * * * *", kwargs={"data": 1}, label="hourly")
    await first.flush()
    second = PipelineScheduler(broker, redis_url=redis_url)
    (schedule,) = [s for s in await second.list_schedules() if s.cron]
    assert schedule.schedule_id == schedule_id
    assert schedule.kwargs == {"pipeline_key": "hourly", "kwargs": {"data": 1}}
    assert await second.cancel(schedule_id) is True
    assert [s for s in await first.list_schedules() if s.cron] == []
    await first.stop()
    await second.stop()
