"""Deletion and cancellation on a real API server: garbage collection by the real
kube-controller-manager, finalizers, generations bumped by a spec patch."""

from __future__ import annotations

import json

import redis

from tests.cluster.helpers import WAIT, count, ready_pipeline, run, wait_succeeded
from tests.kube import KubeEnv, eventually
from tests.operator.pipelines import dataflow_spec


def test_deleting_a_pipeline_collects_its_worker_deployment(kube_env: KubeEnv) -> None:
    ready_pipeline(kube_env, "doomed")
    kube_env.apply(run("doomed-1", "doomed", inputs={"words": ["a"]}))
    wait_succeeded(kube_env, "doomed-1")
    assert kube_env.exists("deployment", "doomed-worker")
    selector = "--selector=flow.taskiq.dev/pipeline=doomed"
    assert kube_env.kubectl("get", "replicasets", selector, "-o", "name").stdout.strip()

    kube_env.kubectl("delete", "pipeline", "doomed", "--timeout=60s")
    # The controller manager's garbage collector follows the ownerReference: the
    # Deployment goes, and its ReplicaSets with it.
    eventually(
        lambda: not kube_env.exists("deployment", "doomed-worker"),
        30,
        "the garbage collector to delete the worker Deployment",
        interval=0.3,
    )
    eventually(
        lambda: not kube_env.kubectl("get", "replicasets", selector, "-o", "name").stdout.strip(),
        30,
        "the garbage collector to delete its ReplicaSets",
        interval=0.3,
    )
    eventually(lambda: kube_env.kubelet.running("doomed-worker") == 0, 10, "its pods to stop")


def test_deleting_a_running_run_releases_its_finalizer(
    kube_env: KubeEnv, redis_client: redis.Redis
) -> None:
    redis_client.set("delay:clean", 3)  # the first step is still running when deleted
    ready_pipeline(kube_env, "held")
    kube_env.apply(run("held-1", "held", inputs={"words": ["a"]}))
    created = kube_env.get("pipelinerun", "held-1")
    assert "kopf.zalando.org/KopfFinalizerMarker" in created["metadata"].get("finalizers", [])
    uid = created["metadata"]["uid"]
    eventually(lambda: count(redis_client, "clean") == 1, 30, "the first step to start")
    assert kube_env.get("pipelinerun", "held-1")["status"]["phase"] == "Running"

    # kubectl delete waits until the object is gone: the operator released its finalizer.
    deleted = kube_env.kubectl("delete", "pipelinerun", "held-1", "--timeout=60s")
    assert 'pipelinerun.flow.taskiq.dev "held-1" deleted' in deleted.stdout
    assert not kube_env.exists("pipelinerun", "held-1")
    assert redis_client.keys(f"tfo:{{{uid}}}:*") == []


def test_spec_cancel_cancels_a_run_whose_steps_are_queued(
    kube_env: KubeEnv, redis_client: redis.Redis
) -> None:
    kube_env.kubelet.paused = True  # no worker pods: the run waits for one
    ready_pipeline(kube_env, "cancel", dataflow_spec())
    kube_env.apply(run("cancel-1", "cancel", inputs={"words": ["a"]}))
    kube_env.kubectl(
        "wait",
        "--for=jsonpath={.status.conditions[0].reason}=WaitingForWorkers",
        "pipelinerun/cancel-1",
        "--timeout=60s",
    )
    assert kube_env.get("pipelinerun", "cancel-1")["status"]["phase"] == "Pending"
    # The operator wants a worker for the waiting run.
    kube_env.kubectl(
        "wait", "--for=jsonpath={.spec.replicas}=1", "deployment/cancel-worker", "--timeout=60s"
    )
    patch = json.dumps({"spec": {"cancel": True}})
    kube_env.kubectl("patch", "pipelinerun", "cancel-1", "--type=merge", "-p", patch)
    done = kube_env.wait_run("cancel-1", WAIT)
    status = done["status"]
    assert status["phase"] == "Cancelled", status
    assert status["conditions"][0]["status"] == "False"
    assert status["steps"]["clean"]["phase"] == "Cancelled"
    # The API server bumped the generation for the spec change; the operator saw it.
    assert done["metadata"]["generation"] == 2
    assert status["observedGeneration"] == 2
    kube_env.kubectl("wait", "--for=condition=Succeeded=False", "pipelinerun/cancel-1")

    # The cancelled run's first step was queued as it started; workers that come up
    # later drop it instead of running it.
    kube_env.kubelet.paused = False
    queue = f"taskiq-flow:{kube_env.namespace}:cancel"

    def drained() -> bool:
        if not redis_client.exists(queue):
            return False
        last = redis_client.xinfo_stream(queue)["last-generated-id"]
        groups = redis_client.xinfo_groups(queue)
        return bool(groups) and all(
            g["pending"] == 0 and g["last-delivered-id"] == last for g in groups
        )

    eventually(drained, 30, "a worker to drain the queue", interval=0.2)
    assert count(redis_client, "clean") == 0
