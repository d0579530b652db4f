"""Sequential pipelines: taskiq-flow against taskiq-pipelines and raw taskiq.

Run it from anywhere (it starts its own redis-server and two worker processes)::

    /work/venv/bin/python benchmarks/sequential.py [--repeat 5] [--items 10000]

Everything runs in one go, on the same Redis and the same two ``taskiq worker``
processes (``benchmarks/sequential_worker.py``: a ``FlowRedisStreamBroker`` with a
Redis result backend, taskiq-flow's and taskiq-pipelines' middlewares, and the shared
tasks of ``tests/sequential/seq_tasks.py``):

1. **Per-step overhead of a 20-step chain** of ``add_one``: time of the whole chain
   divided by 20, for taskiq-flow (``Pipeline.call_next`` x 20, ``wait_result()``),
   for taskiq-pipelines (``Pipeline.call_next`` x 20, its final ``wait_result`` polling
   every 0.5 ms so that only its steps are measured) and for raw taskiq (one
   ``kiq()`` + ``wait_result(check_interval=0.0005)`` round trip). Target: taskiq-flow
   <= 1.3 x raw.
2. **The 20-step chain end to end, each library with its defaults**: taskiq-flow's
   ``wait_result()`` is woken by the run's completion; taskiq-pipelines'
   ``wait_result()`` polls every 0.2 s. Target: taskiq-flow >= 10 x faster.
3. **1,000-item map + reduce end to end**: ``numbers(1000)`` → ``map(double)`` →
   ``total``, for taskiq-flow and taskiq-pipelines (defaults: its map waits in a
   ``wait_tasks`` task polling every 0.5 s), against raw taskiq doing the same work
   (``numbers`` round trip, 1,000 ``kiq``s sent 64 at a time concurrently as taskiq-flow
   sends a map's items, waiting for each in order, a ``total`` round trip; polling every
   0.5 ms). Targets: taskiq-flow <= 1.1 x raw, and faster than taskiq-pipelines.
4. **Fan-out throughput, ``--items`` (10,000) items**: ``Pipeline(broker).map(double)``
   on a list, items per second from ``kiq`` to the list of results, against raw taskiq
   kicking the same number of ``double`` messages (``asyncio.gather`` of 500 ``kiq``s at
   a time) and reading all their results in bulk (``MGET`` of every pending result key
   each millisecond). Target: taskiq-flow >= 0.9 x raw. The same for the client-driven
   fan-out, ``DataflowPipeline(broker).map(double, "numbers", output=...)`` with its
   defaults. The three take turns within each repetition.
5. **Peak RSS of a worker process** (the child that runs the tasks; ``VmHWM``) after
   all of the above. Reported, no target.

Each figure is the median of ``--repeat`` repetitions (min and max shown), after one
warm-up run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import taskiq_pipelines
from redis.asyncio import Redis
from taskiq import AsyncBroker, TaskiqResult

from benchmarks._common import (
    Figure,
    Target,
    format_table,
    peak_rss_bytes,
    process_tree,
    repeat,
    running_redis,
    running_workers,
    take_turns,
)
from taskiq_flow import DataflowPipeline, Pipeline
from tests.sequential import seq_tasks as st
from tests.sequential.seq_worker_app import QUEUE_ENV, make_broker

SUITE = "sequential"
CHAIN_LENGTH = 20
CHAINS = 5  # chains per repetition of the per-step figures
ITEMS = 1000
FAN_OUT_ITEMS = 10_000
WORKERS = 2
RAW_CHECK_INTERVAL = 0.0005
KICK_BATCH = 64  # raw map + reduce sends its items this many at a time, like taskiq-flow's map
FAN_OUT_KICK_BATCH = 500
QUEUE = "taskiq-bench-seq"
WORKER_BROKER = "benchmarks.sequential_worker:broker"


# -- the 20-step chain ------------------------------------------------------------------


def flow_chain(broker: AsyncBroker) -> Pipeline:
    pipeline = Pipeline(broker)
    for _ in range(CHAIN_LENGTH):
        pipeline.call_next(st.add_one)
    return pipeline


def pipelines_chain(broker: AsyncBroker) -> Any:
    pipeline = taskiq_pipelines.Pipeline(broker, st.add_one)
    for _ in range(CHAIN_LENGTH - 1):
        pipeline = pipeline.call_next(st.add_one)
    return pipeline


async def flow_chains(broker: AsyncBroker, chains: int) -> float:
    """Seconds for ``chains`` taskiq-flow chains, one after another."""
    pipeline = flow_chain(broker)
    start = time.perf_counter()
    for _ in range(chains):
        result = await (await pipeline.kiq(0)).wait_result(timeout=60)
        assert result.return_value == CHAIN_LENGTH, result
    return time.perf_counter() - start


async def pipelines_chains(broker: AsyncBroker, chains: int, check_interval: float) -> float:
    """Seconds for ``chains`` taskiq-pipelines chains, one after another."""
    pipeline = pipelines_chain(broker)
    start = time.perf_counter()
    for _ in range(chains):
        task = await pipeline.kiq(0)
        result = await task.wait_result(check_interval=check_interval, timeout=60)
        assert result.return_value == CHAIN_LENGTH, result
    return time.perf_counter() - start


async def raw_round_trips(broker: AsyncBroker, count: int) -> float:
    """Seconds for ``count`` raw ``kiq()`` + ``wait_result()`` round trips."""
    kicker = st.add_one.kicker().with_broker(broker)
    start = time.perf_counter()
    for i in range(count):
        task = await kicker.kiq(i)
        result = await task.wait_result(check_interval=RAW_CHECK_INTERVAL, timeout=60)
        assert result.return_value == i + 1, result
    return time.perf_counter() - start


# -- 1,000-item map + reduce -------------------------------------------------------------

EXPECTED_TOTAL = sum(2 * n for n in range(1, ITEMS + 1))


async def flow_map_reduce(broker: AsyncBroker) -> float:
    pipeline = Pipeline(broker).call_next(st.numbers).map(st.double).call_next(st.total)
    start = time.perf_counter()
    result = await (await pipeline.kiq(ITEMS)).wait_result(timeout=300)
    elapsed = time.perf_counter() - start
    assert result.return_value == EXPECTED_TOTAL, result
    return elapsed


async def pipelines_map_reduce(broker: AsyncBroker) -> float:
    pipeline = taskiq_pipelines.Pipeline(broker, st.numbers).map(st.double).call_next(st.total)
    start = time.perf_counter()
    result = await (await pipeline.kiq(ITEMS)).wait_result(timeout=300)
    elapsed = time.perf_counter() - start
    assert result.return_value == EXPECTED_TOTAL, result
    return elapsed


async def raw_map_reduce(broker: AsyncBroker) -> float:
    """The same work with raw taskiq: round trip, fan out, wait for each, round trip."""

    async def round_trip(task: Any, *args: Any) -> Any:
        sent = await task.kicker().with_broker(broker).kiq(*args)
        result = await sent.wait_result(check_interval=RAW_CHECK_INTERVAL, timeout=300)
        return result.return_value

    start = time.perf_counter()
    items = await round_trip(st.numbers, ITEMS)
    kicker = st.double.kicker().with_broker(broker)
    sent = []
    for first in range(0, len(items), KICK_BATCH):  # sent as taskiq-flow sends a map's items
        sent += await asyncio.gather(*(kicker.kiq(i) for i in items[first : first + KICK_BATCH]))
    doubled = [
        (await task.wait_result(check_interval=RAW_CHECK_INTERVAL, timeout=300)).return_value
        for task in sent
    ]
    value = await round_trip(st.total, doubled)
    elapsed = time.perf_counter() - start
    assert value == EXPECTED_TOTAL, value
    return elapsed


# -- fan-out throughput ------------------------------------------------------------------


async def flow_fan_out(broker: AsyncBroker, items: int) -> float:
    """Items per second of ``Pipeline.map(double)`` over ``items`` numbers."""
    pipeline = Pipeline(broker).map(st.double)
    numbers = list(range(items))
    start = time.perf_counter()
    result = await (await pipeline.kiq(numbers)).wait_result(timeout=600)
    elapsed = time.perf_counter() - start
    assert result.return_value == [2 * n for n in numbers], str(result)[:300]
    return items / elapsed


async def dataflow_fan_out(broker: AsyncBroker, items: int) -> float:
    """Items per second of ``DataflowPipeline.map(double)`` (driven from this process)."""
    pipeline = DataflowPipeline(broker).map(st.double, "numbers", output="doubled")
    numbers = list(range(items))
    start = time.perf_counter()
    outputs = await pipeline.kiq_dataflow(numbers=numbers)
    elapsed = time.perf_counter() - start
    assert outputs["doubled"] == [2 * n for n in numbers], str(outputs)[:300]
    return items / elapsed


async def read_results_in_bulk(broker: AsyncBroker, task_ids: list[str]) -> list[Any]:
    """Every task's return value: ``MGET`` of all pending result keys, every millisecond."""
    backend: Any = broker.result_backend
    values: dict[str, Any] = {}
    pending = task_ids
    async with Redis(connection_pool=backend.redis_pool) as client:
        while pending:
            raw = await client.mget([backend._task_name(t) for t in pending])
            still = []
            for task_id, data in zip(pending, raw, strict=True):
                if data is None:
                    still.append(task_id)
                else:
                    result = TaskiqResult[Any].model_validate(backend.serializer.loadb(data))
                    values[task_id] = result.return_value
            pending = still
            if pending:
                await asyncio.sleep(0.001)
    return [values[t] for t in task_ids]


