"""Every snippet of the tracking guide, on memory storage and on a real Redis."""

from __future__ import annotations

import fnmatch
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import (
    DataflowPipeline,
    InMemoryPipelineStorage,
    Pipeline,
    PipelineTrackingManager,
    RedisPipelineStorage,
)
from taskiq_flow.tracking.models import PipelineStatus, StepStatus
from taskiq_flow.tracking.storage import TrackingStorage
from tests.tracking.flow_tasks import add_one, df_double, df_total, double, explode


async def test_quick_start(broker: InMemoryBroker, tracking: PipelineTrackingManager) -> None:
    pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
    task = await pipeline.kiq(5)
    result = await task.wait_result()
    assert result.return_value == 11

    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "COMPLETED"
    assert len(status.steps) == 2
    assert status.duration_ms is not None
    assert status.duration_ms >= 0
    assert status.pipeline_type == "sequential"
    assert status.result == 11
    assert [s.step_name for s in status.steps] == ["double", "add_one"]
    assert [s.result for s in status.steps] == [10, 11]
    assert all(s.status == "COMPLETED" for s in status.steps)
    assert all(s.duration_ms is not None for s in status.steps)
    assert status.started_at is not None
    assert status.completed_at is not None
    assert status.completed_at >= status.started_at


async def test_auto_storage_picks_memory_for_an_in_memory_broker(broker: InMemoryBroker) -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    assert isinstance(tracking.storage, InMemoryPipelineStorage)


async def test_auto_storage_picks_redis_for_a_redis_broker(redis_url: str) -> None:
    from taskiq_redis import ListQueueBroker

    redis_broker = ListQueueBroker(redis_url)
    tracking = PipelineTrackingManager().with_auto_storage(redis_broker, ttl_seconds=60)
    storage = tracking.storage
    assert isinstance(storage, RedisPipelineStorage)
    assert storage.ttl_seconds == 60
    await storage.save_status(PipelineStatus(pipeline_id="p1", status="RUNNING"))
    assert (await tracking.get_status("p1")) is not None
    await redis_broker.shutdown()


async def test_no_storage_configured_is_a_clear_error(broker: InMemoryBroker) -> None:
    tracking = PipelineTrackingManager()
    with pytest.raises(RuntimeError, match="No tracking storage configured"):
        await tracking.get_status("anything")
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    with pytest.raises(RuntimeError, match="No tracking storage configured"):
        await pipeline.kiq(1)


