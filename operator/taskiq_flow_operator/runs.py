"""Run supervision: one supervisor per PipelineRun drives it from start to end.

A supervisor resolves the run's pipeline, starts (or restores) its ``RunDriver``, feeds
it the run's step events and the passing of time, sends the kicks it returns, persists
its snapshot, and has the ``StatusWriter`` report progress; at the end it writes the
final status with the outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from taskiq_flow.core.states import FINISHED, TERMINAL, RunOutcome
from taskiq_flow.manifests.compiler import CompiledPipeline, RunSettings
from taskiq_flow.manifests.models import Mode, PipelineRunSpec
from taskiq_flow.manifests.problems import ManifestError
from taskiq_flow_operator.catalog import unknown_task_message, wait_for_catalog
from taskiq_flow_operator.config import OperatorConfig
from taskiq_flow_operator.deployments import WorkerOwner, catalog_key_for, queue_for
from taskiq_flow_operator.driving import Note, RunDriver, Step
from taskiq_flow_operator.expiry import expire
from taskiq_flow_operator.kube import KubeClient, KubeError
from taskiq_flow_operator.metrics import Metrics
from taskiq_flow_operator.pipelines import Pipelines
from taskiq_flow_operator.reporting import Reporter, StatusWriter
from taskiq_flow_operator.resolving import (
    RunProblem,
    describe_problem,
    generation_of,
    resolve_pipeline,
    run_key,
)
from taskiq_flow_operator.routing import EventRouter, Route
from taskiq_flow_operator.statuses import (
    build_pending_run_status,
    build_rejected_run_status,
    build_run_status,
)
from taskiq_flow_operator.storing import Store
from taskiq_flow_operator.workers import Fleet, Served

__all__ = ["ActiveRun", "RunSupervisor"]

logger = logging.getLogger("taskiq_flow_operator")


@dataclass
class ActiveRun:
    """A run being driven: what the scaler and the step metrics need of it."""

    namespace: str
    workers_key: str  # the Pipeline, or the inline run's ``run_key``
    label: str  # the Pipeline, or "inline": the metrics label
    driver: RunDriver
    counted: set[str] = field(default_factory=set)  # steps already in the metrics
    # Waiting for a worker to list the tasks it serves: the scaler must start one.
    waiting: bool = False

    def in_flight(self) -> int:
        """Tasks sent and not finished (one while waiting for a worker)."""
        sent = self.driver.in_flight()
        return max(sent, 1) if self.waiting else sent


class RunSupervisor:
    """Supervises PipelineRuns; ``active`` holds the runs being driven, by uid."""

    def __init__(
        self,
        *,
        config: OperatorConfig,
        store: Store,
        router: EventRouter,
        fleet: Fleet,
        pipelines: Pipelines,
        reporter: Reporter,
        metrics: Metrics,
        api: Callable[[], KubeClient],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.router = router
        self.fleet = fleet
        self.pipelines = pipelines
        self.reporter = reporter
        self.metrics = metrics
        self.api = api
        self.clock = clock
        self.active: dict[str, ActiveRun] = {}

    async def supervise(
        self, body: Mapping[str, Any], spec: Mapping[str, Any], stopped: Any
    ) -> None:
        """Drive one PipelineRun to its end, then honour ``ttlSecondsAfterFinished``.

        ``body`` and ``spec`` are kopf's live views: ``spec.cancel`` is seen as it changes.
        """
        meta = body["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        status = dict(body.get("status") or {})
        if status.get("phase") not in FINISHED:
            await self._drive(body, spec, stopped)
        elif spec.get("pipelineSpec") is not None and not stopped:
            # Over, maybe before its workers were scaled down (a restart in between).
            await self.fleet.retire(WorkerOwner("PipelineRun", namespace, name, uid))
        if not stopped:
            await self.router.close(uid)
        await expire(body, spec, stopped, self.api(), self.clock)
        logger.debug("supervisor of %s/%s (%s) ends", namespace, name, uid)

    async def cleanup(self, uid: str, body: Mapping[str, Any] | None = None) -> int:
        """The finalizer's work: delete the run's Redis keys (and an inline run's queue,
        once its workers are scaled down)."""
        await self.router.close(uid)
        deleted = await self.store.delete_run(uid)
        meta = (body or {}).get("metadata") or {}
        if ((body or {}).get("spec") or {}).get("pipelineSpec") is not None and meta:
            owner = WorkerOwner("PipelineRun", meta["namespace"], meta["name"], uid)
            self.fleet.forget(owner.namespace, run_key(owner.name))
            await self.fleet.retire(owner)
            deleted += int(await self.store.redis.delete(owner.queue))
        return deleted

    # -- starting --------------------------------------------------------------------------

    async def _resolve(
        self, body: Mapping[str, Any], spec: Mapping[str, Any], stopped: Any
    ) -> tuple[str, CompiledPipeline, PipelineRunSpec] | None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        reported = None
        while not stopped:
            ref = (spec.get("pipelineRef") or {}).get("name")
            pipeline_body = None
            if ref:
                try:
                    # Pipelines are watched: their latest body is at hand without a GET.
                    pipeline_body = self.pipelines.bodies.get((namespace, ref))
                    if pipeline_body is None:
                        pipeline_body = await self.api().get_custom("pipelines", namespace, ref)
                except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                    logger.warning("reading Pipeline %s/%s failed: %r", namespace, ref, exc)
                    await stopped.wait(1.0)
                    continue
            try:
                return resolve_pipeline(spec, namespace, pipeline_body)
            except RunProblem as problem:
                if problem.final:
                    await self._reject(body, problem.reason, problem.message, ref or "inline")
                    return None
                if reported != problem.message:
                    reported = problem.message
                    status = build_pending_run_status(
                        problem.reason, problem.message, meta.get("generation"), self.clock()
                    )
                    await self.api().patch_status("pipelineruns", namespace, name, status)
                    await self.reporter.post_notes(
                        body, [Note("Warning", problem.reason, problem.message)]
                    )
                await stopped.wait(self.config.pipeline_missing_retry)
        return None

    async def _reject(self, body: Mapping[str, Any], reason: str, message: str, label: str) -> None:
        """The run fails before any step runs."""
        meta = body["metadata"]
        status = build_rejected_run_status(reason, message, generation_of(body), self.clock())
        await self.api().patch_status("pipelineruns", meta["namespace"], meta["name"], status)
        await self.reporter.post_notes(body, [Note("Warning", "Failed", message)])
        self.metrics.run_finished(meta["namespace"], label, "Failed", 0.0)

    async def _drive(self, body: Mapping[str, Any], spec: Mapping[str, Any], stopped: Any) -> None:
        meta = body["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        resolved = await self._resolve(body, spec, stopped)
        if resolved is None:
            return
        pipeline, compiled, run_spec = resolved
        # A Pipeline's workers serve its runs; an inline run gets workers of its own.
        owner = None if pipeline else WorkerOwner("PipelineRun", namespace, name, uid)
        queue = queue_for(namespace, pipeline) if owner is None else owner.queue
        settings: RunSettings = compiled.settings(run_spec)
        try:
            inputs = compiled.run_inputs(run_spec.inputs)
        except ManifestError as exc:
            await self._reject(body, "InvalidInputs", describe_problem(exc), pipeline or "inline")
            return
        if owner is not None:
            served = await self.fleet.serve_run(owner, compiled.spec, stopped)
            if served is Served.FOREIGN:
                message = (
                    f"Deployment {owner.deployment!r} exists and does not belong to this "
                    "run: delete or rename it, then create the run again"
                )
                await self._reject(body, "WorkerConflict", message, "inline")
            if served is not Served.READY:
                return
        if compiled.spec.mode == Mode.SEQUENTIAL:
            logger.info("run %s/%s: sequential pipeline driven as its DAG", namespace, name)
        key = pipeline if owner is None else run_key(name)
        run = ActiveRun(
            namespace, key, pipeline or "inline", RunDriver(uid, compiled, settings, inputs)
        )
        events = self.router.open(uid)
        self.active[uid] = run
        try:
            snapshot = await self.store.load_state(uid)
            catalog = catalog_key_for(queue, compiled.spec)
            if snapshot is not None or await self._tasks_served(body, spec, stopped, run, catalog):
                await self._loop(body, spec, stopped, run, events, queue, snapshot)
        finally:
            self.router.leave(uid)
            self.active.pop(uid, None)
            if owner is not None:
                self.fleet.forget(namespace, key)
        if owner is not None and not stopped:
            await self.fleet.retire(owner)

    async def _tasks_served(
        self,
        body: Mapping[str, Any],
        spec: Mapping[str, Any],
        stopped: Any,
        run: ActiveRun,
        catalog: str,
    ) -> bool:
        """Whether the run may start: its workers serve every task it names.

        A name they do not serve fails the run before any step runs, as ``taskiq-flow
        run`` refuses it. A cancel while waiting for the workers lets the run start, to be
        cancelled at once.
        """
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]

        async def waiting() -> None:
            message = "waiting for a worker to start and list the tasks it serves"
            status = build_pending_run_status(
                "WaitingForWorkers", message, meta.get("generation"), self.clock()
            )
            await self.reporter.patch_run(namespace, name, status)

        run.waiting = True
        try:
            served = await wait_for_catalog(
                self.store.redis, catalog, stopped, waiting, lambda: bool(spec.get("cancel"))
            )
        finally:
            run.waiting = False
        if served is None:
            return not stopped
        unknown = sorted({node.task_name for node in run.driver.dag.nodes.values()} - served)
        if unknown:
            await self._reject(body, "UnknownTask", unknown_task_message(unknown), run.label)
            return False
        return True

    # -- driving ---------------------------------------------------------------------------

    async def _loop(
        self,
        body: Mapping[str, Any],
        spec: Mapping[str, Any],
        stopped: Any,
        run: ActiveRun,
        events: Route,
        queue: str,
        snapshot: Mapping[str, Any] | None,
    ) -> None:
        meta = body["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        driver = run.driver
        if snapshot is not None:
            driver.restore(snapshot)
            step = driver.resume(self.clock())
        else:
            step = driver.start(self.clock())
        applied: list[str] = []
        last_patch = 0.0
        last_phase: bool | None = None
        last_status: dict[str, Any] | None = None
        changed = True
        dirty = True  # something changed since the last status was built
        # API writes (status patches, Events) go through their own task: successors are
        # kicked at once, whatever the API server's latency.
        writer = StatusWriter(self.reporter, body, namespace, name)
        try:
            while True:
                await self._settle_checks(driver, step)
                now = self.clock()
                if step.kicks:
                    await self.store.kick(uid, queue, step.kicks)
                dirty = dirty or changed
                if changed:
                    await self.store.save_state(uid, driver.snapshot())
                if applied:
                    await self.router.acknowledge(uid, applied)
                    applied = []
                if step.notes:
                    writer.notes(step.notes)
                if changed:
                    self._count_steps(run)
                if driver.finished:
                    break
                # Batched: at most one patch per interval, at once on a phase change.
                phase = driver.machine.started_at is not None
                due = now - last_patch >= self.config.status_interval
                if phase != last_phase or (dirty and due):
                    dirty = False
                    status = build_run_status(driver, generation=generation_of(body), now=now)
                    if status != last_status:
                        writer.status(status)
                        last_status = status
                    last_patch, last_phase = now, phase
                if stopped:
                    return
                step, changed = await self._next(driver, spec, events, applied)
        finally:
            leftover = await writer.close()
        await self._finish(body, run, stopped)
        await self.reporter.post_notes(body, leftover)

    async def _next(
        self, driver: RunDriver, spec: Mapping[str, Any], events: Route, applied: list[str]
    ) -> tuple[Step, bool]:
        """Wait for events or the next deadline; what the driver decided, and if it changed."""
        now = self.clock()
        if spec.get("cancel") and not driver.finished and not driver.cancelling:
            await self.store.mark_cancelled(driver.run)
            return driver.cancel(now), True
        step = Step()
        deadline = driver.next_deadline()
        wait = 0.25
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - now))
        batch: list[tuple[str, Any]] = []
        with contextlib.suppress(TimeoutError):
            batch.append(await asyncio.wait_for(events.get(), wait))
        while not events.empty() and len(batch) < 1000:
            batch.append(events.get_nowait())
        now = self.clock()
        for entry, event in batch:
            applied.append(entry)
            step.merge(driver.on_event(event, now))
        deadline = driver.next_deadline()
        ticked = False
        if deadline is not None and now >= deadline:
            step.merge(driver.tick(now))
            ticked = True
        return step, bool(batch) or ticked

    async def _settle_checks(self, driver: RunDriver, step: Step) -> None:
        """Answer the conditions waiting for data with the values from Redis (a check may
        start steps whose conditions wait in turn)."""
        while step.checks:
            checks, step.checks = step.checks, {}
            for node, data in checks.items():
                values = await self.store.values(data)
                step.merge(driver.checked(node, values, self.clock()))

    async def _finish(self, body: Mapping[str, Any], run: ActiveRun, stopped: Any) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        driver = run.driver
        logger.debug("run %s/%s is over; writing its final status", namespace, name)
        outcome = driver.machine.outcome
        if outcome is not None and outcome.outcome is RunOutcome.CANCELLED:
            await self.store.mark_cancelled(driver.run)
        outputs = await self.store.outputs(driver)
        status = build_run_status(
            driver, generation=generation_of(body), now=self.clock(), outputs=outputs
        )
        while not await self.reporter.patch_run(namespace, name, status) and not stopped:
            await stopped.wait(1.0)
        logger.debug("run %s/%s: final status written", namespace, name)
        self.metrics.run_finished(
            namespace, run.label, status["phase"], status.get("durationSeconds")
        )

    def _count_steps(self, run: ActiveRun) -> None:
        for node, state in run.driver.machine.nodes.items():
            if state.phase in TERMINAL and node not in run.counted:
                run.counted.add(node)
                duration = None
                if state.finished is not None and state.first_started is not None:
                    duration = state.finished - state.first_started
                self.metrics.step_finished(
                    run.namespace, run.label, node, state.phase.value, duration
                )