async def raw_fan_out(broker: AsyncBroker, items: int) -> float:
    """Items per second of raw taskiq: kick ``items`` ``double``s, read every result."""
    kicker = st.double.kicker().with_broker(broker)
    start = time.perf_counter()
    sent = []
    for first in range(0, items, FAN_OUT_KICK_BATCH):
        last = min(first + FAN_OUT_KICK_BATCH, items)
        sent += await asyncio.gather(*(kicker.kiq(i) for i in range(first, last)))
    values = await read_results_in_bulk(broker, [t.task_id for t in sent])
    elapsed = time.perf_counter() - start
    assert values == [2 * n for n in range(items)]
    return items / elapsed


# -- running it ---------------------------------------------------------------------------


async def measure_all(url: str, times: int, fan_out_items: int) -> list[Figure]:
    broker = make_broker(url, queue=QUEUE)
    await broker.startup()
    try:
        per_step = CHAINS * CHAIN_LENGTH
        # Raw first: its warm-up waits for the workers to come up.
        raw_step = await repeat(times, lambda: raw_round_trips(broker, per_step))
        flow_step = await repeat(times, lambda: flow_chains(broker, CHAINS))
        pipelines_step = await repeat(
            times, lambda: pipelines_chains(broker, CHAINS, RAW_CHECK_INTERVAL)
        )
        flow_one = await repeat(times, lambda: flow_chains(broker, 1))
        pipelines_one = await repeat(times, lambda: pipelines_chains(broker, 1, 0.2))
        raw_map = await repeat(times, lambda: raw_map_reduce(broker))
        flow_map = await repeat(times, lambda: flow_map_reduce(broker))
        pipelines_map = await repeat(times, lambda: pipelines_map_reduce(broker))
        raw_fan, flow_fan, dataflow_fan = await take_turns(
            times,
            lambda: raw_fan_out(broker, fan_out_items),
            lambda: flow_fan_out(broker, fan_out_items),
            lambda: dataflow_fan_out(broker, fan_out_items),
        )
    finally:
        await broker.shutdown()

    def ms_per_step(samples: list[float]) -> list[float]:
        return [s / per_step * 1000 for s in samples]

    def ms(samples: list[float]) -> list[float]:
        return [s * 1000 for s in samples]

    chain = f"{CHAIN_LENGTH}-step chain"
    return [
        Figure(
            name=f"Redis {chain} (Pipeline), per step",
            unit="ms",
            ours=ms_per_step(flow_step),
            reference=ms_per_step(raw_step),
            ours_label=f"taskiq-flow Pipeline, {WORKERS} worker processes",
            reference_label="raw kiq + wait_result(check_interval=0.0005), same workers",
            target=Target("<=", 1.3),
            suite=SUITE,
        ),
        Figure(
            name=f"Redis {chain}, per step, vs taskiq-pipelines",
            unit="ms",
            ours=ms_per_step(flow_step),
            reference=ms_per_step(pipelines_step),
            ours_label="taskiq-flow Pipeline",
            reference_label="taskiq-pipelines Pipeline (its final wait polls every 0.5 ms)",
            suite=SUITE,
        ),
        Figure(
            name=f"{chain} end to end, defaults",
            unit="ms",
            ours=ms(flow_one),
            reference=ms(pipelines_one),
            ours_label="taskiq-flow (wait_result woken by the completion)",
            reference_label="taskiq-pipelines (wait_result polls every 0.2 s)",
            target=Target("<=", 0.1),
            note="target: 10x faster",
            suite=SUITE,
        ),
        Figure(
            name=f"{ITEMS:,}-item map + reduce",
            unit="s",
            ours=flow_map,
            reference=raw_map,
            ours_label="taskiq-flow numbers → map(double) → total",
            reference_label="raw taskiq, same work (64 kiqs at a time, waits polling 0.5 ms)",
            target=Target("<=", 1.1),
            suite=SUITE,
        ),
        Figure(
            name=f"{ITEMS:,}-item map + reduce vs taskiq-pipelines",
            unit="s",
            ours=flow_map,
            reference=pipelines_map,
            ours_label="taskiq-flow",
            reference_label="taskiq-pipelines, defaults (its map waiter polls every 0.5 s)",
            target=Target("<=", 1.0),
            note="target: faster",
            suite=SUITE,
        ),
        Figure(
            name=f"{fan_out_items:,}-item fan-out throughput",
            unit="items/s",
            ours=flow_fan,
            reference=raw_fan,
            ours_label=f"taskiq-flow Pipeline.map(double), {WORKERS} worker processes",
            reference_label=(
                f"raw taskiq: {FAN_OUT_KICK_BATCH} kiqs at a time, results read in bulk "
                "(MGET each ms), same workers"
            ),
            target=Target(">=", 0.9),
            suite=SUITE,
        ),
        Figure(
            name=f"{fan_out_items:,}-item fan-out throughput, DataflowPipeline",
            unit="items/s",
            ours=dataflow_fan,
            reference=raw_fan,
            ours_label="taskiq-flow DataflowPipeline.map(double), driven from the client",
            reference_label="the same raw taskiq samples",
            target=Target(">=", 0.9),
            suite=SUITE,
        ),
    ]


