"""What Redis tracking costs a sequential chain.

Run it from anywhere (it starts its own redis-server and one worker process)::

    /work/venv/bin/python benchmarks/tracking.py [--repeat 15]

A 20-step chain of ``add_one`` on a ``FlowRedisStreamBroker`` with a separate
``taskiq worker`` process (``tests/tracking/worker_app.py``), end to end
(``kiq`` + ``wait_result``), untracked and tracked with ``RedisPipelineStorage`` on the
same Redis (every step and the run recorded by the worker, in background batches).
Tracked and untracked runs alternate; each figure is the median of ``--repeat`` runs,
after warm-up runs. Prints the per-step time of both and their ratio (target <= 1.15x).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: import from the repository root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import redis.asyncio as aioredis

from benchmarks._common import (
    Figure,
    Target,
    alternate,
    format_table,
    running_redis,
    running_workers,
)
from taskiq_flow import Pipeline, PipelineTrackingManager, RedisPipelineStorage
from tests.tracking.flow_tasks import add_one
from tests.tracking.worker_app import QUEUE_ENV, URL_ENV, make_broker

SUITE = "tracking"
CHAIN_LENGTH = 20
WARMUP = 3
QUEUE = "taskiq-tracking-bench"
WORKER = ("tests.tracking.worker_app:broker", ["tests.tracking.flow_tasks"])


async def _chain_seconds(pipeline: Pipeline) -> float:
    started = time.perf_counter()
    result = await (await pipeline.kiq(0)).wait_result(timeout=60)
    elapsed = time.perf_counter() - started
    assert result.return_value == CHAIN_LENGTH, result
    return elapsed


def _chain(broker: object, tracking: PipelineTrackingManager | None) -> Pipeline:
    pipeline = Pipeline(broker)  # type: ignore[arg-type]
    for _ in range(CHAIN_LENGTH):
        pipeline.call_next(add_one)
    return pipeline if tracking is None else pipeline.with_tracking(tracking)


async def bench(url: str, repeat: int) -> Figure:
    broker = make_broker(url, QUEUE)
    await broker.startup()
    client = aioredis.Redis.from_url(url)
    tracking = PipelineTrackingManager().with_storage(RedisPipelineStorage(client))
    try:
        # Alternating, after warm-ups (connections, scripts, worker imports).
        plain, tracked = await alternate(
            repeat,
            lambda: _chain_seconds(_chain(broker, None)),
            lambda: _chain_seconds(_chain(broker, tracking)),
            warmup=WARMUP,
        )
        recorded = await tracking.list_pipelines("COMPLETED")
        assert len(recorded) == repeat + WARMUP, len(recorded)
        assert all(len(r.steps) == CHAIN_LENGTH for r in recorded)
    finally:
        await tracking.close()
        await client.aclose()
        await broker.shutdown()
    return Figure(
        name=f"tracking overhead, {CHAIN_LENGTH}-step chain, per step",
        unit="ms",
        ours=[s / CHAIN_LENGTH * 1000 for s in tracked],
        reference=[s / CHAIN_LENGTH * 1000 for s in plain],
        ours_label="Pipeline with_tracking(RedisPipelineStorage), 1 worker process",
        reference_label="the same Pipeline untracked (runs alternate)",
        target=Target("<=", 1.15),
        suite=SUITE,
    )


async def measure(times: int = 15) -> list[Figure]:
    """The figure; starts (and stops) its own redis-server and worker process."""
    with running_redis() as url, tempfile.TemporaryDirectory() as logs:
        broker, modules = WORKER
        env = {URL_ENV: url, QUEUE_ENV: QUEUE}
        with running_workers(broker, modules, env, 1, Path(logs), "tracking"):
            return [await bench(url, times)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args(argv)
    print(format_table(asyncio.run(measure(args.repeat))))


if __name__ == "__main__":
    main()
