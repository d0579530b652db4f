"""The handlers end to end: kopf as a real process against kmock over HTTP, real workers,
real Redis. Fast, and the place for handler-level behaviour.

kmock is not an API server: it neither validates nor defaults against the CRD schema,
prints no columns, has no status subresource semantics of its own, no garbage collector
and no real finalizer handling (tests/README.md lists the gaps). What depends on those
is checked in tests/cluster against a real kube-apiserver and kube-controller-manager:
printer columns, Events, ownerReferences with real uids and their garbage collection,
deletion through the finalizer, cancel by ``kubectl patch``, the examples applied with
``kubectl``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import yaml

from tests.operator.conftest import Env
from tests.operator.harness import ROOT, eventually
from tests.operator.pipelines import dataflow_spec, filter_spec


def pipeline(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "flow.taskiq.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": spec or dataflow_spec(),
    }


def run(name: str, pipeline_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flow.taskiq.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": pipeline_name}, **spec},
    }


def printer_columns(plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What ``kubectl get`` shows: each printer column's jsonPath evaluated on ``obj``."""
    crd = yaml.safe_load((ROOT / "crds" / f"{plural}.flow.taskiq.dev.yaml").read_text())
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    shown: dict[str, Any] = {}
    for column in columns:
        value: Any = obj
        for part in column["jsonPath"].strip(".").split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shown[column["name"]] = value
    return shown


def count(env: Env, step: str) -> int:
    raw = env.redis.get(f"count:{step}")
    return int(raw) if raw else 0


async def test_a_dataflow_run_with_a_map_step_succeeds(env: Env) -> None:
    cluster = env.cluster
    await cluster.create("pipelines", pipeline("words"))

    async def ready() -> dict[str, Any] | None:
        found = await cluster.get("pipelines", "words")
        return found if (found or {}).get("status", {}).get("phase") == "Ready" else None

    status = (await eventually(ready, 30, "the pipeline to be Ready"))["status"]
    assert status["dag"]["levels"] == [["clean"], ["score"], ["total"]]
    assert status["conditions"][0]["reason"] == "Valid"
    deployment = await cluster.get("deployments", "words-worker")
    assert deployment is not None
    assert deployment["metadata"]["ownerReferences"][0]["name"] == "words"
    await cluster.create(
        "pipelineruns", run("words-1", "words", inputs={"words": [" A", "bb ", "Ccc"]})
    )
    done = await cluster.wait_run("words-1", {"Succeeded", "Failed"})
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"]["sum"] == 12
    assert status["outputs"]["scores"] == [2, 4, 6]
    assert status["steps"]["score"]["items"] == {
        "total": 3,
        "succeeded": 3,
        "failed": 0,
        "running": 0,
    }
    assert status["progress"] == "3/3"
    assert status["conditions"][0]["type"] == "Succeeded"
    assert status["conditions"][0]["status"] == "True"
    assert count(env, "clean") == 1
    assert count(env, "score") == 3
    assert count(env, "total") == 1
    seen = await reasons(env, "words-1", "Started", "Succeeded")
    assert "Started" in seen
    assert "Succeeded" in seen
    # The spec is never written by the operator.
    fresh = await cluster.get("pipelines", "words")
    assert fresh is not None
    assert fresh["spec"] == dataflow_spec()
    # Every printer column of both CRDs shows something.
    assert printer_columns("pipelines", fresh) == {
        "Mode": "dataflow",
        "Steps": 3,
        "Phase": "Ready",
        "Age": fresh["metadata"]["creationTimestamp"],
    }
    columns = printer_columns("pipelineruns", done)
    assert columns["Pipeline"] == "words"
    assert columns["Phase"] == "Succeeded"
    assert columns["Progress"] == "3/3"
    assert isinstance(columns["Duration"], float)
    assert columns["Age"]
    # Metrics and health.
    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{env.operator.metrics_port}"
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{base}/metrics") as response:
            metrics = await response.text()
    labels = 'namespace="tf-test",phase="Succeeded",pipeline="words"'
    assert f"taskiq_flow_runs_total{{{labels}}} 1" in metrics
    step = 'namespace="tf-test",phase="Succeeded",pipeline="words",step="score"'
    assert f"taskiq_flow_steps_total{{{step}}} 1" in metrics
    assert 'taskiq_flow_worker_replicas{namespace="tf-test",pipeline="words"}' in metrics
    assert 'taskiq_flow_queue_depth{queue="taskiq-flow:tf-test:words"}' in metrics
    assert "taskiq_flow_run_duration_seconds_count" in metrics
    assert "taskiq_flow_active_runs" in metrics
    assert "words-1" not in metrics  # no run names as labels


