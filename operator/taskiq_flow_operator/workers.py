"""The worker Deployments the operator owns: one per Pipeline, one per inline run.

``Fleet`` creates them, keeps them in shape and scales an inline run's to zero when it
ends; ``WorkerSet`` is what the scaler needs to know of each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from taskiq_flow.manifests.models import PipelineSpec
from taskiq_flow_operator.config import OperatorConfig
from taskiq_flow_operator.deployments import (
    RedisSource,
    WorkerOwner,
    build_deployment_for,
    deployment_name,
    ownership,
    queue_for,
)
from taskiq_flow_operator.kube import KubeClient
from taskiq_flow_operator.metrics import Metrics
from taskiq_flow_operator.reporting import API_ERRORS
from taskiq_flow_operator.resolving import run_key

__all__ = ["Fleet", "Served", "WorkerSet"]

logger = logging.getLogger("taskiq_flow_operator")

Key = tuple[str, str]  # (namespace, Pipeline name or an inline run's ``run_key``)


@dataclass
class WorkerSet:
    """One worker Deployment the scaler follows: a Pipeline's, or an inline run's."""

    namespace: str
    name: str  # the Pipeline (the metrics label), or the scaler key of an inline run
    queue: str
    deployment: str
    concurrency: int = 1
    minimum: int = 0
    maximum: int = 1
    scale_down_delay: float = 0.0
    last_busy: float = 0.0
    replicas: int | None = None
    # Queue depth and replicas per Pipeline only: an inline run's name is never a label.
    metrics: bool = True

    def follow(self, spec: PipelineSpec) -> None:
        """Take the scaling settings of ``spec.worker``."""
        worker = spec.worker
        self.concurrency = worker.concurrency
        self.minimum = worker.replicas.min
        self.maximum = max(worker.replicas.max, worker.replicas.min)
        self.scale_down_delay = worker.scale_down_delay_seconds


class Served(Enum):
    """What became of an inline run's request for workers."""

    READY = "ready"
    FOREIGN = "foreign"  # a Deployment of that name belongs to something else
    STOPPED = "stopped"


class Fleet:
    """Every worker Deployment the operator follows, by ``(namespace, key)``."""

    def __init__(
        self,
        config: OperatorConfig,
        api: Callable[[], KubeClient],
        metrics: Metrics,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.api = api
        self.metrics = metrics
        self.clock = clock
        self.sets: dict[Key, WorkerSet] = {}

    def follow_pipeline(self, namespace: str, name: str, spec: PipelineSpec) -> WorkerSet:
        """The Pipeline's workers, followed from now on with ``spec``'s settings."""
        workers = self.sets.get((namespace, name))
        if workers is None:
            # Busy "now": runs in flight are not all supervised yet (after a restart or a
            # takeover), so nothing is scaled down before the scale-down delay.
            workers = self.sets[(namespace, name)] = WorkerSet(
                namespace,
                name,
                queue_for(namespace, name),
                deployment_name(name),
                last_busy=self.clock(),
            )
        workers.follow(spec)
        return workers

    def forget(self, namespace: str, key: str) -> None:
        """Stop following (and scaling) those workers."""
        self.sets.pop((namespace, key), None)

    async def apply(
        self,
        owner: WorkerOwner,
        spec: PipelineSpec,
        workers: WorkerSet,
        existing: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Create ``owner``'s worker Deployment, or put ``existing`` back in shape; returns
        the replica counts for a status."""
        source = RedisSource(
            url=None if self.config.redis_secret else self.config.redis_url,
            secret_name=self.config.redis_secret,
            secret_key=self.config.redis_secret_key,
        )
        wanted = build_deployment_for(
            owner,
            spec,
            source,
            replicas=workers.minimum if existing is None else None,
            idle_timeout_ms=self.config.worker_idle_timeout_ms,
            extra_env=self.config.worker_env,
        )
        if existing is None:
            await self.api().create_deployment(wanted)
            workers.replicas = workers.minimum
            if workers.metrics:
                self.metrics.set_worker_replicas(workers.namespace, workers.name, workers.minimum)
            return {"replicas": workers.minimum, "readyReplicas": 0}
        # Everything but replicas, which the scaler owns.
        patch = {"metadata": {"labels": wanted["metadata"]["labels"]}, "spec": wanted["spec"]}
        current = {
            "metadata": {"labels": existing.get("metadata", {}).get("labels")},
            "spec": {k: v for k, v in existing.get("spec", {}).items() if k != "replicas"},
        }
        if current != patch:
            await self.api().patch_deployment(owner.namespace, owner.deployment, patch)
        replicas = existing.get("spec", {}).get("replicas")
        if workers.replicas is None and isinstance(replicas, int):
            workers.replicas = replicas
        return {
            "replicas": replicas,
            "readyReplicas": existing.get("status", {}).get("readyReplicas", 0),
        }

    async def serve_run(self, owner: WorkerOwner, spec: PipelineSpec, stopped: Any) -> Served:
        """Create (or put back in shape) an inline run's worker Deployment and follow it."""
        namespace = owner.namespace
        key = run_key(owner.name)
        workers = WorkerSet(
            namespace,
            key,
            owner.queue,
            owner.deployment,
            last_busy=self.clock(),
            metrics=False,
        )
        workers.follow(spec)
        waiting = False
        while not stopped:
            try:
                existing = await self.api().get_deployment(namespace, owner.deployment)
                whose = ownership(existing, owner)
                if whose == "foreign":
                    return Served.FOREIGN
                if whose == "stale":
                    # A deleted run of the same name: the garbage collector removes it.
                    if not waiting:
                        logger.info("waiting for the old Deployment %s to go", owner.deployment)
                        waiting = True
                    await stopped.wait(1.0)
                    continue
                await self.apply(owner, spec, workers, existing)
            except API_ERRORS as exc:
                logger.warning("applying Deployment %s failed: %r", owner.deployment, exc)
                await stopped.wait(1.0)
                continue
            self.sets[(namespace, key)] = workers
            return Served.READY
        return Served.STOPPED

    async def retire(self, owner: WorkerOwner) -> None:
        """An inline run is over: nothing will reach its queue again, scale to 0."""
        try:
            found = await self.api().get_deployment(owner.namespace, owner.deployment)
            if ownership(found, owner) != "ours" or found is None:
                return
            if (found.get("spec") or {}).get("replicas") != 0:
                await self.api().patch_deployment(
                    owner.namespace, owner.deployment, {"spec": {"replicas": 0}}
                )
        except API_ERRORS as exc:
            logger.warning("scaling down Deployment %s failed: %r", owner.deployment, exc)
