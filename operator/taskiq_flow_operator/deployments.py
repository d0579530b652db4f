"""Pure builders of worker Deployments and of their replica counts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskiq_flow.manifests.models import PipelineSpec

__all__ = [
    "DEFAULT_IMAGE",
    "LABEL_PIPELINE",
    "RedisSource",
    "build_worker_deployment",
    "deployment_name",
    "desired_replicas",
    "queue_for",
    "worker_args",
]

DEFAULT_IMAGE = "ghcr.io/taskiq-python/taskiq-flow-worker:latest"
LABEL_PIPELINE = "flow.taskiq.dev/pipeline"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
WORKER_MIDDLEWARE = "taskiq_flow_worker:FlowWorkerMiddleware"

# Fields of spec.worker passed to the pod as they are (manifest name → pod field).
_POD_FIELDS = {
    "node_selector": "nodeSelector",
    "tolerations": "tolerations",
    "affinity": "affinity",
    "service_account_name": "serviceAccountName",
}


@dataclass(frozen=True, slots=True)
class RedisSource:
    """Where workers find the Redis URL: a literal, or a key of a Secret."""

    url: str | None = None
    secret_name: str | None = None
    secret_key: str = "url"

    def env(self) -> dict[str, Any]:
        """The container's ``TASKIQ_FLOW_REDIS_URL`` entry."""
        if self.secret_name is not None:
            return {
                "name": "TASKIQ_FLOW_REDIS_URL",
                "valueFrom": {"secretKeyRef": {"name": self.secret_name, "key": self.secret_key}},
            }
        return {"name": "TASKIQ_FLOW_REDIS_URL", "value": self.url or "redis://localhost:6379/0"}


def deployment_name(pipeline: str) -> str:
    """The worker Deployment of a Pipeline."""
    return f"{pipeline}-worker"[:63].rstrip("-")


def queue_for(namespace: str, pipeline: str) -> str:
    """The Redis stream a pipeline's steps are sent to."""
    return f"taskiq-flow:{namespace}:{pipeline}"


def worker_args(spec: PipelineSpec, queue: str) -> list[str]:
    """``taskiq-flow worker`` arguments for a pipeline."""
    return [
        "worker",
        *spec.worker.modules,
        "--queue",
        queue,
        "--concurrency",
        str(spec.worker.concurrency),
    ]


def desired_replicas(in_flight: int, concurrency: int, minimum: int, maximum: int) -> int:
    """``clamp(ceil(in_flight / concurrency), min, max)``."""
    wanted = math.ceil(in_flight / max(concurrency, 1))
    return max(minimum, min(maximum, wanted))


def build_worker_deployment(
    *,
    pipeline: str,
    namespace: str,
    uid: str,
    spec: PipelineSpec,
    redis: RedisSource,
    replicas: int | None = None,
    idle_timeout_ms: int = 60_000,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The worker Deployment of a Pipeline, owned by it.

    ``replicas`` is left out when ``None``: the operator's scaler (or KEDA) owns it.
    """
    worker = spec.worker
    name = deployment_name(pipeline)
    labels = {
        LABEL_PIPELINE: pipeline,
        LABEL_COMPONENT: "worker",
        LABEL_MANAGED: "taskiq-flow-operator",
    }
    env: list[dict[str, Any]] = [
        redis.env(),
        {"name": "TASKIQ_FLOW_MIDDLEWARES", "value": WORKER_MIDDLEWARE},
        {"name": "TASKIQ_FLOW_IDLE_TIMEOUT_MS", "value": str(idle_timeout_ms)},
    ]
    env += [{"name": k, "value": v} for k, v in sorted((extra_env or {}).items())]
    env += [dict(e) for e in worker.env or []]
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker.image or DEFAULT_IMAGE,
        "command": ["taskiq-flow"],
        "args": worker_args(spec, queue_for(namespace, pipeline)),
        "env": env,
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if worker.env_from:
        container["envFrom"] = [dict(e) for e in worker.env_from]
    if worker.resources:
        container["resources"] = dict(worker.resources)
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        # Tasks in flight finish before the pod goes (the worker stops on SIGTERM).
        "terminationGracePeriodSeconds": 60,
    }
    for attr, field in _POD_FIELDS.items():
        value = getattr(worker, attr)
        if value:
            pod_spec[field] = value if not isinstance(value, list) else [dict(v) for v in value]
    if worker.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s.name} for s in worker.image_pull_secrets]
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "flow.taskiq.dev/v1alpha1",
                    "kind": "Pipeline",
                    "name": pipeline,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "selector": {"matchLabels": {LABEL_PIPELINE: pipeline, LABEL_COMPONENT: "worker"}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body
