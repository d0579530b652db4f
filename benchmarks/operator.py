"""The operator on the emulator: dispatch latency against API latency, status, memory.

Run it from the repository root (it starts its own redis-server, the kmock emulator,
the operator process and the worker processes)::

    /work/venv/bin/python benchmarks/operator.py [--runs 200] [--steps 20] [--items 10000]
        [--workers 4] [--concurrency 50] [--api-latency-ms 100]

One operator, one emulator, the same worker processes throughout. It runs ``--runs``
concurrent chains of ``--steps`` steps, then four rounds of ``--runs / 4`` concurrent
chains, the emulator answering at once in the first and last, with every API response
delayed by ``--api-latency-ms`` in the two between. Then:

1. **Step-to-successor dispatch latency** over every edge of every chain run: from the
   moment the worker finished a step (its ``finished`` timestamp) to the moment the
   successor's message was in the pipeline's Redis stream (the stream entry's id).
   The operator kicks successors as soon as it reads the step event, independently of
   any status patch, so the rounds with the delayed API should match the others
   (target: ratio <= 1.2). Median (min-max) over the edges, and the p95; and the same
   over the ``--runs`` concurrent chains (no target).
2. **Status patches per run** (PATCH requests to ``pipelineruns/<name>/status`` seen by
   the emulator).
3. **Throughput**: steps per second of the concurrent chains (no added latency) against
   raw taskiq sending the same number of messages of the same task to the same worker
   processes (no dependencies to wait for, so an upper bound, not a like-for-like chain).
4. **Status size of a ``--items``-item map run** (JSON bytes of ``.status``; target <=
   64 KiB).
5. **Peak RSS** (``VmHWM``) of the operator process after the concurrent runs (against
   the same process idle, before them), and of the worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: import from the repository root, not benchmarks/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import kmock
import redis
from taskiq.kicker import AsyncKicker

from benchmarks._common import (
    Figure,
    Target,
    format_table,
    peak_rss_bytes,
    percentile,
    process_tree,
    running_redis,
)
from taskiq_flow.brokers import FlowRedisStreamBroker
from tests.operator.harness import (
    NAMESPACE,
    Cluster,
    FilledEmulator,
    Kubelet,
    Operator,
    declare_resources,
    eventually,
    write_kubeconfig,
)

SUITE = "operator"
TASKS = "tests.operator.op_tasks"
MiB = 2**20


class SlowEmulator(FilledEmulator):
    """The harness's emulator, answering every request ``latency`` seconds late.

    The delay is taken before the request is handled, so it holds up every response
    (for a watch, the start of its stream), as a distant or loaded API server would.
    """

    latency: float = 0.0

    async def _handle(self, request: Any) -> Any:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        return await super()._handle(request)


@contextlib.asynccontextmanager
async def slow_cluster() -> AsyncIterator[tuple[SlowEmulator, str]]:
    """The harness's ``emulated_cluster()``, with a ``SlowEmulator``."""
    emulator = SlowEmulator()
    declare_resources(emulator)
    async with emulator, kmock.Server(emulator) as server:
        yield emulator, str(server.url)


def chain_spec(steps: int, workers: int, concurrency: int) -> dict[str, Any]:
    return {
        "worker": {
            "modules": [TASKS],
            "replicas": {"min": workers, "max": workers},
            "concurrency": concurrency,
        },
        "parallelism": 10,
        "inputs": [{"name": "x0"}],
        "steps": [
            {"name": f"s{i}", "task": f"{TASKS}:inc", "inputs": [f"x{i - 1}"], "output": f"x{i}"}
            for i in range(1, steps + 1)
        ],
    }


def map_spec(workers: int, concurrency: int) -> dict[str, Any]:
    return {
        "worker": {
            "modules": [TASKS],
            "replicas": {"min": workers, "max": workers},
            "concurrency": concurrency,
        },
        "inputs": [{"name": "numbers"}],
        "steps": [
            {
                "name": "squares",
                "task": f"{TASKS}:square",
                "map": {"over": "numbers", "as": "item", "maxParallel": 2000},
            }
        ],
    }


