"""Redis tracking: shared between processes, TTLs, indexes, and Redis going away."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from taskiq import InMemoryBroker

from taskiq_flow import (
    InMemoryPipelineStorage,
    Pipeline,
    PipelineStatus,
    PipelineTrackingManager,
    RedisPipelineStorage,
    StepStatus,
)
from tests.tracking.flow_tasks import add_one, double, explode, identity
from tests.tracking.worker_app import QUEUE_ENV, URL_ENV, make_broker

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis_client = aioredis.Redis.from_url(redis_url)
    yield redis_client
    await redis_client.aclose()


async def test_another_process_reads_what_one_process_recorded(
    redis_url: str, client: aioredis.Redis
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.tracking.tracked_run",
        redis_url,
        "shared:",
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        out, _ = await process.communicate()
    assert process.returncode == 0
    run_id = out.decode().strip().splitlines()[-1]

    tracking = PipelineTrackingManager().with_storage(
        RedisPipelineStorage(client, key_prefix="shared:")
    )
    status = await tracking.get_status(run_id)
    assert status is not None
    assert status.status == "COMPLETED"
    assert status.result == 21
    assert [(s.step_name, s.status, s.result) for s in status.steps] == [
        ("double", "COMPLETED", 20),
        ("add_one", "COMPLETED", 21),
    ]
    assert [s.pipeline_id for s in await tracking.list_pipelines("COMPLETED")] == [run_id]
    # Another prefix is another store.
    other = PipelineTrackingManager().with_storage(RedisPipelineStorage(client, key_prefix="x:"))
    assert await other.get_status(run_id) is None


@pytest.fixture
async def worker(redis_url: str) -> AsyncIterator[str]:
    """A real ``taskiq worker`` process on a queue of its own; yields the queue."""
    queue = f"tracking-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskiq",
        "worker",
        "tests.tracking.worker_app:broker",
        "tests.tracking.flow_tasks",
        "--workers",
        "1",
        "--log-level",
        "WARNING",
        "--shutdown-timeout",
        "2",
        cwd=REPO_ROOT,
        env={**os.environ, URL_ENV: redis_url, QUEUE_ENV: queue},
        start_new_session=True,
    )
    try:
        yield queue
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(3):
                await process.wait()
        except TimeoutError:  # a stream worker may hang on its blocking read
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def test_steps_on_a_worker_process_are_recorded_into_redis(
    redis_url: str, client: aioredis.Redis, worker: str
) -> None:
    broker = make_broker(redis_url, worker)
    await broker.startup()
    try:
        tracking = PipelineTrackingManager().with_auto_storage(broker, key_prefix="w:")
        events: list[str] = []
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe("w:events")
        pipeline = (
            Pipeline(broker).map(double).map(add_one).call_next(identity).with_tracking(tracking)
        )
        task = await pipeline.kiq([1, 2])
        result = await task.wait_result(timeout=DEADLINE)
        assert result.return_value == [3, 5]

        status = await tracking.get_status(pipeline.pipeline_id)
        assert status is not None
        assert status.status == "COMPLETED"
        assert status.result == [3, 5]
        assert [(s.step_name, s.status) for s in status.steps] == [
            ("double", "COMPLETED"),
            ("add_one", "COMPLETED"),
            ("identity", "COMPLETED"),
        ]
        assert status.steps[1].result == [3, 5]
        assert all(s.duration_ms is not None for s in status.steps)
        assert status.duration_ms is not None

        async with asyncio.timeout(DEADLINE):
            while "pipeline_complete" not in events:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    events.append(__import__("json").loads(message["data"])["type"])
        assert events.count("step_complete") == 3
        await pubsub.aclose()

        failing = Pipeline(broker).call_next(double).call_next(explode).with_tracking(tracking)
        outcome = await (await failing.kiq(1)).wait_result(timeout=DEADLINE, raise_on_error=False)
        assert outcome.is_err
        failed = await tracking.get_status(failing.pipeline_id)
        assert failed is not None
        assert failed.status == "FAILED"
        assert [s.status for s in failed.steps] == ["COMPLETED", "FAILED"]
        assert "cannot handle 2" in (failed.error or "")
        assert {s.pipeline_id for s in await tracking.list_pipelines("FAILED")} == {
            failing.pipeline_id
        }
    finally:
        await broker.shutdown()


async def test_records_expire_after_the_ttl(broker: InMemoryBroker, client: aioredis.Redis) -> None:
    storage = RedisPipelineStorage(client, key_prefix="ttl:", ttl_seconds=1)
    tracking = PipelineTrackingManager().with_storage(storage)
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    await (await pipeline.kiq(1)).wait_result()
    key = storage.run_key(pipeline.pipeline_id)
    assert 0 < await client.pttl(key) <= 1000
    assert await tracking.get_status(pipeline.pipeline_id) is not None
    async with asyncio.timeout(5):  # Redis expires it; poll with a deadline
        while await client.exists(key):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await tracking.get_status(pipeline.pipeline_id) is None
    assert await tracking.list_pipelines() == []
    assert await tracking.list_pipelines("COMPLETED") == []
    # The indexes forgot it too, as it was read.
    assert await client.zcard(storage.time_index) == 0
    assert await client.scard(storage.status_prefix + "COMPLETED") == 0


async def test_runs_older_than_the_ttl_leave_the_index_as_new_ones_arrive(
    client: aioredis.Redis,
) -> None:
    storage = RedisPipelineStorage(client, key_prefix="old:", ttl_seconds=3600)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    await storage.save_status(PipelineStatus(pipeline_id="ancient", started_at=long_ago))
    await storage.save_status(PipelineStatus(pipeline_id="fresh", started_at=datetime.now(UTC)))
    assert [_text(i) for i in await client.zrange(storage.time_index, 0, -1)] == ["fresh"]
    assert not await client.exists(storage.run_key("ancient"))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_writes_only_move_forward(client: aioredis.Redis) -> None:
    storage = RedisPipelineStorage(client, key_prefix="fwd:")
    now = datetime.now(UTC)
    done = PipelineStatus(
        pipeline_id="r",
        status="COMPLETED",
        started_at=now,
        steps=[StepStatus(step_name="a", status="COMPLETED", result=1)],
    )
    stale = PipelineStatus(
        pipeline_id="r",
        status="RUNNING",
        started_at=now,
        steps=[StepStatus(step_name="a", status="RUNNING")],
    )
    await storage.save_status(done)
    await storage.save_status(stale)  # a late batch from another process
    record = await storage.get_status("r")
    assert record is not None
    assert record.status == "COMPLETED"
    assert record.steps[0].status == "COMPLETED"
    assert [s.pipeline_id for s in await storage.list_pipelines("RUNNING")] == []
    assert [s.pipeline_id for s in await storage.list_pipelines("COMPLETED")] == ["r"]


async def test_redis_down_does_not_fail_the_pipeline_and_is_reported_once(
    broker: InMemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1; the client retries as configured by default.
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    storage = RedisPipelineStorage(dead)
    tracking = PipelineTrackingManager(write_timeout=0.5).with_storage(storage)
    with caplog.at_level(logging.DEBUG, logger="taskiq_flow.tracking"):
        for value in range(3):
            pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
            result = await (await pipeline.kiq(value)).wait_result()
            assert result.return_value == value * 2 + 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "tracking storage RedisPipelineStorage is unavailable" in errors[0].getMessage()
    await dead.aclose()


async def test_memory_storage_is_bounded() -> None:
    storage = InMemoryPipelineStorage(max_pipelines=3)
    for i in range(5):
        await storage.save_status(PipelineStatus(pipeline_id=f"p{i}"))
    assert len(storage) == 3
    assert await storage.get_status("p0") is None
    assert await storage.get_status("p4") is not None
    with pytest.raises(ValueError, match="max_pipelines"):
        InMemoryPipelineStorage(max_pipelines=0)


async def test_listeners_here_hear_the_steps_a_worker_process_runs(
    redis_url: str, worker: str
) -> None:
    broker = make_broker(redis_url, worker)
    await broker.startup()
    try:
        tracking = PipelineTrackingManager().with_auto_storage(broker, key_prefix="l:")
        heard: list[tuple[Any, ...]] = []
        finished = asyncio.Event()

        class Listener:
            def on_pipeline_start(self, pipeline_id: str) -> None:
                heard.append(("start", pipeline_id))

            def on_step_start(self, pipeline_id: str, step_name: str) -> None:
                heard.append(("step_start", step_name))

            async def on_step_complete(self, pipeline_id: str, step_name: str, result: Any) -> None:
                heard.append(("step_complete", step_name, result))

            def on_pipeline_error(self, pipeline_id: str, error: str) -> None:
                heard.append(("error", error))

            def on_pipeline_complete(self, pipeline_id: str, status: Any) -> None:
                heard.append(("complete", pipeline_id, status.status, status.result))
                finished.set()

        tracking.add_listener(Listener())
        pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
        task = await pipeline.kiq(4)
        assert (await task.wait_result(timeout=DEADLINE)).return_value == 9
        async with asyncio.timeout(DEADLINE):
            await finished.wait()
        run_id = pipeline.pipeline_id
        assert heard[0] == ("start", run_id)
        assert ("step_start", "double") in heard
        assert ("step_complete", "double", 8) in heard
        assert ("step_complete", "add_one", 9) in heard
        assert heard[-1] == ("complete", run_id, "COMPLETED", 9)
        assert heard.index(("step_complete", "double", 8)) < heard.index(
            ("step_complete", "add_one", 9)
        )
        await tracking.close()
    finally:
        await broker.shutdown()
