"""Pure builders: Deployments, replicas, Pipeline statuses, Events, metrics."""

from __future__ import annotations

from typing import Any

import pytest

from taskiq_flow.manifests.compiler import compile_pipeline
from taskiq_flow.manifests.models import PipelineSpec
from taskiq_flow_operator.deployments import (
    RedisSource,
    WorkerOwner,
    build_deployment_for,
    build_worker_deployment,
    desired_replicas,
    ownership,
    run_deployment_name,
    worker_revision,
)
from taskiq_flow_operator.handlers import keep_transition_times
from taskiq_flow_operator.metrics import Metrics
from taskiq_flow_operator.notes import build_event
from taskiq_flow_operator.resolving import RunProblem, resolve_pipeline
from taskiq_flow_operator.statuses import build_invalid_pipeline_status, build_pipeline_status
from taskiq_flow_worker.protocol import CATALOG_ENV
from tests.operator.pipelines import TASKS, dataflow_spec, filter_spec


@pytest.mark.parametrize(
    ("in_flight", "concurrency", "low", "high", "expected"),
    [(0, 4, 0, 3, 0), (1, 4, 0, 3, 1), (5, 4, 0, 3, 2), (100, 4, 0, 3, 3), (0, 4, 1, 3, 1)],
)
def test_desired_replicas(
    in_flight: int, concurrency: int, low: int, high: int, expected: int
) -> None:
    assert desired_replicas(in_flight, concurrency, low, high) == expected


def deployment(**worker: Any) -> dict[str, Any]:
    raw = dataflow_spec()
    raw["worker"].update(worker)
    return build_worker_deployment(
        pipeline="words",
        namespace="ns",
        uid="u-1",
        spec=PipelineSpec.model_validate(raw),
        redis=RedisSource(url="redis://r:6379/0"),
        replicas=0,
    )


