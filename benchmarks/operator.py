"""The operator on the emulator: dispatch latency, status patches, status size, throughput.

Run it from the repository root (it starts its own redis-server, the kmock emulator,
the operator process and the worker processes)::

    /work/venv/bin/python benchmarks/operator.py [--runs 200] [--steps 20] [--items 10000]
        [--workers 4] [--concurrency 50]

It prints:

1. **Step-to-successor dispatch latency** (median, p95) over every edge of every chain
   run: from the moment the worker finished a step (its ``finished`` timestamp) to the
   moment the successor's message was in the pipeline's Redis stream (the stream entry's
   id). The operator kicks successors as soon as it reads the step event, before and
   independently of any status patch, so no API-server round trip is in this figure.
2. **Status patches per run per second** (median over the runs): PATCH requests to
   ``pipelineruns/<name>/status`` seen by the emulator, divided by the run's duration.
3. **Status size of a 10,000-item map run** (JSON bytes of ``.status``; target <= 64 KiB).
4. **Throughput**: ``--runs`` concurrent chains of ``--steps`` steps through the operator,
   in steps per second, against raw taskiq on the same worker processes (the same number
   of messages of the same task kicked straight onto the same stream; raw taskiq has no
   dependencies to wait for, so it is an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from taskiq.kicker import AsyncKicker  # noqa: E402

from taskiq_flow.brokers import FlowRedisStreamBroker  # noqa: E402
from tests.operator.harness import (  # noqa: E402
    NAMESPACE,
    Cluster,
    Kubelet,
    Operator,
    emulated_cluster,
    eventually,
    write_kubeconfig,
)
from tests.redis_server import running_redis  # noqa: E402

TASKS = "tests.operator.op_tasks"


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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

    await eventually(probe, timeout, f"{queue} to drain")


async def benchmark(args: argparse.Namespace, redis_url: str, workdir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    async with emulated_cluster() as (emulator, url):
        cluster = Cluster(emulator, url)
        operator = Operator(
            write_kubeconfig(workdir / "kubeconfig", url), redis_url, logs, verbose=False
        )
        kubelet = Kubelet(cluster, logs)
        operator.start()
        kubelet.start()
        try:
            await cluster.create(
                "pipelines",
                body("Pipeline", "chain", chain_spec(args.steps, args.workers, args.concurrency)),
            )
            queue = f"taskiq-flow:{NAMESPACE}:chain"

            async def workers_up() -> bool:
                return kubelet.running("chain-worker") == args.workers

            await eventually(workers_up, 60, "the workers")
            # Warm up: one run, so that the workers have imported everything.
            await cluster.create(
                "pipelineruns",
                body(
                    "PipelineRun", "warmup", {"pipelineRef": {"name": "chain"}, "inputs": {"x0": 0}}
                ),
            )
            await wait_all(cluster, {"warmup"}, 120)

            # -- throughput and latency: concurrent chains through the operator --------
            names = {f"chain-{i}" for i in range(args.runs)}
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    cluster.create(
                        "pipelineruns",
                        body(
                            "PipelineRun",
                            name,
                            {"pipelineRef": {"name": "chain"}, "inputs": {"x0": 0}},
                        ),
                    )
                    for name in sorted(names)
                )
            )
            created_at = time.time() - (time.perf_counter() - started)
            runs = await wait_all(cluster, names, 1800)
            flow_seconds = time.perf_counter() - started
            start_delays = [
                datetime.fromisoformat(r["status"]["startedAt"].replace("Z", "+00:00")).timestamp()
                - created_at
                for r in runs
            ]
            run_seconds = [r["status"]["durationSeconds"] for r in runs]
            failed = [r["metadata"]["name"] for r in runs if r["status"]["phase"] != "Succeeded"]
            steps_total = args.runs * args.steps
            flow_rate = steps_total / flow_seconds

            kicked_at: dict[str, float] = {}
            for entry_id, fields in client.xrange(queue):
                message = json.loads(fields[b"data"])
                kicked_at[message["task_id"]] = int(entry_id.decode().split("-")[0]) / 1000
            latencies = []
            for run in runs:
                uid = run["metadata"]["uid"]
                for i in range(1, args.steps):
                    done = client.get(f"tfo:{{{uid}}}:done:{uid}.s{i}.1")
                    successor = kicked_at.get(f"{uid}.s{i + 1}.1")
                    if done is None or successor is None:
                        continue
                    latencies.append(max(successor - json.loads(done)["finished"], 0.0))

            patches: dict[str, int] = {}
            for request in list(emulator._requests):
                path = request.url.path
                if (
                    request.method.value == "PATCH"
                    and "/pipelineruns/" in path
                    and path.endswith("/status")
                ):
                    name = path.split("/")[-2]
                    patches[name] = patches.get(name, 0) + 1
            per_run = [patches.get(r["metadata"]["name"], 0) for r in runs]
            # A run shorter than a second still gets its start and end patches: the rate
            # is taken over at least one second.
            rates = [
                patches.get(r["metadata"]["name"], 0) / max(r["status"]["durationSeconds"], 1.0)
                for r in runs
            ]

            # -- raw taskiq on the same workers -----------------------------------------
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
            raw_rate = steps_total / raw_seconds

            # -- the status of a large map run ------------------------------------------
            await cluster.create(
                "pipelines", body("Pipeline", "bigmap", map_spec(args.workers, args.concurrency))
            )

            async def map_workers_up() -> bool:
                return kubelet.running("bigmap-worker") == args.workers

            await eventually(map_workers_up, 60, "the map workers")
            await cluster.create(
                "pipelineruns",
                body(
                    "PipelineRun",
                    "bigmap-1",
                    {
                        "pipelineRef": {"name": "bigmap"},
                        "inputs": {"numbers": list(range(args.items))},
                    },
                ),
            )
            big = (await wait_all(cluster, {"bigmap-1"}, 1800))[0]
            status_bytes = len(json.dumps(big["status"]).encode())
        finally:
            await kubelet.stop()
            operator.stop()
            await cluster.close()
    print(
        f"runs: {args.runs} x {args.steps} steps, {args.workers} workers x "
        f"{args.concurrency} concurrency; failed runs: {len(failed)}"
    )
    print("| measure | value |")
    print("|---|---|")
    print(f"| dispatch latency, median | {statistics.median(latencies) * 1000:.1f} ms |")
    print(f"| dispatch latency, p95 | {percentile(latencies, 0.95) * 1000:.1f} ms |")
    print(
        f"| status patches per run, median / max | {statistics.median(per_run):.0f} "
        f"/ {max(per_run)} |"
    )
    print(
        f"| status patches per run per second (over >= 1 s), median / max | "
        f"{statistics.median(rates):.2f} / {max(rates):.2f} |"
    )
    print(
        f"| status size, {args.items}-item map run | {status_bytes} bytes "
        f"({status_bytes / 1024:.1f} KiB; target <= 64 KiB) |"
    )
    print(
        f"| run start after creation, median / max | {statistics.median(start_delays):.2f} s "
        f"/ {max(start_delays):.2f} s |"
    )
    print(
        f"| run duration (20 steps), median / max | {statistics.median(run_seconds):.2f} s "
        f"/ {max(run_seconds):.2f} s |"
    )
    print(f"| operator, steps/s | {flow_rate:.0f} ({flow_seconds:.1f} s) |")
    print(f"| raw taskiq, steps/s | {raw_rate:.0f} ({raw_seconds:.1f} s) |")
    print(f"| ratio operator / raw | {flow_rate / raw_rate:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, running_redis() as url:
        asyncio.run(benchmark(args, url, Path(tmp)))


if __name__ == "__main__":
    main()