async def ready_pipeline(env: Env, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    await env.cluster.create("pipelines", pipeline(name, spec))

    async def ready() -> dict[str, Any] | None:
        found = await env.cluster.get("pipelines", name)
        phase = (found or {}).get("status", {}).get("phase")
        return found if phase in ("Ready", "Invalid") else None

    return await eventually(ready, 30, f"pipeline {name} to be reconciled")


def one_step(task: str, **step: Any) -> dict[str, Any]:
    spec = dataflow_spec()
    spec["steps"] = [
        {"name": "only", "task": f"tests.operator.op_tasks:{task}", "inputs": ["words"], **step}
    ]
    return spec


async def reasons(env: Env, name: str, *expected: str) -> list[str]:
    """The reasons of the Events about ``name``, once all of ``expected`` are among them.

    Events are posted after the status patch that ends a run, so a test that saw the
    phase change waits for them."""

    async def probe() -> list[str] | None:
        found = [e["reason"] for e in await env.cluster.events_for(name)]
        return found if all(found.count(r) >= expected.count(r) for r in expected) else None

    return await eventually(probe, timeout=10, what=f"events {expected} about {name}")


async def test_a_failing_step_fails_the_run(env: Env) -> None:
    await ready_pipeline(env, "failing", one_step("boom"))
    await env.cluster.create("pipelineruns", run("failing-1", "failing", inputs={"words": ["a"]}))
    status = (await env.cluster.wait_run("failing-1", {"Succeeded", "Failed"}))["status"]
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][0]["reason"] == "Failed"
    assert "boom: the step failed on purpose" in status["steps"]["only"]["message"]
    assert "boom" in status["message"]
    assert {"Started", "StepFailed", "Failed"} <= set(
        await reasons(env, "failing-1", "Started", "StepFailed", "Failed")
    )
    assert count(env, "boom") == 1


async def test_retries_with_backoff(env: Env) -> None:
    spec = one_step("flaky", retries={"limit": 3, "delaySeconds": 0.2, "backoff": 1.5})
    await ready_pipeline(env, "flaky", spec)
    await env.cluster.create("pipelineruns", run("flaky-1", "flaky", inputs={"words": ["a"]}))
    status = (await env.cluster.wait_run("flaky-1", {"Succeeded", "Failed"}))["status"]
    assert status["phase"] == "Succeeded", status
    assert status["steps"]["only"]["attempts"] == 3
    assert count(env, "flaky") == 3
    assert (await reasons(env, "flaky-1", "Retrying", "Retrying")).count("Retrying") == 2


async def test_cancel_queued_steps_never_execute(env: Env) -> None:
    env.kubelet.paused = True  # no worker pods: the steps stay queued in Redis
    await ready_pipeline(env, "cancel", dataflow_spec())
    await env.cluster.create("pipelineruns", run("cancel-1", "cancel", inputs={"words": ["a"]}))
    # No worker has listed the tasks it serves yet: the run waits for one.
    waiting = await env.cluster.wait_run("cancel-1", {"Pending"})
    assert waiting["status"]["conditions"][0]["reason"] == "WaitingForWorkers"

    async def worker_wanted() -> bool:
        deployment = await env.cluster.get("deployments", "cancel-worker")
        return bool(deployment) and deployment["spec"].get("replicas", 0) >= 1

    await eventually(worker_wanted, 30, "a worker to be wanted")
    await env.cluster.patch("pipelineruns", "cancel-1", {"spec": {"cancel": True}})
    done = await env.cluster.wait_run("cancel-1", {"Cancelled", "Succeeded", "Failed"})
    status = done["status"]
    assert status["phase"] == "Cancelled"
    assert status["conditions"][0]["status"] == "False"
    assert status["observedGeneration"] == 2
    assert status["steps"]["clean"]["phase"] == "Cancelled"
    assert "Cancelled" in await reasons(env, "cancel-1", "Cancelled")
    env.kubelet.paused = False
    queue = "taskiq-flow:tf-test:cancel"

    def drained() -> bool:
        if not env.redis.exists(queue):
            return False
        last = env.redis.xinfo_stream(queue)["last-generated-id"]
        groups = env.redis.xinfo_groups(queue)
        return bool(groups) and all(
            g["pending"] == 0 and g["last-delivered-id"] == last for g in groups
        )

    async def probe() -> bool:
        return drained()

    await eventually(probe, 30, "the worker to drain the queue")
    assert count(env, "clean") == 0


