"""Pure builders of worker Deployments and of their replica counts.

A Pipeline's workers serve every run of it: Deployment ``<pipeline>-worker`` on queue
``taskiq-flow:<ns>:<pipeline>``, owned by the Pipeline. A PipelineRun with an inline
``spec.pipelineSpec`` gets workers of its own: Deployment ``<run>-run-worker`` on queue
``taskiq-flow:<ns>:run:<run>``, owned by the run (a name cannot hold ``:``, so the queue
of a run never is a Pipeline's). Both are built by ``build_deployment_for``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskiq_flow.manifests.models import PipelineSpec
from taskiq_flow_worker import protocol as p

__all__ = [
    "DEFAULT_IMAGE",
    "LABEL_PIPELINE",
    "LABEL_RUN",
    "RedisSource",
    "WorkerOwner",
    "build_deployment_for",
    "build_worker_deployment",
    "catalog_key_for",
    "deployment_name",
    "desired_replicas",
    "ownership",
    "queue_for",
    "run_deployment_name",
    "run_queue_for",
    "worker_args",
    "worker_revision",
]

DEFAULT_IMAGE = "ghcr.io/taskiq-python/taskiq-flow-worker:latest"
LABEL_PIPELINE = "flow.taskiq.dev/pipeline"
LABEL_RUN = "flow.taskiq.dev/pipelinerun"
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


def _fit(text: str, limit: int = 63) -> str:
    """``text`` if it fits in ``limit`` characters, else a prefix and a hash of all of it
    (deterministic, and two long names differing only at their end stay apart)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-.')}-{digest}"


def run_deployment_name(run: str) -> str:
    """The worker Deployment of a PipelineRun with an inline ``pipelineSpec``."""
    return _fit(f"{run}-run-worker")


def run_queue_for(namespace: str, run: str) -> str:
    """The Redis stream the steps of a run with an inline ``pipelineSpec`` are sent to."""
    return f"taskiq-flow:{namespace}:run:{run}"


@dataclass(frozen=True, slots=True)
class WorkerOwner:
    """What a worker Deployment belongs to and serves: a Pipeline, or a PipelineRun with
    an inline ``pipelineSpec``."""

    kind: str  # Pipeline | PipelineRun
    namespace: str
    name: str
    uid: str

    @property
    def deployment(self) -> str:
        """The Deployment's name."""
        if self.kind == "PipelineRun":
            return run_deployment_name(self.name)
        return deployment_name(self.name)

    @property
    def queue(self) -> str:
        """The Redis stream its workers read."""
        if self.kind == "PipelineRun":
            return run_queue_for(self.namespace, self.name)
        return queue_for(self.namespace, self.name)

    @property
    def selector(self) -> dict[str, str]:
        """The pods' identifying labels (a run's pods never match a Pipeline's selector)."""
        if self.kind == "PipelineRun":
            return {LABEL_RUN: _fit(self.name), LABEL_COMPONENT: "worker"}
        return {LABEL_PIPELINE: self.name, LABEL_COMPONENT: "worker"}


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


def ownership(existing: Mapping[str, Any] | None, owner: WorkerOwner) -> str:
    """Whose the Deployment found under ``owner.deployment`` is: ``"none"`` (there is
    none), ``"ours"`` (``owner`` controls it), ``"stale"`` (an earlier object of the same
    kind and name controls it: the garbage collector is removing it) or ``"foreign"``."""
    if existing is None:
        return "none"
    refs = (existing.get("metadata") or {}).get("ownerReferences") or []
    controller = next((r for r in refs if r.get("controller")), None)
    if controller is None:
        return "foreign"
    if controller.get("uid") == owner.uid:
        return "ours"
    if controller.get("kind") == owner.kind and controller.get("name") == owner.name:
        return "stale"
    return "foreign"


def worker_revision(spec: PipelineSpec) -> str:
    """A digest of what decides which tasks a pipeline's workers serve: the image, the
    modules and the environment (not the scaling settings: a new ``replicas.max`` must
    not roll the pods)."""
    worker = spec.worker
    basis = {
        "image": worker.image or DEFAULT_IMAGE,
        "modules": list(worker.modules),
        "env": [dict(e) for e in worker.env or []],
        "envFrom": [dict(e) for e in worker.env_from or []],
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()[:16]


def catalog_key_for(queue: str, spec: PipelineSpec) -> str:
    """Where the workers of ``queue`` running ``spec`` list the tasks they serve."""
    return p.catalog_key(queue, worker_revision(spec))


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
    return build_deployment_for(
        WorkerOwner("Pipeline", namespace, pipeline, uid),
        spec,
        redis,
        replicas=replicas,
        idle_timeout_ms=idle_timeout_ms,
        extra_env=extra_env,
    )


def build_deployment_for(
    owner: WorkerOwner,
    spec: PipelineSpec,
    redis: RedisSource,
    *,
    replicas: int | None = None,
    idle_timeout_ms: int = 60_000,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The worker Deployment of ``owner``, running ``spec.worker``."""
    worker = spec.worker
    namespace = owner.namespace
    name = owner.deployment
    labels = {**owner.selector, LABEL_MANAGED: "taskiq-flow-operator"}
    env: list[dict[str, Any]] = [
        redis.env(),
        {"name": "TASKIQ_FLOW_MIDDLEWARES", "value": WORKER_MIDDLEWARE},
        {"name": "TASKIQ_FLOW_IDLE_TIMEOUT_MS", "value": str(idle_timeout_ms)},
        {"name": p.CATALOG_ENV, "value": catalog_key_for(owner.queue, spec)},
    ]
    env += [{"name": k, "value": v} for k, v in sorted((extra_env or {}).items())]
    env += [dict(e) for e in worker.env or []]
    container: dict[str, Any] = {
        "name": "worker",
        "image": worker.image or DEFAULT_IMAGE,
        "command": ["taskiq-flow"],
        "args": worker_args(spec, owner.queue),
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
                    "kind": owner.kind,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "selector": {"matchLabels": dict(owner.selector)},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    return body