async def test_status_of_a_failed_pipeline(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    pipeline = Pipeline(broker).call_next(double).call_next(explode).with_tracking(tracking)
    task = await pipeline.kiq(2)
    result = await task.wait_result(raise_on_error=False)
    assert result.is_err

    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "FAILED"
    assert status.error is not None
    assert "cannot handle 4" in status.error
    assert [s.status for s in status.steps] == ["COMPLETED", "FAILED"]
    assert "ValueError" in (status.steps[1].error or "")
    assert status.result is None


async def test_dataflow_pipelines_are_tracked(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    pipeline = DataflowPipeline(broker).with_tracking(tracking)
    pipeline.add_dataflow_task(df_double).add_dataflow_task(df_total)
    outputs = await pipeline.kiq_dataflow(raw=3)
    assert outputs == {"doubled": 6, "total": 9}
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.pipeline_type == "dataflow"
    assert status.status == "COMPLETED"
    assert {s.step_name: s.result for s in status.steps} == {"df_double": 6, "df_total": 9}


async def test_list_filter_and_history(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    ids = []
    for value in range(3):
        ok = Pipeline(broker).call_next(double).with_tracking(tracking)
        await (await ok.kiq(value)).wait_result()
        ids.append(ok.pipeline_id)
    bad = Pipeline(broker).call_next(explode).with_tracking(tracking)
    await (await bad.kiq(1)).wait_result(raise_on_error=False)

    all_statuses = await tracking.list_pipelines()
    assert {s.pipeline_id for s in all_statuses} == {*ids, bad.pipeline_id}
    failed = await tracking.list_pipelines(status_filter="FAILED")
    assert [s.pipeline_id for s in failed] == [bad.pipeline_id]
    completed = await tracking.list_pipelines(status_filter="COMPLETED")
    assert {s.pipeline_id for s in completed} == set(ids)
    assert await tracking.list_pipelines(status_filter="RUNNING") == []

    history = await tracking.get_history(limit=2)
    assert [s.pipeline_id for s in history] == [bad.pipeline_id, ids[2]]  # newest first
    week_ago = datetime.now() - timedelta(days=7)
    recent = await tracking.get_history(since=week_ago)
    assert len(recent) == 4
    assert await tracking.get_history(since=datetime.now(UTC) + timedelta(minutes=1)) == []


async def test_cleanup_and_delete(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    await (await pipeline.kiq(1)).wait_result()
    # Within the default 7-day TTL of Redis records, but older than the cleanup bound.
    old_start = datetime.now(UTC) - timedelta(days=3)
    old = PipelineStatus(
        pipeline_id="old-run", status="COMPLETED", started_at=old_start, duration_ms=5.0
    )
    await tracking.storage.save_status(old)

    deleted = await tracking.cleanup_older_than(days=2)
    assert deleted == 1
    assert await tracking.get_status("old-run") is None
    assert await tracking.get_status(pipeline.pipeline_id) is not None

    await tracking.delete_pipeline(pipeline.pipeline_id)
    assert await tracking.get_status(pipeline.pipeline_id) is None
    assert await tracking.list_pipelines() == []


class PostgresLikeStorage(TrackingStorage):
    """The guide's custom storage: only the four protocol methods."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def save_status(self, status: PipelineStatus) -> None:
        self.rows[status.pipeline_id] = status.model_dump(mode="json")

    async def get_status(self, pipeline_id: str) -> PipelineStatus | None:
        row = self.rows.get(pipeline_id)
        return None if row is None else PipelineStatus.model_validate(row)

    async def list_pipelines(self, status_filter: str | None = None) -> list[PipelineStatus]:
        rows = [PipelineStatus.model_validate(r) for r in self.rows.values()]
        return [r for r in rows if status_filter is None or r.status == status_filter]

    async def delete_pipeline(self, pipeline_id: str) -> None:
        self.rows.pop(pipeline_id, None)


async def test_custom_storage(broker: InMemoryBroker) -> None:
    storage = PostgresLikeStorage()
    tracking = PipelineTrackingManager().with_storage(storage)
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    await (await pipeline.kiq(4)).wait_result()
    assert storage.rows[pipeline.pipeline_id]["status"] == "COMPLETED"
    assert (await tracking.get_history(limit=1))[0].pipeline_id == pipeline.pipeline_id
    old = PipelineStatus(
        pipeline_id="old", status="FAILED", started_at=datetime.now(UTC) - timedelta(days=9)
    )
    await storage.save_status(old)
    assert await tracking.cleanup_older_than(days=7) == 1
    assert set(storage.rows) == {pipeline.pipeline_id}


async def test_metrics(broker: InMemoryBroker, tracking: PipelineTrackingManager) -> None:
    for value in range(3):
        pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
        await (await pipeline.kiq(value)).wait_result()
    bad = Pipeline(broker).call_next(explode).with_tracking(tracking)
    await (await bad.kiq(1)).wait_result(raise_on_error=False)

    stats = await tracking.get_metrics(days=7)
    assert stats.total_pipelines == 4
    assert stats.completed == 3
    assert stats.failed == 1
    assert stats.success_rate == pytest.approx(0.75)
    assert f"{stats.success_rate:.1%}" == "75.0%"
    assert stats.avg_duration_ms > 0
    assert stats.failure_reasons == {"ValueError": 1}
    assert stats.throughput_per_minute > 0
    assert set(stats.avg_step_duration_ms) == {"double", "add_one"}
    assert stats.longest_steps
    assert stats.longest_steps[0][1] >= stats.longest_steps[-1][1]
    assert sum(stats.busy_hours.values()) == 4
    assert (await tracking.get_metrics(days=0)).total_pipelines == 0


class Recorder:
    """The guide's listener, recording instead of notifying."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def on_pipeline_start(self, pipeline_id: str) -> None:
        self.calls.append(("start", pipeline_id))

    async def on_step_start(self, pipeline_id: str, step_name: str) -> None:
        self.calls.append(("step_start", step_name))

    def on_step_complete(self, pipeline_id: str, step_name: str, result: Any) -> None:
        self.calls.append(("step_complete", step_name, result))

    async def on_pipeline_complete(self, pipeline_id: str, status: PipelineStatus) -> None:
        self.calls.append(("complete", pipeline_id, status.status))

    async def on_pipeline_error(self, pipeline_id: str, error: str) -> None:
        self.calls.append(("error", pipeline_id, error))


async def test_event_listeners(broker: InMemoryBroker, tracking: PipelineTrackingManager) -> None:
    listener = Recorder()
    tracking.add_listener(listener)
    pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
    await (await pipeline.kiq(1)).wait_result()
    run = pipeline.pipeline_id
    assert listener.calls == [
        ("start", run),
        ("step_start", "double"),
        ("step_complete", "double", 2),
        ("step_start", "add_one"),
        ("step_complete", "add_one", 3),
        ("complete", run, "COMPLETED"),
    ]

    listener.calls.clear()
    bad = Pipeline(broker).call_next(explode).with_tracking(tracking)
    await (await bad.kiq(1)).wait_result(raise_on_error=False)
    kinds = [c[0] for c in listener.calls]
    assert kinds == ["start", "step_start", "error", "complete"]
    assert "cannot handle 1" in listener.calls[2][2]
    assert listener.calls[3] == ("complete", bad.pipeline_id, "FAILED")


async def test_a_listener_with_some_methods_only(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    seen: list[str] = []

    class OnlyComplete:
        def on_pipeline_complete(self, pipeline_id: str, status: PipelineStatus) -> None:
            seen.append(status.status)

    tracking.add_listener(OnlyComplete())
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    await (await pipeline.kiq(1)).wait_result()
    assert seen == ["COMPLETED"]
    with pytest.raises(TypeError, match="listener"):
        tracking.add_listener(object())


async def test_a_failing_listener_is_logged_and_the_pipeline_goes_on(
    broker: InMemoryBroker,
    tracking: PipelineTrackingManager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        async def on_step_complete(self, pipeline_id: str, step_name: str, result: Any) -> None:
            raise RuntimeError("listener bug")

    after = Recorder()
    tracking.add_listener(Broken())
    tracking.add_listener(after)
    pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
    with caplog.at_level(logging.ERROR, logger="taskiq_flow.tracking"):
        result = await (await pipeline.kiq(1)).wait_result()
    assert result.return_value == 3
    assert "listener bug" in caplog.text
    assert ("complete", pipeline.pipeline_id, "COMPLETED") in after.calls
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    assert status.status == "COMPLETED"


async def test_console_output_and_json_export(
    broker: InMemoryBroker, tracking: PipelineTrackingManager, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
    await (await pipeline.kiq(1)).wait_result()
    status = await tracking.get_status(pipeline.pipeline_id)
    assert status is not None
    print(f"\n{'=' * 60}")
    print(f"Pipeline: {status.pipeline_id}")
    print(f"Status: {status.status}")
    print(f"Duration: {status.duration_ms:.0f}ms")
    print("Steps:")
    for step in status.steps:
        assert step.duration_ms is not None
        bar = "█" * int(step.duration_ms / 10)
        print(f"  {step.step_name:<30} {bar} {step.duration_ms:.0f}ms")
    out = capsys.readouterr().out
    assert f"Pipeline: {pipeline.pipeline_id}" in out
    assert "Status: COMPLETED" in out
    assert "  double" in out
    assert "  add_one" in out

    status_dict = status.model_dump(mode="json", exclude={"result"})
    text = json.dumps(status_dict, indent=2, default=str)
    loaded = json.loads(text)
    assert "result" not in loaded
    assert loaded["status"] == "COMPLETED"
    assert loaded["steps"][0]["step_name"] == "double"
    assert isinstance(loaded["started_at"], str)


async def test_limit_history_size_recipe(tracking: PipelineTrackingManager) -> None:
    start = datetime.now(UTC)
    for i in range(5):
        await tracking.storage.save_status(
            PipelineStatus(
                pipeline_id=f"etl_{i}", status="COMPLETED", started_at=start + timedelta(seconds=i)
            )
        )
    await tracking.storage.save_status(PipelineStatus(pipeline_id="other", started_at=start))
    keep = 2
    old = await tracking.list_pipelines()
    matching = [p for p in old if fnmatch.fnmatch(p.pipeline_id, "etl_*")]
    assert len(matching) == 5
    for old_pipeline in matching[keep:]:  # newest first: drop all but the newest `keep`
        await tracking.delete_pipeline(old_pipeline.pipeline_id)
    left = {p.pipeline_id for p in await tracking.list_pipelines()}
    assert left == {"etl_4", "etl_3", "other"}


async def test_tracker_health_check(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    async def tracking_health() -> dict[str, str]:
        try:
            test_pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
            await test_pipeline.kiq(1)
            return {"status": "healthy"}
        except Exception as e:
            return {"status": "unhealthy", "error": str(e)}

    assert await tracking_health() == {"status": "healthy"}
    empty = PipelineTrackingManager()

    async def unhealthy() -> dict[str, str]:
        try:
            await Pipeline(broker).call_next(double).with_tracking(empty).kiq(1)
            return {"status": "healthy"}
        except Exception as e:
            return {"status": "unhealthy", "error": str(e)}

    assert (await unhealthy())["status"] == "unhealthy"


def test_models_have_the_guides_fields() -> None:
    assert list(PipelineStatus.model_fields) == [
        "pipeline_id",
        "status",
        "pipeline_type",
        "started_at",
        "completed_at",
        "duration_ms",
        "steps",
        "result",
        "error",
    ]
    assert list(StepStatus.model_fields) == [
        "step_name",
        "status",
        "started_at",
        "completed_at",
        "duration_ms",
        "result",
        "error",
    ]


async def test_a_listener_may_query_the_manager(
    broker: InMemoryBroker, tracking: PipelineTrackingManager
) -> None:
    seen: list[str | None] = []

    class Alerting:
        async def on_pipeline_complete(self, pipeline_id: str, status: PipelineStatus) -> None:
            record = await tracking.get_status(pipeline_id)  # the record is already saved
            seen.append(None if record is None else record.status)
            seen.append(str(len(await tracking.list_pipelines())))

    tracking.add_listener(Alerting())
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    await (await pipeline.kiq(1)).wait_result()
    assert seen == ["COMPLETED", "1"]