def test_worker_deployment_runs_the_worker_command_non_root() -> None:
    body = deployment(
        image="acme/tasks:1",
        nodeSelector={"pool": "cpu"},
        serviceAccountName="tasks",
        env=[{"name": "X", "value": "1"}],
        resources={"limits": {"cpu": "1"}},
        imagePullSecrets=[{"name": "regcred"}],
    )
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert body["metadata"]["labels"]["flow.taskiq.dev/pipeline"] == "words"
    pod = body["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["taskiq-flow"]
    assert container["args"] == [
        "worker",
        TASKS,
        "--queue",
        "taskiq-flow:ns:words",
        "--concurrency",
        "4",
    ]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TASKIQ_FLOW_REDIS_URL"] == "redis://r:6379/0"
    assert env["TASKIQ_FLOW_MIDDLEWARES"] == "taskiq_flow_worker:FlowWorkerMiddleware"
    assert env["X"] == "1"
    assert container["resources"] == {"limits": {"cpu": "1"}}
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["serviceAccountName"] == "tasks"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert body["spec"]["replicas"] == 0


def run_deployment(run: str = "words-x7k2p") -> dict[str, Any]:
    return build_deployment_for(
        WorkerOwner("PipelineRun", "ns", run, "run-uid"),
        PipelineSpec.model_validate(dataflow_spec()),
        RedisSource(url="redis://r:6379/0"),
        replicas=0,
    )


def test_an_inline_run_gets_the_same_workers_on_its_own_queue() -> None:
    body = run_deployment()
    meta = body["metadata"]
    assert meta["name"] == "words-x7k2p-run-worker"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "flow.taskiq.dev/v1alpha1",
            "kind": "PipelineRun",
            "name": "words-x7k2p",
            "uid": "run-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    selector = {
        "flow.taskiq.dev/pipelinerun": "words-x7k2p",
        "app.kubernetes.io/component": "worker",
    }
    assert body["spec"]["selector"] == {"matchLabels": selector}
    labels = body["spec"]["template"]["metadata"]["labels"]
    assert "flow.taskiq.dev/pipeline" not in labels  # never a Pipeline's pod
    assert labels.items() >= selector.items()
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "worker",
        TASKS,
        "--queue",
        "taskiq-flow:ns:run:words-x7k2p",
        "--concurrency",
        "4",
    ]
    # Everything else is a Pipeline's Deployment, built the same way.
    pipeline = deployment()
    assert (
        body["spec"]["template"]["spec"]["securityContext"]
        == (pipeline["spec"]["template"]["spec"]["securityContext"])
    )
    env = {e["name"]: e.get("value") for e in container["env"]}
    pipeline_env = {
        e["name"]: e.get("value")
        for e in pipeline["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    # The workers list their tasks beside their own queue, under the same worker revision.
    run_catalog, pipeline_catalog = env.pop(CATALOG_ENV), pipeline_env.pop(CATALOG_ENV)
    assert run_catalog.startswith("tfo:catalog:taskiq-flow:ns:run:words-x7k2p:")
    assert pipeline_catalog.startswith("tfo:catalog:taskiq-flow:ns:words:")
    assert run_catalog.rsplit(":", 1)[1] == pipeline_catalog.rsplit(":", 1)[1]
    assert env == pipeline_env
    assert run_deployment() == body  # deterministic


def test_the_catalogue_key_follows_what_decides_the_tasks_not_the_scaling() -> None:
    def revision(**worker: Any) -> str:
        spec = dataflow_spec()
        spec["worker"] = {**spec["worker"], **worker}
        return worker_revision(PipelineSpec.model_validate(spec))

    assert revision() == revision(replicas={"min": 1, "max": 8}, concurrency=9)
    assert revision(modules=[TASKS, "more_tasks"]) != revision()
    assert revision(image="registry.example/tasks:2") != revision()
    assert revision(env=[{"name": "PYTHONPATH", "value": "/code"}]) != revision()


def test_long_run_names_fit_and_stay_apart() -> None:
    one, two = "r" * 70 + "-abcde", "r" * 70 + "-fghij"
    assert len(run_deployment_name(one)) <= 63
    assert run_deployment_name(one) != run_deployment_name(two)
    assert run_deployment_name(one) == run_deployment_name(one)
    label = run_deployment(one)["metadata"]["labels"]["flow.taskiq.dev/pipelinerun"]
    assert len(label) <= 63


def test_whose_deployment_it_is() -> None:
    owner = WorkerOwner("PipelineRun", "ns", "words-x7k2p", "run-uid")
    assert ownership(None, owner) == "none"
    assert ownership(run_deployment(), owner) == "ours"
    again = WorkerOwner("PipelineRun", "ns", "words-x7k2p", "new-uid")
    assert ownership(run_deployment(), again) == "stale"  # a deleted run of that name
    assert ownership(deployment(), owner) == "foreign"
    assert ownership({"metadata": {"name": "words-x7k2p-run-worker"}}, owner) == "foreign"


def test_redis_url_from_a_secret() -> None:
    env = RedisSource(secret_name="redis", secret_key="uri").env()
    assert env["valueFrom"] == {"secretKeyRef": {"name": "redis", "key": "uri"}}


def test_pipeline_status_and_invalid_status() -> None:
    compiled = compile_pipeline(PipelineSpec.model_validate(dataflow_spec()), name="words")
    status = build_pipeline_status(compiled, 3, "words-worker", 0.0)
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == 3
    assert status["dag"]["levels"] == [["clean"], ["score"], ["total"]]
    assert status["dag"]["criticalPath"] == ["clean", "score", "total"]
    assert status["conditions"][0]["type"] == "Ready"
    invalid = build_invalid_pipeline_status("bad", 1, 2, 0.0)
    assert invalid["conditions"][0] == {
        "type": "Ready",
        "status": "False",
        "reason": "Invalid",
        "message": "bad",
        "lastTransitionTime": "1970-01-01T00:00:00.000Z",
    }


def test_resolving_a_run_names_what_is_wrong() -> None:
    with pytest.raises(RunProblem) as missing:
        resolve_pipeline({"pipelineRef": {"name": "nope"}}, "ns", None)
    assert missing.value.reason == "PipelineNotFound"
    assert "'nope' not found in namespace 'ns'" in missing.value.message
    bad = dataflow_spec()
    bad["steps"][2]["inputs"] = ["missing"]
    with pytest.raises(RunProblem) as invalid:
        resolve_pipeline({"pipelineRef": {"name": "p"}}, "ns", {"spec": bad})
    assert invalid.value.reason == "PipelineInvalid"
    assert "missing" in invalid.value.message
    name, compiled, _ = resolve_pipeline({"pipelineSpec": dataflow_spec()}, "ns", None)
    assert name == ""
    assert len(compiled.dag) == 3


def test_filter_steps_compile_like_map_steps() -> None:
    compiled = compile_pipeline(PipelineSpec.model_validate(filter_spec()), name="filters")
    node = compiled.dag.nodes["long"]
    assert (node.kind, node.filter_items, node.map_over, node.map_param) == (
        "map",
        True,
        "words",
        "word",
    )
    assert build_pipeline_status(compiled, 1, "filters-worker", 0.0)["phase"] == "Ready"


def test_conditions_keep_their_transition_time() -> None:
    old = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "T0"}]}
    new = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "T1"}]}
    assert keep_transition_times(old, new)["conditions"][0]["lastTransitionTime"] == "T0"
    flipped = {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "T2"}]}
    assert keep_transition_times(old, flipped)["conditions"][0]["lastTransitionTime"] == "T2"


def test_event_about_a_run() -> None:
    body = {"kind": "PipelineRun", "metadata": {"name": "r", "namespace": "ns", "uid": "u"}}
    event = build_event(body, "Warning", "StepFailed", "boom", 1.0)
    assert event["involvedObject"]["uid"] == "u"
    assert event["reason"] == "StepFailed"
    assert event["metadata"]["namespace"] == "ns"


def test_metrics_render_every_family_without_run_labels() -> None:
    metrics = Metrics()
    metrics.run_finished("ns", "words", "Succeeded", 1.5)
    metrics.step_finished("ns", "words", "clean", "Succeeded", 0.2)
    metrics.set_active_runs({"ns": 1})
    metrics.set_queue_depth("taskiq-flow:ns:words", 3)
    metrics.set_worker_replicas("ns", "words", 2)
    text = metrics.render()
    for family in (
        "taskiq_flow_runs_total",
        "taskiq_flow_run_duration_seconds",
        "taskiq_flow_steps_total",
        "taskiq_flow_step_duration_seconds",
        "taskiq_flow_active_runs",
        "taskiq_flow_queue_depth",
        "taskiq_flow_worker_replicas",
    ):
        assert f"# TYPE {family}" in text
    assert 'taskiq_flow_runs_total{namespace="ns",phase="Succeeded",pipeline="words"} 1' in text
    assert (
        'taskiq_flow_run_duration_seconds_bucket{namespace="ns",pipeline="words",le="+Inf"} 1'
        in text
    )
