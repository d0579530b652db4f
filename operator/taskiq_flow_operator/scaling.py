"""The scaler: each worker Deployment follows the work in flight for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Protocol

from taskiq_flow_operator.config import OperatorConfig
from taskiq_flow_operator.deployments import desired_replicas
from taskiq_flow_operator.kube import KubeClient, KubeError
from taskiq_flow_operator.leading import first_of
from taskiq_flow_operator.metrics import Metrics
from taskiq_flow_operator.peering import Leadership
from taskiq_flow_operator.storing import Store
from taskiq_flow_operator.workers import Fleet

__all__ = ["Scaler", "Work"]

logger = logging.getLogger("taskiq_flow_operator")


class Work(Protocol):
    """A run in flight, as the scaler sees it."""

    @property
    def namespace(self) -> str: ...

    @property
    def workers_key(self) -> str: ...

    def in_flight(self) -> int: ...


class Scaler:
    """Scales worker Deployments between their bounds while this replica acts."""

    def __init__(
        self,
        fleet: Fleet,
        work: Callable[[], Iterable[Work]],
        store: Store,
        metrics: Metrics,
        api: Callable[[], KubeClient],
        leadership: Leadership,
        config: OperatorConfig,
        clock: Callable[[], float],
    ) -> None:
        self.fleet = fleet
        self.work = work
        self.store = store
        self.metrics = metrics
        self.api = api
        self.leadership = leadership
        self.config = config
        self.clock = clock

    async def run(self, stopped: asyncio.Event) -> None:
        """Scale every ``scale_interval`` until ``stopped`` (a paused replica's view is
        empty: it would scale everything down, so it waits)."""
        while not stopped.is_set():
            if not self.leadership.active:
                # The acting replica owns replicas meanwhile: forget them, and read them
                # again when acting again.
                for workers in self.fleet.sets.values():
                    workers.replicas = None
                self.metrics.set_active_runs({})
                await first_of(stopped.wait(), self.leadership.wait_active())
                await self._learn_replicas()
                continue
            try:
                await self.scale_once(self.clock())
            except Exception as exc:
                logger.warning("scaling failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), self.config.scale_interval)

    async def _learn_replicas(self) -> None:
        """Acting again: read each worker Deployment's replicas (another replica scaled
        meanwhile), and count the scale-down delay from now."""
        now = self.clock()
        for workers in list(self.fleet.sets.values()):
            workers.last_busy = now
            try:
                found = await self.api().get_deployment(workers.namespace, workers.deployment)
            except Exception as exc:  # the periodic reconcile reads it instead
                logger.warning("reading the Deployment of %s failed: %r", workers.name, exc)
                continue
            replicas = ((found or {}).get("spec") or {}).get("replicas")
            if workers.replicas is None and isinstance(replicas, int):
                workers.replicas = replicas

    async def scale_once(self, now: float) -> None:
        """One pass of the scaler (and of the gauges)."""
        in_flight: defaultdict[tuple[str, str], int] = defaultdict(int)
        active: defaultdict[str, int] = defaultdict(int)
        for run in list(self.work()):
            in_flight[(run.namespace, run.workers_key)] += run.in_flight()
            active[run.namespace] += 1
        self.metrics.set_active_runs(dict(active))
        for key, workers in list(self.fleet.sets.items()):
            busy = in_flight.get(key, 0)
            if workers.metrics:
                depth = await self.store.queue_depth(workers.queue)
                self.metrics.set_queue_depth(workers.queue, depth)
            if busy:
                workers.last_busy = now
            if workers.minimum == workers.maximum:
                continue  # a fixed size: someone else (KEDA, a human) owns replicas
            wanted = desired_replicas(busy, workers.concurrency, workers.minimum, workers.maximum)
            current = workers.replicas
            quiet = now - workers.last_busy >= workers.scale_down_delay
            if current is None:
                continue  # not known (yet) since a pause: the next reconcile reads it
            if not busy and current > wanted and not quiet:
                continue
            if busy and wanted < current:
                continue  # never scale down under work: a pod may hold a task in flight
            if wanted != current and self.fleet.sets.get(key) is workers:
                try:
                    await self.api().patch_deployment(
                        workers.namespace, workers.deployment, {"spec": {"replicas": wanted}}
                    )
                except KubeError as exc:
                    logger.warning("could not scale %s: %s", workers.deployment, exc)
                    continue
                workers.replicas = wanted
                if workers.metrics:
                    self.metrics.set_worker_replicas(workers.namespace, workers.name, wanted)