def body(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "flow.taskiq.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def run_body(name: str, pipeline: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return body("PipelineRun", name, {"pipelineRef": {"name": pipeline}, "inputs": inputs})


async def wait_all(cluster: Cluster, names: set[str], timeout: float) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        runs = [r for r in await cluster.list("pipelineruns") if r["metadata"]["name"] in names]
        finished = [
            r for r in runs if (r.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        ]
        return finished if len(finished) == len(names) else None

    # Poll slowly: the emulator runs in this process and a listing is not free.
    return await eventually(probe, timeout, f"{len(names)} runs to finish", interval=1.0)


async def drained(client: redis.Redis, queue: str, timeout: float) -> None:
    async def probe() -> bool:
        last = client.xinfo_stream(queue)["last-generated-id"]
        groups = client.xinfo_groups(queue)
        return bool(groups) and all(
            g["pending"] == 0 and g["last-delivered-id"] == last for g in groups
        )

    await eventually(probe, timeout, f"{queue} to drain", interval=0.05)


def dispatch_latencies(
    client: redis.Redis, queue: str, runs: list[dict[str, Any]], steps: int
) -> list[float]:
    """Seconds from each step's finish to its successor's message in the stream."""
    kicked_at: dict[str, float] = {}
    for entry_id, fields in client.xrange(queue):
        message = json.loads(fields[b"data"])
        kicked_at[message["task_id"]] = int(entry_id.decode().split("-")[0]) / 1000
    latencies = []
    for run in runs:
        uid = run["metadata"]["uid"]
        for i in range(1, steps):
            done = client.get(f"tfo:{{{uid}}}:done:{uid}.s{i}.1")
            successor = kicked_at.get(f"{uid}.s{i + 1}.1")
            if done is None or successor is None:
                continue
            latencies.append(max(successor - json.loads(done)["finished"], 0.0))
    return latencies


def status_patches(emulator: SlowEmulator, names: set[str]) -> list[int]:
    counts = dict.fromkeys(names, 0)
    for request in list(emulator._requests):
        path = request.url.path
        if (
            request.method.value == "PATCH"
            and "/pipelineruns/" in path
            and path.endswith("/status")
        ):
            name = path.split("/")[-2]
            if name in counts:
                counts[name] += 1
    return list(counts.values())


async def concurrent_runs(
    cluster: Cluster, prefix: str, count: int, timeout: float = 1800
) -> tuple[list[dict[str, Any]], float]:
    """``count`` chain runs created at once; their final objects and the wall time."""
    names = {f"{prefix}-{i}" for i in range(count)}
    started = time.perf_counter()
    await asyncio.gather(
        *(cluster.create("pipelineruns", run_body(n, "chain", {"x0": 0})) for n in sorted(names))
    )
    runs = await wait_all(cluster, names, timeout)
    return runs, time.perf_counter() - started


def worker_rss(kubelet: Kubelet, deployment: str) -> list[float]:
    """Peak RSS (MiB) of each worker pod's task-running process."""
    return [
        max(peak_rss_bytes(pid) for pid in process_tree(pod.proc.pid)) / MiB
        for pod in kubelet.pods.get(deployment, [])
        if pod.proc.poll() is None
    ]


async def benchmark(args: argparse.Namespace, redis_url: str, workdir: Path) -> list[Figure]:
    client = redis.Redis.from_url(redis_url)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    delay = args.api_latency_ms / 1000
    async with slow_cluster() as (emulator, url):
        cluster = Cluster(emulator, url)
        operator = Operator(
            write_kubeconfig(workdir / "kubeconfig", url), redis_url, logs, verbose=False
        )
        kubelet = Kubelet(cluster, logs)
        operator.start()
        kubelet.start()
        try:
            spec = chain_spec(args.steps, args.workers, args.concurrency)
            await cluster.create("pipelines", body("Pipeline", "chain", spec))
            queue = f"taskiq-flow:{NAMESPACE}:chain"

            async def workers_up() -> bool:
                return kubelet.running("chain-worker") == args.workers

            await eventually(workers_up, 60, "the workers")
            # Warm up: one run, so that the workers have imported everything.
            await cluster.create("pipelineruns", run_body("warmup", "chain", {"x0": 0}))
            await wait_all(cluster, {"warmup"}, 120)
            assert operator.process is not None
            operator_pid = operator.process.proc.pid
            idle_rss = peak_rss_bytes(operator_pid) / MiB

            # -- concurrent chains: throughput, patches, the operator's memory ---------------
            all_runs, flow_seconds = await concurrent_runs(cluster, "all", args.runs)
            busy_rss = peak_rss_bytes(operator_pid) / MiB
            crowded = dispatch_latencies(client, queue, all_runs, args.steps)
            patches = status_patches(emulator, {r["metadata"]["name"] for r in all_runs})

            # -- dispatch latency with the API answering at once, and late ---------------
            # Smaller rounds in the order fast, slow, slow, fast: a load that drifts
            # during the benchmark (the machine is shared) weighs on both sides alike.
            fast_runs: list[dict[str, Any]] = []
            slow_runs: list[dict[str, Any]] = []
            round_size = max(args.runs // 4, 10)
            for number, late in enumerate((False, True, True, False)):
                emulator.latency = delay if late else 0.0
                done, _ = await concurrent_runs(cluster, f"round{number}", round_size)
                (slow_runs if late else fast_runs).extend(done)
            emulator.latency = 0.0
            fast = dispatch_latencies(client, queue, fast_runs, args.steps)
            slow = dispatch_latencies(client, queue, slow_runs, args.steps)
            failed = [
                r["metadata"]["name"]
                for r in all_runs + fast_runs + slow_runs
                if r["status"]["phase"] != "Succeeded"
            ]
            steps_total = args.runs * args.steps

            # -- raw taskiq on the same workers ---------------------------------------------
            broker = FlowRedisStreamBroker(redis_url, queue_name=queue)
            await broker.startup()
            kicker = AsyncKicker(f"{TASKS}:inc", broker, {})
            raw_started = time.perf_counter()
            for batch in range(0, steps_total, 500):
                await asyncio.gather(
                    *(kicker.kiq(x=i) for i in range(batch, min(batch + 500, steps_total)))
                )
            await drained(client, queue, 600)
            raw_seconds = time.perf_counter() - raw_started
            await broker.shutdown()
            chain_workers_rss = worker_rss(kubelet, "chain-worker")

            # -- the status of a large map run ----------------------------------------------
            await cluster.create(
                "pipelines", body("Pipeline", "bigmap", map_spec(args.workers, args.concurrency))
            )

            async def map_workers_up() -> bool:
                return kubelet.running("bigmap-worker") == args.workers

            await eventually(map_workers_up, 60, "the map workers")
            numbers = list(range(args.items))
            await cluster.create(
                "pipelineruns", run_body("bigmap-1", "bigmap", {"numbers": numbers})
            )
            big = (await wait_all(cluster, {"bigmap-1"}, 1800))[0]
            assert big["status"]["phase"] == "Succeeded", big["status"]
            status_kib = len(json.dumps(big["status"]).encode()) / 1024
            map_workers_rss = worker_rss(kubelet, "bigmap-worker")
        finally:
            await kubelet.stop()
            operator.stop()
            await cluster.close()
            client.close()
    assert not failed, failed
    label = f"{args.runs} concurrent {args.steps}-step runs"
    rounds = f"2 rounds of {round_size} concurrent runs"
    ms = 1000
    return [
        Figure(
            name=f"operator dispatch latency, {args.api_latency_ms:g} ms API vs 0, median",
            unit="ms",
            ours=[v * ms for v in slow],
            reference=[v * ms for v in fast],
            ours_label=f"{rounds}, every API response {args.api_latency_ms:g} ms late",
            reference_label=(
                f"{rounds}, API answering at once (per-edge samples; rounds fast, slow, slow, fast)"
            ),
            target=Target("<=", 1.2),
            note="target: independent of API latency",
            suite=SUITE,
        ),
        Figure(
            name=f"operator dispatch latency, {args.api_latency_ms:g} ms API vs 0, p95",
            unit="ms",
            ours=[percentile(slow, 0.95) * ms],
            reference=[percentile(fast, 0.95) * ms],
            ours_label=f"p95 of the edges, API {args.api_latency_ms:g} ms late",
            reference_label="p95, API answering at once",
            target=Target("<=", 1.2),
            suite=SUITE,
        ),
        Figure(
            name=f"operator dispatch latency, {args.runs} runs at once",
            unit="ms",
            ours=[v * ms for v in crowded],
            ours_label=f"per-edge samples of {label}, API answering at once",
            note=f"p95 {percentile(crowded, 0.95) * ms:.0f} ms",
            suite=SUITE,
        ),
        Figure(
            name="operator status patches per run",
            unit="patches",
            ours=[float(p) for p in patches],
            ours_label=f"PATCH .../status per run, {label}",
            suite=SUITE,
        ),
        Figure(
            name=f"operator throughput, {label}",
            unit="steps/s",
            ours=[steps_total / flow_seconds],
            reference=[steps_total / raw_seconds],
            ours_label=(
                f"chains through the operator ({args.workers} workers x {args.concurrency}), "
                "emulator in the benchmark's process"
            ),
            reference_label="raw taskiq: the same number of messages, same workers (upper bound)",
            suite=SUITE,
        ),
        Figure(
            name=f"status size, {args.items:,}-item map run",
            unit="KiB",
            ours=[status_kib],
            ours_label="JSON of the finished run's .status",
            target=Target("<=", 64, on="value"),
            suite=SUITE,
        ),
        Figure(
            name=f"operator peak RSS, {args.runs} active runs",
            unit="MiB",
            ours=[busy_rss],
            reference=[idle_rss],
            ours_label=f"VmHWM of the operator after {label}",
            reference_label="the same process idle (after one warm-up run)",
            suite=SUITE,
        ),
        Figure(
            name="worker pod peak RSS",
            unit="MiB",
            ours=chain_workers_rss + map_workers_rss,
            ours_label=(
                f"VmHWM of each worker pod ({args.workers} chain workers after all the chains "
                f"and the raw messages, {args.workers} map workers after the "
                f"{args.items:,}-item map)"
            ),
            suite=SUITE,
        ),
    ]


async def measure(
    runs: int = 200,
    steps: int = 20,
    items: int = 10_000,
    workers: int = 4,
    concurrency: int = 50,
    api_latency_ms: float = 100,
) -> list[Figure]:
    """All figures; starts (and stops) redis-server, emulator, operator and workers."""
    args = argparse.Namespace(
        runs=runs,
        steps=steps,
        items=items,
        workers=workers,
        concurrency=concurrency,
        api_latency_ms=api_latency_ms,
    )
    with tempfile.TemporaryDirectory() as tmp, running_redis() as url:
        return await benchmark(args, url, Path(tmp))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--api-latency-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(**vars(args)))
    print(
        f"operator on the kmock emulator: {args.runs} x {args.steps}-step runs, "
        f"{args.workers} workers x {args.concurrency} concurrency\n"
    )
    print(format_table(figures))


if __name__ == "__main__":
    main()
