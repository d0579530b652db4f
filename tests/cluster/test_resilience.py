"""The operator killed mid-run, and many runs at once, on a real API server."""

from __future__ import annotations

import time
from typing import Any

import redis

from tests.cluster.helpers import WAIT, count, ready_pipeline, run
from tests.kube import KubeEnv, eventually
from tests.operator.pipelines import dataflow_spec


def test_operator_sigkill_mid_map_every_item_runs_once(
    kube_env: KubeEnv, redis_client: redis.Redis
) -> None:
    redis_client.set("delay:score", 0.3)
    spec = dataflow_spec()
    spec["steps"][1]["map"]["maxParallel"] = 3
    ready_pipeline(kube_env, "restart", spec)
    words = [f"w{i}" for i in range(15)]
    kube_env.apply(run("restart-1", "restart", inputs={"words": words}))
    eventually(lambda: count(redis_client, "score") >= 4, 60, "the map to be under way")

    kube_env.kill_operator()
    assert count(redis_client, "score") < len(words)  # killed mid-map
    kube_env.restart_operator()

    status = kube_env.wait_run("restart-1", WAIT)["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"]["sum"] == sum(len(w) * 2 for w in words)
    assert status["steps"]["score"]["items"]["succeeded"] == len(words)
    # Exactly once, across the restart: no item re-sent, none lost.
    assert count(redis_client, "clean") == 1
    assert count(redis_client, "score") == len(words)
    assert count(redis_client, "total") == 1
    assert kube_env.operator.starts == 2


RUNS = 24


def test_many_concurrent_runs_all_succeed(kube_env: KubeEnv, redis_client: redis.Redis) -> None:
    spec = dataflow_spec()
    spec["worker"]["replicas"] = {"min": 0, "max": 3}
    ready_pipeline(kube_env, "many", spec)
    inputs = {i: [f"w{i}", "x" * (i + 1)] for i in range(RUNS)}
    started = time.monotonic()
    # One kubectl apply of all of them: they arrive together.
    kube_env.apply(*(run(f"many-{i}", "many", inputs={"words": inputs[i]}) for i in range(RUNS)))

    def all_finished() -> list[dict[str, Any]] | None:
        runs = kube_env.cluster.api.items(kube_env.path("pipelineruns"))
        phases = [(r.get("status") or {}).get("phase") for r in runs]
        for found, phase in zip(runs, phases, strict=True):
            assert phase not in ("Failed", "Cancelled"), found["status"]
        return runs if len(runs) == RUNS and all(p == "Succeeded" for p in phases) else None

    runs = eventually(all_finished, 90, f"{RUNS} runs to succeed", interval=0.5)
    elapsed = time.monotonic() - started
    # kubectl agrees (and returns at once: every condition is already met).
    kube_env.kubectl("wait", "--for=condition=Succeeded", "pipelinerun", "--all", "--timeout=10s")
    for found in runs:
        i = int(found["metadata"]["name"].removeprefix("many-"))
        assert found["status"]["outputs"]["sum"] == sum(len(w) * 2 for w in inputs[i])
    assert count(redis_client, "clean") == RUNS
    assert count(redis_client, "score") == 2 * RUNS
    assert count(redis_client, "total") == RUNS
    print(f"{RUNS} concurrent runs succeeded in {elapsed:.1f}s")
