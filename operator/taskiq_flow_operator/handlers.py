"""kopf handlers: thin — parse, call ``Operator``, apply the result."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from taskiq_flow_operator.kube import GROUP, VERSION, KubeClient
from taskiq_flow_operator.serving import serve_http
from taskiq_flow_operator.supervising import Operator

__all__ = ["build_registry", "keep_transition_times", "login_in_kopf_order"]

logger = logging.getLogger("taskiq_flow_operator")


def keep_transition_times(old: Mapping[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with each condition's ``lastTransitionTime`` kept when its status did not change."""
    before = {c.get("type"): c for c in (old or {}).get("conditions") or []}
    for cond in new.get("conditions") or []:
        previous = before.get(cond["type"])
        if previous is not None and previous.get("status") == cond["status"]:
            cond["lastTransitionTime"] = previous.get("lastTransitionTime")
    return new


def login_in_kopf_order(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in as kopf does by default: through pykube or the ``kubernetes`` client when
    installed (so kubeconfigs with exec plugins, OIDC or cloud auth providers work), else
    with the in-cluster service account or a plain kubeconfig."""
    if importlib.util.find_spec("pykube") is not None:
        return kopf.login_via_pykube(**kwargs)
    if importlib.util.find_spec("kubernetes") is not None:
        return kopf.login_via_client(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def build_registry(op: Operator, metrics_port: int | None) -> kopf.OperatorRegistry:
    """The operator's handlers, bound to ``op``."""
    registry = kopf.OperatorRegistry()
    tasks: list[asyncio.Task[None]] = []
    stopping = asyncio.Event()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = login_in_kopf_order(**kwargs)
        if info is not None:
            op.kube = KubeClient(info)
        return info

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # The CR status is the operator's output only: kopf's own bookkeeping goes to
        # annotations, never to status or spec.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
        settings.posting.level = logging.WARNING
        settings.watching.connect_timeout = 10
        settings.watching.server_timeout = 60
        # Started in every replica; in HA mode they act only while kopf lets this replica
        # act (``op.leadership``, kept in line with the peering object by follow_peering).
        tasks.append(asyncio.create_task(op.follow_peering(stopping)))
        tasks.append(asyncio.create_task(op.route_events(stopping)))
        tasks.append(asyncio.create_task(op.scale(stopping)))
        if metrics_port is not None:
            tasks.append(asyncio.create_task(serve_http(op, metrics_port, stopping)))

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await op.close()

    # -- Pipelines -------------------------------------------------------------------------

    async def reconcile(body: kopf.Body, patch: kopf.Patch) -> None:
        status = await op.reconcile_pipeline(body)
        old = dict(body.get("status") or {})
        keep_transition_times(old, status)
        if any(old.get(k) != v for k, v in status.items()):
            patch.status.update(status)

    @kopf.on.resume(GROUP, VERSION, "pipelines", registry=registry)
    @kopf.on.create(GROUP, VERSION, "pipelines", registry=registry)
    @kopf.on.update(GROUP, VERSION, "pipelines", field="spec", registry=registry)
    async def pipeline_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await reconcile(body, patch)

    @kopf.timer(GROUP, VERSION, "pipelines", interval=10, initial_delay=10, registry=registry)
    async def pipeline_in_shape(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        await reconcile(body, patch)

    @kopf.on.delete(GROUP, VERSION, "pipelines", optional=True, registry=registry)
    async def pipeline_deleted(namespace: str | None, name: str, **_: Any) -> None:
        op.forget_pipeline(namespace or "", name)

    # -- PipelineRuns ----------------------------------------------------------------------

    @kopf.daemon(
        GROUP, VERSION, "pipelineruns", cancellation_timeout=5, backoff=2, registry=registry
    )
    async def run_daemon(
        body: kopf.Body, spec: kopf.Spec, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        await op.supervise_run(body, spec, stopped)

    @kopf.on.delete(GROUP, VERSION, "pipelineruns", registry=registry)
    async def run_deleted(uid: str, body: kopf.Body, **_: Any) -> None:
        await op.cleanup_run(uid, body)

    return registry