async def test_run_timeout(env: Env) -> None:
    env.redis.set("delay:clean", 10)
    await ready_pipeline(env, "timeout", dataflow_spec(timeoutSeconds=2))
    await env.cluster.create("pipelineruns", run("timeout-1", "timeout", inputs={"words": ["a"]}))
    status = (await env.cluster.wait_run("timeout-1", {"Succeeded", "Failed"}))["status"]
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "Timeout"
    assert "timeout of 2s" in status["message"]


async def test_operator_sigkill_mid_run_executes_every_step_once(env: Env) -> None:
    env.redis.set("delay:score", 0.3)
    spec = dataflow_spec()
    spec["steps"][1]["map"]["maxParallel"] = 3
    await ready_pipeline(env, "restart", spec)
    words = [f"w{i}" for i in range(15)]
    await env.cluster.create("pipelineruns", run("restart-1", "restart", inputs={"words": words}))

    async def midway() -> bool:
        return count(env, "score") >= 4

    await eventually(midway, 30, "the map to be half-way")
    env.operator.kill()
    env.operator.start()
    status = (await env.cluster.wait_run("restart-1", {"Succeeded", "Failed"}))["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"]["sum"] == sum(len(w) * 2 for w in words)
    assert count(env, "clean") == 1
    assert count(env, "score") == 15
    assert count(env, "total") == 1


async def test_worker_sigkill_mid_step_is_redelivered(env: Env) -> None:
    env.redis.set("delay:clean", 2)
    await ready_pipeline(env, "redeliver", dataflow_spec())
    await env.cluster.create(
        "pipelineruns", run("redeliver-1", "redeliver", inputs={"words": ["a"]})
    )

    async def running() -> bool:
        return count(env, "clean") == 1

    await eventually(running, 30, "the step to start")
    env.redis.set("delay:clean", 0)
    for pod in env.kubelet.pods["redeliver-worker"]:
        pod.kill()
    status = (await env.cluster.wait_run("redeliver-1", {"Succeeded", "Failed"}, 60))["status"]
    assert status["phase"] == "Succeeded", status
    assert count(env, "clean") == 2  # the killed attempt, then the redelivered one
    assert env.kubelet.started["redeliver-worker"] >= 2


async def test_invalid_pipeline_and_its_runs(env: Env) -> None:
    spec = dataflow_spec()
    spec["steps"][2]["inputs"] = ["nothing_makes_this"]
    found = await ready_pipeline(env, "invalid", spec)
    status = found["status"]
    assert status["phase"] == "Invalid"
    assert status["conditions"][0]["status"] == "False"
    assert status["conditions"][0]["reason"] == "Invalid"
    assert "nothing_makes_this" in status["conditions"][0]["message"]
    await env.cluster.create("pipelineruns", run("invalid-1", "invalid", inputs={"words": []}))
    run_status = (await env.cluster.wait_run("invalid-1", {"Failed"}))["status"]
    assert run_status["conditions"][0]["reason"] == "PipelineInvalid"
    assert "nothing_makes_this" in run_status["message"]


async def test_a_run_whose_pipeline_does_not_exist(env: Env) -> None:
    await env.cluster.create("pipelineruns", run("orphan-1", "later", inputs={"words": ["x"]}))
    status = (await env.cluster.wait_run("orphan-1", {"Pending"}))["status"]
    assert status["conditions"][0]["reason"] == "PipelineNotFound"
    assert status["conditions"][0]["status"] == "Unknown"
    assert "Pipeline 'later' not found in namespace 'tf-test'" in status["message"]
    assert "PipelineNotFound" in await reasons(env, "orphan-1", "PipelineNotFound")
    await ready_pipeline(env, "later", dataflow_spec())
    status = (await env.cluster.wait_run("orphan-1", {"Succeeded", "Failed"}))["status"]
    assert status["phase"] == "Succeeded"


async def test_ttl_deletes_the_run_and_the_finalizer_its_keys(env: Env) -> None:
    await ready_pipeline(env, "ttl", dataflow_spec())
    await env.cluster.create(
        "pipelineruns", run("ttl-1", "ttl", inputs={"words": ["a"]}, ttlSecondsAfterFinished=1)
    )
    created = await env.cluster.get("pipelineruns", "ttl-1")
    assert created is not None
    uid = created["metadata"]["uid"]
    await env.cluster.wait_run("ttl-1", {"Succeeded"})
    assert env.redis.keys(f"tfo:{{{uid}}}:*")

    async def gone() -> bool:
        return await env.cluster.get("pipelineruns", "ttl-1") is None

    await eventually(gone, 30, "the run to be deleted")
    assert env.redis.keys(f"tfo:{{{uid}}}:*") == []


