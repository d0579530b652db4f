"""The dashboard API over real HTTP and WebSocket connections, and its CLI command."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from taskiq import InMemoryBroker

from taskiq_flow import (
    DataflowPipeline,
    HookManager,
    Pipeline,
    PipelineTrackingManager,
    RedisPipelineStorage,
    TrackingEventBroadcaster,
)
from taskiq_flow.dashboard import create_app
from tests.tracking.flow_tasks import add_one, df_double, df_total, double

DEADLINE = 10.0


async def _events_until_complete(
    ws: aiohttp.ClientWebSocketResponse, pipeline_id: str | None = None
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(DEADLINE):
        while True:
            event = await ws.receive_json()
            if pipeline_id is not None:
                assert event["pipeline_id"] == pipeline_id
            events.append(event)
            if event["type"] == "pipeline_complete":
                return events


@pytest.fixture
async def redis_tracking(redis_url: str) -> AsyncIterator[PipelineTrackingManager]:
    client = aioredis.Redis.from_url(redis_url)
    manager = PipelineTrackingManager().with_storage(RedisPipelineStorage(client))
    yield manager
    await manager.close()
    await client.aclose()


async def test_rest_and_live_events_across_processes_via_redis(
    broker: InMemoryBroker, redis_url: str, redis_tracking: PipelineTrackingManager
) -> None:
    # The dashboard has its own manager and client, as `taskiq-flow dashboard` would.
    dashboard_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    app = create_app(PipelineTrackingManager(RedisPipelineStorage(dashboard_client)))
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/ws")
        pipeline = (
            Pipeline(broker).call_next(double).call_next(add_one).with_tracking(redis_tracking)
        )
        await (await pipeline.kiq(2)).wait_result()
        events = await _events_until_complete(ws)
        run = pipeline.pipeline_id
        assert [(e["type"], e.get("step_name")) for e in events] == [
            ("pipeline_pending", None),
            ("pipeline_start", None),
            ("step_start", "double"),
            ("step_complete", "double"),
            ("step_start", "add_one"),
            ("step_complete", "add_one"),
            ("pipeline_complete", None),
        ]
        assert {e["pipeline_id"] for e in events} == {run}
        assert events[-1]["status"] == "COMPLETED"
        await ws.close()

        response = await client.get("/api/pipelines")
        assert response.status == 200
        listed = await response.json()
        assert [p["pipeline_id"] for p in listed] == [run]

        response = await client.get(f"/api/pipelines/{run}/status")
        assert response.status == 200
        body = await response.json()
        assert body["status"] == "COMPLETED"
        assert [s["step_name"] for s in body["steps"]] == ["double", "add_one"]
        assert body["result"] == 5

        assert (await client.get("/api/pipelines?status=FAILED")).status == 200
        assert await (await client.get("/api/pipelines?status=FAILED")).json() == []
        assert (await client.get("/api/pipelines/nope/status")).status == 404
        metrics = await (await client.get("/api/metrics?days=1")).json()
        assert metrics["total_pipelines"] == 1
        assert metrics["success_rate"] == 1.0
    await dashboard_client.aclose()


async def test_guide_section_6_in_process_broadcast(broker: InMemoryBroker) -> None:
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    hook_manager = HookManager()
    broadcaster = TrackingEventBroadcaster(tracking, hook_manager)
    tracking.add_listener(broadcaster.on_status_update)
    hooked: list[tuple[str, Any]] = []
    hook_manager.register("step_complete", lambda pid, name, result: hooked.append((name, result)))
    updates: list[str] = []
    hook_manager.register("status_update", lambda event: updates.append(event["type"]))

    pipeline = DataflowPipeline(broker).with_hooks(hook_manager).with_tracking(tracking)
    pipeline.add_dataflow_task(df_double).add_dataflow_task(df_total)

    app = create_app(tracking, broadcaster)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect(f"/ws?pipeline_id={pipeline.pipeline_id}")
        other = await client.ws_connect("/ws?pipeline_id=someone-else")
        assert await pipeline.kiq_dataflow(raw=1) == {"doubled": 2, "total": 3}
        events = await _events_until_complete(ws, pipeline.pipeline_id)
        steps = [(e["type"], e.get("step_name")) for e in events if "step" in e["type"]]
        assert steps == [
            ("step_start", "df_double"),
            ("step_complete", "df_double"),
            ("step_start", "df_total"),
            ("step_complete", "df_total"),
        ]
        with pytest.raises(TimeoutError):  # filtered out: nothing for another pipeline
            async with asyncio.timeout(0.2):
                await other.receive_json()
        await ws.close()
        await other.close()
    assert hooked == [("df_double", 2), ("df_total", 3)]
    assert updates[-1] == "pipeline_complete"
    # Closed sockets unsubscribe.
    async with asyncio.timeout(DEADLINE):
        while broadcaster.subscriber_count:  # noqa: ASYNC110 - a poll with a deadline
            await asyncio.sleep(0.01)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_dashboard_command_serves_the_api(
    broker: InMemoryBroker, redis_url: str, redis_tracking: PipelineTrackingManager
) -> None:
    pipeline = Pipeline(broker).call_next(double).with_tracking(redis_tracking)
    await (await pipeline.kiq(4)).wait_result()
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskiq_flow.cli.main",
        "dashboard",
        "--redis",
        redis_url,
        "--port",
        str(port),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            body = None
            async with asyncio.timeout(DEADLINE):  # poll until it listens, with a deadline
                while body is None:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/api/pipelines") as r:
                            body = await r.json()
                    except aiohttp.ClientConnectionError:
                        assert process.returncode is None, "the dashboard exited"
                        await asyncio.sleep(0.05)
            assert [p["pipeline_id"] for p in body] == [pipeline.pipeline_id]
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                second = Pipeline(broker).call_next(double).with_tracking(redis_tracking)
                # The relay subscribed before serving, so this run's events all arrive.
                await (await second.kiq(1)).wait_result()
                events = await _events_until_complete(ws, second.pipeline_id)
                assert ("step_complete", "double") in [
                    (e["type"], e.get("step_name")) for e in events
                ]
    finally:
        process.terminate()
        async with asyncio.timeout(DEADLINE):
            await process.wait()
