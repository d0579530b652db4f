"""What only a real API server shows: the objects as kubectl prints them.

Printer columns evaluated by the server, schema defaulting and validation, real uids in
ownerReferences, generations bumped by the server, Events listed by ``kubectl get
events``. The kmock tier (tests/operator) checks the handlers; it cannot check these.
"""

from __future__ import annotations

import json
import re

import redis

from tests.cluster.helpers import (
    count,
    pipeline,
    ready_pipeline,
    reasons,
    run,
    table,
    wait_succeeded,
)
from tests.kube import KubeEnv
from tests.operator.pipelines import dataflow_spec

AGE = re.compile(r"^(\d+m)?\d+s$")  # a fresh object's age


def test_a_run_as_kubectl_shows_it(kube_env: KubeEnv, redis_client: redis.Redis) -> None:
    spec = dataflow_spec()
    del spec["mode"]  # the CRD's schema defaults it
    created = ready_pipeline(kube_env, "words", spec)
    assert created["spec"]["mode"] == "dataflow"
    assert created["status"]["dag"]["levels"] == [["clean"], ["score"], ["total"]]

    (row,) = table(kube_env.kubectl("get", "tfp", "words").stdout)
    assert AGE.match(row.pop("AGE")), row
    assert row == {"NAME": "words", "MODE": "dataflow", "STEPS": "3", "PHASE": "Ready"}

    inputs = {"words": [" A", "bb ", "Ccc"]}
    kube_env.apply(run("words-1", "words", inputs=inputs))
    done = wait_succeeded(kube_env, "words-1")
    status = done["status"]
    assert status["outputs"]["sum"] == 12
    assert status["progress"] == "3/3"
    assert (count(redis_client, "clean"), count(redis_client, "score")) == (1, 3)

    (row,) = table(kube_env.kubectl("get", "tfpr", "words-1").stdout)
    assert AGE.match(row.pop("AGE")), row
    assert float(row.pop("DURATION")) == status["durationSeconds"]
    assert row == {"NAME": "words-1", "PIPELINE": "words", "PHASE": "Succeeded", "PROGRESS": "3/3"}

    # Status is a subresource: the operator's status patches never bump the generation,
    # and the spec is as it was written, with the schema's defaults (no GitOps drift).
    assert done["metadata"]["generation"] == 1
    assert status["observedGeneration"] == 1
    assert done["spec"] == {"pipelineRef": {"name": "words"}, "inputs": inputs, "cancel": False}
    assert kube_env.get("pipeline", "words")["metadata"]["generation"] == 1


def test_the_operator_posts_events_about_a_run(kube_env: KubeEnv) -> None:
    ready_pipeline(kube_env, "events")
    kube_env.apply(run("events-1", "events", inputs={"words": ["a"]}))
    uid = kube_env.get("pipelinerun", "events-1")["metadata"]["uid"]
    wait_succeeded(kube_env, "events-1")
    assert {"Started", "Succeeded"} <= set(reasons(kube_env, "events-1", "Started", "Succeeded"))
    for event in kube_env.events("events-1"):
        involved = event["involvedObject"]
        assert (involved["kind"], involved["uid"]) == ("PipelineRun", uid)
        assert involved["namespace"] == kube_env.namespace
        assert event["type"] in ("Normal", "Warning")
    # What a user reads.
    listed = kube_env.kubectl("get", "events", "--field-selector=involvedObject.name=events-1")
    assert "Succeeded" in listed.stdout
    assert "pipelinerun/events-1" in listed.stdout


def test_a_run_naming_a_task_no_worker_serves_fails_before_any_step(
    kube_env: KubeEnv, redis_client: redis.Redis
) -> None:
    spec = dataflow_spec()
    spec["steps"][1]["task"] = "tests.operator.op_tasks:scroe"  # a typo
    ready_pipeline(kube_env, "typo", spec)
    kube_env.apply(run("typo-1", "typo", inputs={"words": ["a"]}))
    kube_env.kubectl(
        "wait", "--for=condition=Succeeded=False", "pipelinerun/typo-1", "--timeout=60s"
    )
    status = kube_env.get("pipelinerun", "typo-1")["status"]
    assert status["phase"] == "Failed"
    assert status["conditions"][0]["reason"] == "UnknownTask"
    assert "'tests.operator.op_tasks:scroe'" in status["message"], status
    assert "steps" not in status  # refused as a whole, as `taskiq-flow run` refuses it
    assert count(redis_client, "clean") == 0  # not even the steps before it ran
    assert "Failed" in reasons(kube_env, "typo-1", "Failed")


def test_the_worker_deployment_is_owned_by_the_pipeline(kube_env: KubeEnv) -> None:
    uid = ready_pipeline(kube_env, "owned")["metadata"]["uid"]
    deployment = kube_env.get("deployment", "owned-worker")
    assert deployment["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "flow.taskiq.dev/v1alpha1",
            "kind": "Pipeline",
            "name": "owned",
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-4:] == [
        "--queue",
        f"taskiq-flow:{kube_env.namespace}:owned",
        "--concurrency",
        "4",
    ]


def test_the_server_rejects_what_the_schema_forbids(kube_env: KubeEnv) -> None:
    spec = dataflow_spec()
    del spec["worker"]
    # --validate=false: the API server itself rejects it, not kubectl's client-side check.
    rejected = kube_env.kubectl(
        "apply", "--validate=false", "-f", "-", input=json.dumps(pipeline("bad", spec)), check=False
    )
    assert rejected.returncode != 0
    assert "spec.worker: Required value" in rejected.stderr
    assert not kube_env.exists("pipeline", "bad")
    # An empty string is a value, not a missing one (kmock accepts anything; a Go 1.18+
    # build of the 1.20 validator without the fix in kube-binaries rejects "").
    good = pipeline("empty-string", dataflow_spec())
    good["spec"]["inputs"][0]["description"] = ""
    kube_env.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(good))
    assert kube_env.get("pipeline", "empty-string")["spec"]["inputs"][0]["description"] == ""
