"""On Redis the driver hears of completions from the run's event stream, not by polling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from taskiq_flow import DataflowPipeline
from taskiq_flow.completions import EVENTS_PREFIX
from tests.integration import flow_tasks as ft
from tests.integration.worker_app import make_broker
from tests.workers import WorkerProcesses

pytestmark = pytest.mark.timeout(30)

CHAIN_LENGTH = 20


def chain(broker: Any, length: int) -> DataflowPipeline:
    """``v0 → step1 → … → step<length>``, each adding one."""
    pipeline = DataflowPipeline(broker)
    for i in range(1, length + 1):
        pipeline.add_dataflow_task(
            ft.increment, output=f"v{i}", inputs=[f"v{i - 1}"], name=f"step{i}"
        )
    return pipeline


def counting(calls: list[str], name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return await method(*args, **kwargs)

    return wrapper


async def test_a_chain_hears_every_step_from_the_event_stream(
    flow_redis: str, worker_processes: WorkerProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker(flow_redis)
    backend_calls: list[str] = []
    for name in ("is_result_ready", "get_result"):
        monkeypatch.setattr(
            broker.result_backend,
            name,
            counting(backend_calls, name, getattr(broker.result_backend, name)),
        )
    admin = aioredis.Redis.from_url(flow_redis)
    await broker.startup()
    try:
        await admin.config_resetstat()
        pipeline = chain(broker, CHAIN_LENGTH)

        outputs = await pipeline.kiq_dataflow(v0=0)

        stats = await admin.info("commandstats")
        assert outputs[f"v{CHAIN_LENGTH}"] == CHAIN_LENGTH
        # Each step's completion was read from the stream (only the driver uses XREAD;
        # workers use XREADGROUP) and the result backend was never asked.
        assert stats["cmdstat_xread"]["calls"] >= CHAIN_LENGTH
        assert backend_calls == []
        # ... nor written to: the driver had every result from the stream.
        step_ids = [f"{pipeline.pipeline_id}.step{i}.1" for i in range(1, CHAIN_LENGTH + 1)]
        assert await admin.exists(*step_ids) == 0
        # The run's stream is gone once the run is over.
        assert await admin.exists(EVENTS_PREFIX + pipeline.pipeline_id) == 0
    finally:
        await broker.shutdown()
        await admin.aclose()