async def measure(times: int = 5, fan_out_items: int = FAN_OUT_ITEMS) -> list[Figure]:
    """All figures; starts (and stops) its own redis-server and worker processes."""
    with running_redis() as url, tempfile.TemporaryDirectory() as logs:
        os.environ[st.REDIS_URL_ENV] = url
        env = {st.REDIS_URL_ENV: url, QUEUE_ENV: QUEUE}
        with running_workers(WORKER_BROKER, [], env, WORKERS, Path(logs), "seq") as workers:
            figures = await measure_all(url, times, fan_out_items)
            # The child of each ``taskiq worker`` runs the tasks; the largest peak counts.
            rss = [
                max(peak_rss_bytes(pid) / 2**20 for pid in process_tree(p.pid)[1:] or [p.pid])
                for p in workers.processes
            ]
    figures.append(
        Figure(
            name="worker peak RSS",
            unit="MiB",
            ours=rss,
            ours_label=(
                f"VmHWM of each of the {WORKERS} task-running worker processes after this "
                "suite (taskiq worker + both middlewares)"
            ),
            suite=SUITE,
        )
    )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per figure")
    parser.add_argument("--items", type=int, default=FAN_OUT_ITEMS, help="fan-out items")
    args = parser.parse_args(argv)
    print(
        f"sequential pipelines on Redis ({WORKERS} worker processes, one redis-server), "
        f"{args.repeat} repetitions\n"
    )
    print(format_table(asyncio.run(measure(args.repeat, args.items))))


if __name__ == "__main__":
    main()
