"""The engine's overhead per step, against raw taskiq round trips of the same task.

Run it from anywhere (it starts its own redis-server and one worker process)::

    /work/venv/bin/python benchmarks/engine.py [--repeat 7]

What it measures, side by side in one run, with one trivial async task
(``tests.integration.flow_tasks.increment``: returns its input plus one):

1. In process (``InMemoryBroker``): steps per second of a 20-step ``DataflowPipeline``
   chain, against round trips per second of ``kiq()`` + ``wait_result(check_interval=
   0.001)``. Ratio = pipeline / raw; target >= 0.5.
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
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from taskiq import AsyncBroker, InMemoryBroker  # noqa: E402

from taskiq_flow import DataflowPipeline  # noqa: E402
from tests.integration.flow_tasks import REDIS_URL_ENV, increment  # noqa: E402
from tests.integration.worker_app import make_broker  # noqa: E402
from tests.redis_server import running_redis  # noqa: E402

CHAIN_LENGTH = 20
IN_PROCESS_CHAINS = 10  # chains per repetition (200 steps)
IN_PROCESS_ROUND_TRIPS = 200
REDIS_CHAINS = 5  # chains per repetition (100 steps)
REDIS_ROUND_TRIPS = 100
WORKER_SHUTDOWN_GRACE = 3.0

WORKER_COMMAND = [
    sys.executable, "-m", "taskiq", "worker",
    "tests.integration.worker_app:broker", "tests.integration.flow_tasks",
    "--workers", "1", "--log-level", "WARNING", "--shutdown-timeout", "2",
]  # fmt: skip


@dataclass
class Figure:
    """Repeated measurements of one quantity."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


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


async def repeat(times: int, measure: Callable[[], Awaitable[float]]) -> Figure:
    await measure()  # warm up: imports, connections, the worker's first message
    return Figure([await measure() for _ in range(times)])


async def in_process(times: int) -> tuple[Figure, Figure]:
    """Seconds per step (pipeline) and per round trip (raw) on an ``InMemoryBroker``."""
    broker = InMemoryBroker()
    await broker.startup()
    try:
        pipeline = chain(broker)
        steps = await repeat(times, lambda: time_chains(pipeline, IN_PROCESS_CHAINS))
        raw = await repeat(
            times, lambda: time_round_trips(broker, IN_PROCESS_ROUND_TRIPS, check_interval=0.001)
        )
    finally:
        await broker.shutdown()
    return steps, raw


async def on_redis(url: str, times: int) -> tuple[Figure, Figure]:
    """Seconds per step (pipeline) and per round trip (raw) through one worker process."""
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
    return steps, raw


@contextmanager
def worker_process(url: str) -> Iterator[subprocess.Popen[bytes]]:
    """One ``taskiq worker`` process with one child; stopped with SIGTERM, then SIGKILL."""
    process = subprocess.Popen(
        WORKER_COMMAND,
        cwd=REPO_ROOT,
        env={**os.environ, REDIS_URL_ENV: url},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WORKER_SHUTDOWN_GRACE)
        except subprocess.TimeoutExpired:
            # A stream-broker worker often hangs on shutdown; it leads its process group.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def row(label: str, unit: str, figure: Figure, scale: Callable[[float], float]) -> str:
    values = sorted(scale(v) for v in figure.samples)
    mid = scale(figure.median)
    digits = 2 if mid < 100 else 0
    cells = " ".join(f"{v:>10.{digits}f}" for v in (mid, values[0], values[-1]))
    return f"  {label:<46} {cells}  {unit}"


def report(local: tuple[Figure, Figure], remote: tuple[Figure, Figure], times: int) -> str:
    local_steps, local_raw = local
    remote_steps, remote_raw = remote

    def per_second(seconds: float) -> float:
        return 1 / seconds

    def milliseconds(seconds: float) -> float:
        return seconds * 1000

    local_ratio = local_raw.median / local_steps.median  # rates: (1/step) / (1/raw)
    remote_ratio = remote_steps.median / remote_raw.median
    header = f"  {'':<46} {'median':>10} {'min':>10} {'max':>10}"
    lines = [
        f"taskiq-flow engine overhead: {CHAIN_LENGTH}-step chain vs raw round trips, "
        f"{times} repetitions",
        "",
        "in process (InMemoryBroker)",
        header,
        row("DataflowPipeline chain", "steps/s", local_steps, per_second),
        row("raw kiq + wait_result(check_interval=0.001)", "round trips/s", local_raw, per_second),
        f"  ratio pipeline/raw: {local_ratio:.2f}  (target >= 0.5)"
        f"  {'ok' if local_ratio >= 0.5 else 'MISSED'}",
        "",
        "on Redis (RedisStreamBroker, one worker process)",
        header,
        row("DataflowPipeline chain", "ms/step", remote_steps, milliseconds),
        row(
            "raw kiq + wait_result(check_interval=0.0005)",
            "ms/round trip",
            remote_raw,
            milliseconds,
        ),
        f"  ratio pipeline/raw: {remote_ratio:.2f}  (target <= 1.3)"
        f"  {'ok' if remote_ratio <= 1.3 else 'MISSED'}",
    ]
    return "\n".join(lines)


async def run(times: int) -> str:
    local = await in_process(times)
    with running_redis() as url:
        os.environ[REDIS_URL_ENV] = url
        with worker_process(url):
            remote = await on_redis(url, times)
    return report(local, remote, times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="repetitions per figure")
    args = parser.parse_args(argv)
    print(asyncio.run(run(args.repeat)))


if __name__ == "__main__":
    main()
