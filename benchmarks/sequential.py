"""Sequential pipelines: taskiq-flow against taskiq-pipelines and raw taskiq.

Run it from anywhere (it starts its own redis-server and two worker processes)::

    /work/venv/bin/python benchmarks/sequential.py [--repeat 5]

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
   0.5 ms). Targets: taskiq-flow <= 1.1 x raw, and faster than
   taskiq-pipelines.

Each figure is the median of ``--repeat`` repetitions (min and max shown), after one
warm-up run.
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
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import taskiq_pipelines  # noqa: E402
from taskiq import AsyncBroker  # noqa: E402

from taskiq_flow import Pipeline  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402
from tests.sequential import seq_tasks as st  # noqa: E402
from tests.sequential.seq_worker_app import QUEUE_ENV, make_broker  # noqa: E402

CHAIN_LENGTH = 20
CHAINS = 5  # chains per repetition of the per-step figures
ITEMS = 1000
WORKERS = 2
RAW_CHECK_INTERVAL = 0.0005
KICK_BATCH = 64  # raw fan-out sends its items this many at a time, like taskiq-flow's map
QUEUE = "taskiq-bench-seq"
WORKER_SHUTDOWN_GRACE = 3.0

WORKER_COMMAND = [
    sys.executable, "-m", "taskiq", "worker", "benchmarks.sequential_worker:broker",
    "--workers", "1", "--log-level", "WARNING", "--shutdown-timeout", "2",
]  # fmt: skip


@dataclass
class Figure:
    """Repeated measurements of one quantity, in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


async def repeat(times: int, measure: Callable[[], Awaitable[float]]) -> Figure:
    await measure()  # warm up: imports, connections, each worker's first messages
    return Figure([await measure() for _ in range(times)])


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


# -- running it ---------------------------------------------------------------------------


@contextmanager
def worker_processes(url: str, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes; stopped with SIGTERM, then SIGKILL of their groups."""
    env = {**os.environ, st.REDIS_URL_ENV: url, QUEUE_ENV: QUEUE}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            processes.append(
                subprocess.Popen(
                    WORKER_COMMAND,
                    cwd=REPO_ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield processes
    finally:
        for process in processes:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_SHUTDOWN_GRACE
        for process in processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            # A stream-broker worker often hangs on shutdown; it leads its process group.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Results:
    flow_step: Figure
    pipelines_step: Figure
    raw_step: Figure
    flow_chain: Figure
    pipelines_chain: Figure
    flow_map: Figure
    pipelines_map: Figure
    raw_map: Figure


async def measure(url: str, times: int) -> Results:
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
    finally:
        await broker.shutdown()

    def scaled(figure: Figure, by: int) -> Figure:
        return Figure([s / by for s in figure.samples])

    return Results(
        flow_step=scaled(flow_step, per_step),
        pipelines_step=scaled(pipelines_step, per_step),
        raw_step=scaled(raw_step, per_step),
        flow_chain=flow_one,
        pipelines_chain=pipelines_one,
        flow_map=flow_map,
        pipelines_map=pipelines_map,
        raw_map=raw_map,
    )


def row(label: str, figure: Figure, unit: str, scale: float) -> str:
    values = sorted(v * scale for v in figure.samples)
    mid = figure.median * scale
    cells = " ".join(f"{v:>10.2f}" for v in (mid, values[0], values[-1]))
    return f"  {label:<52} {cells}  {unit}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(r: Results, times: int) -> str:
    header = f"  {'':<52} {'median':>10} {'min':>10} {'max':>10}"
    step_ratio = r.flow_step.median / r.raw_step.median
    pipelines_step_ratio = r.pipelines_step.median / r.raw_step.median
    chain_speedup = r.pipelines_chain.median / r.flow_chain.median
    map_ratio = r.flow_map.median / r.raw_map.median
    map_speedup = r.pipelines_map.median / r.flow_map.median
    return "\n".join(
        [
            f"sequential pipelines on Redis ({WORKERS} worker processes, one redis-server), "
            f"{times} repetitions",
            "",
            f"1. per-step overhead of a {CHAIN_LENGTH}-step chain ({CHAINS} chains per repetition)",
            header,
            row("taskiq-flow Pipeline", r.flow_step, "ms/step", 1000),
            row("taskiq-pipelines Pipeline (final wait polls 0.5 ms)", r.pipelines_step,
                "ms/step", 1000),
            row("raw taskiq kiq + wait_result(check_interval=0.0005)", r.raw_step,
                "ms/round trip", 1000),
            f"  taskiq-flow / raw: {step_ratio:.2f}  (target <= 1.3)  "
            f"{verdict(step_ratio <= 1.3)}",
            f"  taskiq-pipelines / raw: {pipelines_step_ratio:.2f}",
            "",
            f"2. one {CHAIN_LENGTH}-step chain end to end, default settings",
            header,
            row("taskiq-flow (wait_result woken by the completion)", r.flow_chain, "ms", 1000),
            row("taskiq-pipelines (wait_result polls every 0.2 s)", r.pipelines_chain,
                "ms", 1000),
            f"  taskiq-flow is {chain_speedup:.1f}x faster  (target >= 10x)  "
            f"{verdict(chain_speedup >= 10)}",
            "",
            f"3. {ITEMS:,}-item map + reduce end to end, default settings",
            header,
            row("taskiq-flow Pipeline", r.flow_map, "s", 1),
            row("taskiq-pipelines Pipeline (map waiter polls 0.5 s)", r.pipelines_map, "s", 1),
            row("raw taskiq fan-out (polls 0.5 ms)", r.raw_map, "s", 1),
            f"  taskiq-flow / raw: {map_ratio:.2f}  (target <= 1.1)  {verdict(map_ratio <= 1.1)}",
            f"  taskiq-flow is {map_speedup:.1f}x faster than taskiq-pipelines  "
            f"(target > 1x)  {verdict(map_speedup > 1)}",
        ]
    )  # fmt: skip


async def run(times: int) -> str:
    with running_redis() as url:
        os.environ[st.REDIS_URL_ENV] = url
        with worker_processes(url, WORKERS):
            results = await measure(url, times)
    return report(results, times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per figure")
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.repeat)))


if __name__ == "__main__":
    main()
