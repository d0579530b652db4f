"""``Operator``: the operator's parts, put together and shared by its kopf handlers.

Each part has one concern and takes what it needs explicitly:

- ``pipelines.Pipelines``: Pipelines validated, their worker Deployment kept in shape;
- ``workers.Fleet``: the worker Deployments (a Pipeline's, an inline run's);
- ``runs.RunSupervisor``: one supervisor per PipelineRun, driving it to its end;
- ``routing.EventRouter``: step events from Redis to their run's supervisor;
- ``reporting``: Events and status patches, written off the critical path;
- ``scaling.Scaler``: worker replicas follow the work in flight;
- ``leading``: HA, following kopf's peering object;
- ``expiry``: ``ttlSecondsAfterFinished``.

Everything that decides is in the pure modules (``driving`` on the library's core,
``statuses``, ``deployments``, ``notes``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from taskiq_flow_operator.config import OperatorConfig
from taskiq_flow_operator.kube import KubeClient
from taskiq_flow_operator.leading import follow_peering
from taskiq_flow_operator.metrics import Metrics
from taskiq_flow_operator.peering import Leadership
from taskiq_flow_operator.pipelines import Pipelines
from taskiq_flow_operator.reporting import Reporter
from taskiq_flow_operator.resolving import RunProblem, describe_problem, resolve_pipeline
from taskiq_flow_operator.routing import EventRouter
from taskiq_flow_operator.runs import RunSupervisor
from taskiq_flow_operator.scaling import Scaler
from taskiq_flow_operator.storing import CONSUMER, Store
from taskiq_flow_operator.workers import Fleet

__all__ = ["Operator", "OperatorConfig", "RunProblem", "describe_problem", "resolve_pipeline"]


class Operator:
    """The operator's parts (kopf's ``memo``); ``kube`` is set at login."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.clock: Callable[[], float] = time.time
        self.kube: KubeClient | None = None
        # Hundreds of runs share the pool: wait for a connection rather than fail.
        self.redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                config.redis_url, max_connections=256, timeout=60
            )
        )
        # One consumer of the events group per replica: Redis then shows who read what,
        # and the acting replica claims what a paused or dead one left pending.
        consumer = config.peering.identity if config.peering is not None else CONSUMER
        self.store = Store(self.redis, events_stream=config.events_stream, consumer=consumer)
        # Standalone: always acting. HA: paused until the peering object says otherwise
        # (kopf starts paused too).
        self.leadership = Leadership(active=config.peering is None)
        self.metrics = Metrics()
        self.reporter = Reporter(self.api, self.clock)
        self.fleet = Fleet(config, self.api, self.metrics, self.clock)
        self.pipelines = Pipelines(self.fleet, self.api, self.clock)
        self.router = EventRouter(self.store, self.leadership, config)
        self.runs = RunSupervisor(
            config=config,
            store=self.store,
            router=self.router,
            fleet=self.fleet,
            pipelines=self.pipelines,
            reporter=self.reporter,
            metrics=self.metrics,
            api=self.api,
            clock=self.clock,
        )
        self.scaler = Scaler(
            self.fleet,
            lambda: self.runs.active.values(),
            self.store,
            self.metrics,
            self.api,
            self.leadership,
            config,
            self.clock,
        )

    def api(self) -> KubeClient:
        """The API client (set at login)."""
        if self.kube is None:
            raise RuntimeError("the operator has not logged in yet")
        return self.kube

    @property
    def ready(self) -> bool:
        """Whether events are being read (the readiness probe)."""
        return self.router.ready

    @property
    def status_patches(self) -> int:
        """Status patches written so far."""
        return self.reporter.status_patches

    # -- what the handlers call ------------------------------------------------------------

    async def reconcile_pipeline(
        self, body: Mapping[str, Any], *, apply_deployment: bool = True
    ) -> dict[str, Any]:
        """Validate the Pipeline, keep its Deployment in shape; returns its status."""
        return await self.pipelines.reconcile(body, apply_deployment=apply_deployment)

    def forget_pipeline(self, namespace: str, name: str) -> None:
        """The Pipeline is gone: stop scaling its workers."""
        self.pipelines.forget(namespace, name)

    async def supervise_run(
        self, body: Mapping[str, Any], spec: Mapping[str, Any], stopped: Any
    ) -> None:
        """Drive one PipelineRun to its end (see ``RunSupervisor.supervise``)."""
        await self.runs.supervise(body, spec, stopped)

    async def cleanup_run(self, uid: str, body: Mapping[str, Any] | None = None) -> int:
        """The finalizer's work; how many Redis keys were deleted."""
        return await self.runs.cleanup(uid, body)

    # -- background tasks ------------------------------------------------------------------

    async def follow_peering(self, stopped: asyncio.Event) -> None:
        """HA: keep ``leadership`` in line with kopf's peering."""
        await follow_peering(self.config.peering, self.leadership, lambda: self.kube, stopped)

    async def route_events(self, stopped: asyncio.Event) -> None:
        """Hand step events to their runs while this replica acts."""
        await self.router.run(stopped)

    async def scale(self, stopped: asyncio.Event) -> None:
        """Follow in-flight work with worker replicas while this replica acts."""
        await self.scaler.run(stopped)

    async def scale_once(self, now: float) -> None:
        """One pass of the scaler."""
        await self.scaler.scale_once(now)

    async def close(self) -> None:
        """Release connections."""
        await self.redis.aclose(close_connection_pool=True)
        if self.kube is not None:
            await self.kube.close()
