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
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import redis.asyncio as aioredis  # noqa: E402

from taskiq_flow import Pipeline, PipelineTrackingManager, RedisPipelineStorage  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402
from tests.tracking.flow_tasks import add_one  # noqa: E402
from tests.tracking.worker_app import QUEUE_ENV, URL_ENV, make_broker  # noqa: E402

CHAIN_LENGTH = 20
QUEUE = "taskiq-tracking-bench"
WORKER_COMMAND = [
    sys.executable, "-m", "taskiq", "worker",
    "tests.tracking.worker_app:broker", "tests.tracking.flow_tasks",
    "--workers", "1", "--log-level", "WARNING", "--shutdown-timeout", "2",
]  # fmt: skip


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


async def bench(url: str, repeat: int) -> None:
    broker = make_broker(url, QUEUE)
    await broker.startup()
    client = aioredis.Redis.from_url(url)
    tracking = PipelineTrackingManager().with_storage(RedisPipelineStorage(client))
    plain: list[float] = []
    tracked: list[float] = []
    try:
        for _ in range(3):  # warm-up: connections, scripts, worker imports
            await _chain_seconds(_chain(broker, None))
            await _chain_seconds(_chain(broker, tracking))
        for _ in range(repeat):
            plain.append(await _chain_seconds(_chain(broker, None)))
            tracked.append(await _chain_seconds(_chain(broker, tracking)))
        recorded = await tracking.list_pipelines("COMPLETED")
        assert len(recorded) == repeat + 3, len(recorded)
        assert all(len(r.steps) == CHAIN_LENGTH for r in recorded)
    finally:
        await tracking.close()
        await client.aclose()
        await broker.shutdown()
    per_plain = statistics.median(plain) / CHAIN_LENGTH * 1000
    per_tracked = statistics.median(tracked) / CHAIN_LENGTH * 1000
    print(f"{CHAIN_LENGTH}-step chain on Redis, median of {repeat} (ms per step):")
    print(
        f"  untracked:              {per_plain:7.3f}  (min {min(plain) / CHAIN_LENGTH * 1000:.3f})"
    )
    print(
        f"  tracked (Redis storage): {per_tracked:7.3f}  "
        f"(min {min(tracked) / CHAIN_LENGTH * 1000:.3f})"
    )
    print(f"  ratio tracked/untracked: {per_tracked / per_plain:.3f}x  (target <= 1.15x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with running_redis() as url:
        worker = subprocess.Popen(
            WORKER_COMMAND,
            cwd=REPO_ROOT,
            env={**os.environ, URL_ENV: url, QUEUE_ENV: QUEUE},
            start_new_session=True,
        )
        try:
            asyncio.run(bench(url, args.repeat))
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


if __name__ == "__main__":
    main()
