"""The engine's overhead per step, against raw taskiq round trips of the same task.

Run it from anywhere (it starts its own redis-server and one worker process)::

    /work/venv/bin/python benchmarks/engine.py [--repeat 7]

What it measures, side by side in one run, with one trivial async task
(``tests.integration.flow_tasks.increment``: returns its input plus one):

1. In process (``InMemoryBroker``): steps per second of a 20-step ``DataflowPipeline``
   chain, against round trips per second of ``kiq()`` + ``wait_result(check_interval=0)``
   (the fastest way to wait in process: the readiness check only yields to the event
   loop, which lets the task run). Ratio = pipeline / raw; target >= 0.5.
2. On Redis, through the same single ``taskiq worker`` process (``RedisStreamBroker`` +
   ``RedisAsyncResultBackend``): time per step of the same chain, against the time of
   one raw round trip (``kiq()`` + ``wait_result(check_interval=0.0005)``). Ratio =
   pipeline / raw; target <= 1.3.

Each figure is the median of ``--repeat`` repetitions (min and max shown). A chain's
steps run one after another, so its time per step is what a step costs the engine:
sending it, the worker's run, and hearing of its completion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: import from the repository root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from taskiq import AsyncBroker, InMemoryBroker

from benchmarks._common import (
    Figure,
    Target,
    format_table,
    repeat,
    running_redis,
    running_workers,
)
from taskiq_flow import DataflowPipeline
from tests.integration.flow_tasks import REDIS_URL_ENV, increment
from tests.integration.worker_app import make_broker

SUITE = "engine"
CHAIN_LENGTH = 20
IN_PROCESS_CHAINS = 10  # chains per repetition (200 steps)
IN_PROCESS_ROUND_TRIPS = 200
REDIS_CHAINS = 5  # chains per repetition (100 steps)
REDIS_ROUND_TRIPS = 100
WORKER = ("tests.integration.worker_app:broker", ["tests.integration.flow_tasks"])


def chain(broker: AsyncBroker) -> DataflowPipeline:
    """``v0 → step1 → … → step20``, each step one ``increment``."""
    pipeline = DataflowPipeline(broker)
    for i in range(1, CHAIN_LENGTH + 1):
        pipeline.add_dataflow_task(increment, output=f"v{i}", inputs=[f"v{i - 1}"], name=f"step{i}")
    return pipeline


async def time_chains(pipeline: DataflowPipeline, chains: int) -> float:
    """Seconds per step over ``chains`` runs of the chain."""
    start = time.perf_counter()
    for _ in range(chains):
        outputs = await pipeline.kiq_dataflow(v0=0)
        assert outputs[f"v{CHAIN_LENGTH}"] == CHAIN_LENGTH
    return (time.perf_counter() - start) / (chains * CHAIN_LENGTH)


async def time_round_trips(broker: AsyncBroker, count: int, check_interval: float) -> float:
    """Seconds per raw round trip: ``kiq()`` then ``wait_result()``."""
    kicker = increment.kicker().with_broker(broker)
    start = time.perf_counter()
    for i in range(count):
        task = await kicker.kiq(v0=i)
        result = await task.wait_result(check_interval=check_interval, timeout=30)
        assert result.return_value == i + 1
    return (time.perf_counter() - start) / count


async def in_process(times: int) -> Figure:
    """Steps per second of the chain against raw round trips per second, in process."""
    broker = InMemoryBroker()
    await broker.startup()
    try:
        pipeline = chain(broker)
        steps = await repeat(times, lambda: time_chains(pipeline, IN_PROCESS_CHAINS))
        raw = await repeat(
            times, lambda: time_round_trips(broker, IN_PROCESS_ROUND_TRIPS, check_interval=0)
        )
    finally:
        await broker.shutdown()
    return Figure(
        name="in-process 20-step chain",
        unit="steps/s",
        ours=[1 / s for s in steps],
        reference=[1 / s for s in raw],
        ours_label="DataflowPipeline chain on InMemoryBroker",
        reference_label="raw InMemoryBroker kiq + wait_result(check_interval=0)",
        target=Target(">=", 0.5),
        suite=SUITE,
    )


async def on_redis(url: str, times: int) -> Figure:
    """Milliseconds per step of the chain against per raw round trip, one worker."""
    broker = make_broker(url)
    await broker.startup()
    try:
        pipeline = chain(broker)
        # Raw first: its warm-up waits for the worker to come up.
        raw = await repeat(
            times, lambda: time_round_trips(broker, REDIS_ROUND_TRIPS, check_interval=0.0005)
        )
        steps = await repeat(times, lambda: time_chains(pipeline, REDIS_CHAINS))
    finally:
        await broker.shutdown()
    return Figure(
        name="Redis 20-step chain (DataflowPipeline), per step",
        unit="ms",
        ours=[s * 1000 for s in steps],
        reference=[s * 1000 for s in raw],
        ours_label="DataflowPipeline chain, 1 worker process",
        reference_label="raw kiq + wait_result(check_interval=0.0005), same worker",
        target=Target("<=", 1.3),
        suite=SUITE,
    )


async def measure(times: int = 7) -> list[Figure]:
    """Both figures; starts (and stops) its own redis-server and worker process."""
    local = await in_process(times)
    with running_redis() as url, tempfile.TemporaryDirectory() as logs:
        os.environ[REDIS_URL_ENV] = url
        broker, modules = WORKER
        with running_workers(broker, modules, {REDIS_URL_ENV: url}, 1, Path(logs), "engine"):
            remote = await on_redis(url, times)
    return [local, remote]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repetitions per figure")
    args = parser.parse_args(argv)
    print(f"taskiq-flow engine overhead, {args.repeat} repetitions\n")
    print(format_table(asyncio.run(measure(args.repeat))))


if __name__ == "__main__":
    main()
