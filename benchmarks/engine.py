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
3. The cost of ``when`` conditions: one check of a typical condition (``outputs.score >
   0.8 && inputs.mode == 'full'``, compiled once) against the same test as a Python
   lambda, in µs; and the in-process chain with a condition on every step (each reads
   the previous output, so each step waits for a ``Check`` round) against the plain
   chain. Targets: a check costs <= 50 µs; the conditioned chain keeps >= 0.8 of the
   plain chain's steps per second.

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
from collections.abc import Awaitable, Callable
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
    take_turns,
)
from taskiq_flow import DataflowPipeline
from taskiq_flow.core.conditions import Condition
from tests.integration.flow_tasks import REDIS_URL_ENV, increment
from tests.integration.worker_app import make_broker

SUITE = "engine"
CHAIN_LENGTH = 20
IN_PROCESS_CHAINS = 10  # chains per repetition (200 steps)
IN_PROCESS_ROUND_TRIPS = 200
REDIS_CHAINS = 5  # chains per repetition (100 steps)
REDIS_ROUND_TRIPS = 100
WORKER = ("tests.integration.worker_app:broker", ["tests.integration.flow_tasks"])


def chain(broker: AsyncBroker, *, conditioned: bool = False) -> DataflowPipeline:
    """``v0 → step1 → … → step20``, each step one ``increment`` (``conditioned``: each
    with the condition that the previous output is not negative)."""
    pipeline = DataflowPipeline(broker)
    for i in range(1, CHAIN_LENGTH + 1):
        when = f"outputs.v{i - 1} >= 0" if conditioned and i > 1 else None
        pipeline.add_dataflow_task(
            increment, output=f"v{i}", inputs=[f"v{i - 1}"], name=f"step{i}", when=when
        )
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


CHECKS = 20_000  # condition evaluations per repetition


def time_checks(check: Callable[[], bool]) -> float:
    """Seconds per call of ``check``."""
    start = time.perf_counter()
    for _ in range(CHECKS):
        check()
    return (time.perf_counter() - start) / CHECKS


async def conditions(times: int) -> list[Figure]:
    """What a ``when`` costs: one check, and a chain whose every step has one."""
    condition = Condition("outputs.score > 0.8 && inputs.mode == 'full'")
    data = {"score": 0.9, "mode": "full"}
    cel, plain = await take_turns(
        times,
        _sync(lambda: time_checks(lambda: condition.evaluate(data, {}))),
        _sync(lambda: time_checks(lambda: data["score"] > 0.8 and data["mode"] == "full")),
    )
    broker = InMemoryBroker()
    await broker.startup()
    try:
        unconditioned, conditioned = chain(broker), chain(broker, conditioned=True)
        base, checked = await take_turns(
            times,
            lambda: time_chains(unconditioned, IN_PROCESS_CHAINS),
            lambda: time_chains(conditioned, IN_PROCESS_CHAINS),
        )
    finally:
        await broker.shutdown()
    return [
        Figure(
            name="when: one condition check",
            unit="µs",
            ours=[s * 1e6 for s in cel],
            reference=[s * 1e6 for s in plain],
            ours_label="compiled CEL condition, evaluated over the data it reads",
            reference_label="the same test as a Python expression",
            target=Target("<=", 50, on="value"),
            suite=SUITE,
        ),
        Figure(
            name="in-process 20-step chain, a when on every step",
            unit="steps/s",
            ours=[1 / s for s in checked],
            reference=[1 / s for s in base],
            ours_label="each step checks the previous output first",
            reference_label="the same chain without conditions",
            target=Target(">=", 0.8),
            suite=SUITE,
        ),
    ]


def _sync(measure: Callable[[], float]) -> Callable[[], Awaitable[float]]:
    async def measured() -> float:
        return measure()

    return measured


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
    checks = await conditions(times)
    with running_redis() as url, tempfile.TemporaryDirectory() as logs:
        os.environ[REDIS_URL_ENV] = url
        broker, modules = WORKER
        with running_workers(broker, modules, {REDIS_URL_ENV: url}, 1, Path(logs), "engine"):
            remote = await on_redis(url, times)
    return [local, *checks, remote]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repetitions per figure")
    args = parser.parse_args(argv)
    print(f"taskiq-flow engine overhead, {args.repeat} repetitions\n")
    print(format_table(asyncio.run(measure(args.repeat))))


if __name__ == "__main__":
    main()