async def test_workers_scale_up_with_work_and_back_down(env: Env) -> None:
    env.redis.set("delay:score", 1.5)
    spec = dataflow_spec()
    spec["worker"].update(concurrency=1, replicas={"min": 0, "max": 3}, scaleDownDelaySeconds=1)
    spec["steps"][1]["map"]["maxParallel"] = 6
    await ready_pipeline(env, "scale", spec)
    words = [f"w{i}" for i in range(6)]
    await env.cluster.create("pipelineruns", run("scale-1", "scale", inputs={"words": words}))

    async def scaled_up() -> bool:
        deployment = await env.cluster.get("deployments", "scale-worker")
        return bool(deployment) and deployment["spec"].get("replicas") == 3

    await eventually(scaled_up, 30, "three workers")
    await env.cluster.wait_run("scale-1", {"Succeeded"}, 60)

    async def scaled_down() -> bool:
        deployment = await env.cluster.get("deployments", "scale-worker")
        return bool(deployment) and deployment["spec"].get("replicas") == 0

    await eventually(scaled_down, 30, "no workers")
    assert env.kubelet.max_seen["scale-worker"] == 3


async def test_filter_steps_keep_the_items_their_task_returned_true_for(env: Env) -> None:
    await ready_pipeline(env, "filters", filter_spec())
    words = ["a", "bb", "ccc", "d", "eeee"]
    await env.cluster.create("pipelineruns", run("filters-1", "filters", inputs={"words": words}))
    status = (await env.cluster.wait_run("filters-1", {"Succeeded", "Failed"}))["status"]
    assert status["phase"] == "Succeeded", status
    # What `taskiq-flow run` outputs for the same pipeline and inputs.
    assert status["outputs"] == {
        "long_words": ["bb", "ccc", "eeee"],
        "all_scores": [4, 6, 8],
        "scores": [6, 8],
        "sum": 14,
    }
    done = {"failed": 0, "running": 0}
    assert status["steps"]["long"]["items"] == {"total": 5, "succeeded": 5, **done}
    assert status["steps"]["big"]["items"] == {"total": 3, "succeeded": 3, **done}
    assert status["progress"] == "4/4"
    assert (count(env, "longer"), count(env, "score"), count(env, "at_least")) == (5, 3, 3)


async def test_an_inline_run_gets_its_own_workers(env: Env) -> None:
    spec = {"pipelineSpec": dataflow_spec(), "inputs": {"words": [" A", "bb "]}}
    body = {
        "apiVersion": "flow.taskiq.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "inline-1"},
        "spec": spec,
    }
    created = await env.cluster.create("pipelineruns", body)
    done = await env.cluster.wait_run("inline-1", {"Succeeded", "Failed"})
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputs"]["sum"] == 6
    assert status["outputs"]["scores"] == [2, 4]
    # Served by workers started from exactly the Deployment the operator wrote for it.
    deployment = await env.cluster.get("deployments", "inline-1-run-worker")
    assert deployment is not None
    assert deployment["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "flow.taskiq.dev/v1alpha1",
            "kind": "PipelineRun",
            "name": "inline-1",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert deployment["metadata"]["labels"]["flow.taskiq.dev/pipelinerun"] == "inline-1"
    assert [d["metadata"]["name"] for d in await env.cluster.list("deployments")] == [
        "inline-1-run-worker"
    ]
    assert env.kubelet.started["inline-1-run-worker"] >= 1
    command = env.kubelet.commands["inline-1-run-worker"]
    assert command[-4:] == ["--queue", "taskiq-flow:tf-test:run:inline-1", "--concurrency", "4"]
    assert count(env, "clean") == 1
    assert count(env, "score") == 2
    # GitOps sees no drift: the run's spec is as it was written.
    assert done["spec"] == spec
    assert done["metadata"]["generation"] == 1

    async def scaled_down() -> bool:
        found = await env.cluster.get("deployments", "inline-1-run-worker") or {}
        return bool(found.get("spec", {}).get("replicas") == 0)

    await eventually(scaled_down, 30, "the run's workers to go once it is over")
    # Deleting the run deletes its queue (and its Deployment, by its ownerReference).
    queue = "taskiq-flow:tf-test:run:inline-1"
    assert env.redis.exists(queue)
    await env.cluster.delete("pipelineruns", "inline-1")

    async def gone() -> bool:
        return not env.redis.exists(queue)

    await eventually(gone, 30, "the run's queue to be deleted")
