"""Pipelines: validated on every change, their worker Deployment kept in shape."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from taskiq_flow.manifests.compiler import compile_pipeline
from taskiq_flow.manifests.models import PipelineSpec
from taskiq_flow.manifests.problems import ManifestError
from taskiq_flow_operator.deployments import WorkerOwner, deployment_name
from taskiq_flow_operator.kube import KubeClient
from taskiq_flow_operator.resolving import describe_problem
from taskiq_flow_operator.statuses import build_invalid_pipeline_status, build_pipeline_status
from taskiq_flow_operator.workers import Fleet

__all__ = ["Pipelines"]


class Pipelines:
    """The Pipelines seen, by ``(namespace, name)``: runs resolve their reference here
    without a GET (Pipelines are watched)."""

    def __init__(self, fleet: Fleet, api: Callable[[], KubeClient], clock: Callable[[], float]):
        self.fleet = fleet
        self.api = api
        self.clock = clock
        self.bodies: dict[tuple[str, str], dict[str, Any]] = {}

    async def reconcile(
        self, body: Mapping[str, Any], *, apply_deployment: bool = True
    ) -> dict[str, Any]:
        """Validate the Pipeline, keep its Deployment in shape; returns its status."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = meta.get("generation")
        now = self.clock()
        raw_spec = dict(body.get("spec") or {})
        self.bodies[(namespace, name)] = {"metadata": dict(meta), "spec": raw_spec}
        try:
            spec = PipelineSpec.model_validate(raw_spec)
            # Without the task code: the operator image does not hold it.
            compiled = compile_pipeline(spec, name=name)
        except (ManifestError, ValidationError) as exc:
            self.fleet.forget(namespace, name)
            steps = raw_spec.get("steps")
            return build_invalid_pipeline_status(
                describe_problem(exc),
                generation,
                len(steps) if isinstance(steps, list) else None,
                now,
            )
        workers = self.fleet.follow_pipeline(namespace, name, spec)
        status = build_pipeline_status(compiled, generation, deployment_name(name), now)
        if apply_deployment:
            owner = WorkerOwner("Pipeline", namespace, name, meta.get("uid", ""))
            existing = await self.api().get_deployment(namespace, owner.deployment)
            status["worker"].update(await self.fleet.apply(owner, spec, workers, existing))
        return status

    def forget(self, namespace: str, name: str) -> None:
        """The Pipeline is gone: stop scaling its workers."""
        self.fleet.forget(namespace, name)
        self.bodies.pop((namespace, name), None)
