"""The operator's long-running parts: one supervisor per run, the event router, the scaler.

Handlers (``handlers``) stay thin and call into ``Operator``; everything that decides is
in the pure modules (``driving``, ``statuses``, ``deployments``, ``notes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import ValidationError
from redis.asyncio import BlockingConnectionPool, Redis

from taskiq_flow.core.states import FINISHED, TERMINAL
from taskiq_flow.manifests.compiler import CompiledPipeline, RunSettings, compile_pipeline
from taskiq_flow.manifests.models import Mode, PipelineRunSpec, PipelineSpec
from taskiq_flow.manifests.problems import ManifestError
from taskiq_flow_operator.deployments import (
    RedisSource,
    WorkerOwner,
    build_deployment_for,
    deployment_name,
    desired_replicas,
    ownership,
    queue_for,
)
from taskiq_flow_operator.driving import Note, RunDriver, Step
from taskiq_flow_operator.kube import KubeClient, KubeError
from taskiq_flow_operator.metrics import Metrics
from taskiq_flow_operator.notes import build_event
from taskiq_flow_operator.peering import Leadership, PeeringConfig, pause_reason
from taskiq_flow_operator.statuses import (
    build_invalid_pipeline_status,
    build_pending_run_status,
    build_pipeline_status,
    build_rejected_run_status,
    build_run_status,
)
from taskiq_flow_operator.storing import CONSUMER, Store
from taskiq_flow_worker import protocol as p

__all__ = ["Operator", "OperatorConfig", "RunProblem", "describe_problem", "resolve_pipeline"]

logger = logging.getLogger("taskiq_flow_operator")


@dataclass
class OperatorConfig:
    """How the operator runs (from the command line)."""

    redis_url: str
    redis_secret: str | None = None
    redis_secret_key: str = "url"
    status_interval: float = 0.5
    scale_interval: float = 1.0
    pipeline_missing_retry: float = 2.0
    worker_idle_timeout_ms: int = 60_000
    worker_env: dict[str, str] = field(default_factory=dict)
    events_stream: str = p.DEFAULT_EVENTS_STREAM
    # HA (kopf peering): only the replica kopf lets act reads events and scales.
    peering: PeeringConfig | None = None
    # How often the acting replica claims events other replicas read and left pending.
    adopt_interval: float = 5.0


class RunProblem(Exception):
    """A run cannot start: ``reason`` is the condition reason, ``final`` if it never will."""

    def __init__(self, reason: str, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.final = final


def describe_problem(error: ManifestError | ValidationError) -> str:
    """One line naming every problem of an invalid spec."""
    if isinstance(error, ManifestError):
        return "; ".join(
            f"{problem.path}: {problem.message}" if problem.path else problem.message
            for problem in error.problems
        )
    return "; ".join(
        f"spec.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in error.errors()
    )


def _generation(body: Mapping[str, Any]) -> int | None:
    # kopf's body is a live view: read the generation now, not when the run started.
    generation = (body.get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else None


def compile_for_operator(spec: PipelineSpec, name: str, prefix: str = "spec") -> CompiledPipeline:
    """Compile without the task code (the operator image does not hold it)."""
    return compile_pipeline(spec, name=name, prefix=prefix)


def _run_key(run: str) -> str:
    # The scaler's key of an inline run's workers: no Pipeline name holds a ":".
    return f"run:{run}"


def resolve_pipeline(
    run_spec: Mapping[str, Any], namespace: str, pipeline_body: Mapping[str, Any] | None
) -> tuple[str, CompiledPipeline, PipelineRunSpec]:
    """The run's pipeline, compiled; raises ``RunProblem``."""
    try:
        run = PipelineRunSpec.model_validate(dict(run_spec))
    except ValidationError as exc:
        raise RunProblem("InvalidRun", describe_problem(exc), final=True) from exc
    if run.pipeline_spec is not None:
        try:
            return "", compile_for_operator(run.pipeline_spec, "inline", "spec.pipelineSpec"), run
        except ManifestError as exc:
            raise RunProblem("PipelineInvalid", describe_problem(exc), final=True) from exc
    if run.pipeline_ref is None:
        raise RunProblem("InvalidRun", "set spec.pipelineRef or spec.pipelineSpec", final=True)
    name = run.pipeline_ref.name
    if pipeline_body is None:
        raise RunProblem(
            "PipelineNotFound",
            f"Pipeline {name!r} not found in namespace {namespace!r}; "
            "the run starts when it is created",
            final=False,
        )
    try:
        spec = PipelineSpec.model_validate(dict(pipeline_body.get("spec") or {}))
        return name, compile_for_operator(spec, name), run
    except (ManifestError, ValidationError) as exc:
        raise RunProblem(
            "PipelineInvalid", f"Pipeline {name!r} is invalid: {describe_problem(exc)}", final=True
        ) from exc


@dataclass
class _PipelineInfo:
    """One worker Deployment the scaler follows: a Pipeline's, or an inline run's."""

    namespace: str
    name: str  # the Pipeline (the metrics label), or the scaler key of an inline run
    concurrency: int
    minimum: int
    maximum: int
    scale_down_delay: float
    queue: str
    last_busy: float = 0.0
    replicas: int | None = None
    deployment: str = ""
    # Queue depth and replicas per Pipeline only: an inline run's name is never a label.
    metrics: bool = True

    def follow(self, spec: PipelineSpec) -> None:
        """Take the scaling settings of ``spec.worker``."""
        worker = spec.worker
        self.concurrency = worker.concurrency
        self.minimum = worker.replicas.min
        self.maximum = max(worker.replicas.max, worker.replicas.min)
        self.scale_down_delay = worker.scale_down_delay_seconds


class _Writer:
    """One run's API writes, in order, off the critical path.

    Status patches coalesce: only the newest pending status is sent. ``close`` waits for
    everything submitted, so a late intermediate patch never lands after the final one.
    """

    def __init__(self, op: Operator, body: Mapping[str, Any], namespace: str, name: str) -> None:
        self.op = op
        self.body = body
        self.namespace = namespace
        self.name = name
        self._status: dict[str, Any] | None = None
        self._notes: list[Note] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    def status(self, status: dict[str, Any]) -> None:
        self._status = status
        self._wake.set()

    def notes(self, notes: list[Note]) -> None:
        self._notes += notes
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            status, self._status = self._status, None
            if self._notes and not self._closing:
                notes, self._notes = self._notes, []
                await self.op.post_notes(self.body, notes)
            if status is not None and not await self.op._patch_run(
                self.namespace, self.name, status
            ):
                if self._status is None and not self._closing:
                    self._status = status
                await asyncio.sleep(1.0)
                self._wake.set()
            if self._closing and self._status is None:
                return

    async def close(self) -> list[Note]:
        """Stop after the write in flight; pending statuses are dropped (the caller
        writes the final one) and pending Events returned, to post after it."""
        self._closing = True
        self._status = None
        self._wake.set()
        await self._task
        notes, self._notes = self._notes, []
        return notes


class Operator:
    """The operator's state, shared by its handlers (kopf's ``memo``)."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
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
        self.kube: KubeClient | None = None
        self.routes: dict[str, asyncio.Queue[tuple[str, p.StepEvent]]] = {}
        # Events read and not yet acknowledged, by run: a supervisor that starts (again,
        # after a crash) takes them all, so none is lost with a dead supervisor's queue.
        self.unacked: defaultdict[str, dict[str, p.StepEvent]] = defaultdict(dict)
        self.drivers: dict[str, tuple[str, str, RunDriver]] = {}  # uid -> (ns, pipeline, d)
        self.pipelines: dict[tuple[str, str], _PipelineInfo] = {}
        self.closed: set[str] = set()
        self.pipeline_bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self.ready = False
        self.status_patches = 0
        self._event_seq = 0
        self.clock: Callable[[], float] = time.time

    # -- kubernetes ----------------------------------------------------------------------

    @property
    def api(self) -> KubeClient:
        """The API client (set at login)."""
        if self.kube is None:
            raise RuntimeError("the operator has not logged in yet")
        return self.kube

    async def post_notes(self, body: Mapping[str, Any], notes: list[Note]) -> None:
        """Post Events; a failure to post is logged, never fatal."""
        for note in notes:
            self._event_seq = (self._event_seq + 1) % 1000
            event = build_event(
                body, note.type, note.reason, note.message, self.clock(), self._event_seq
            )
            try:
                await self.api.post_event(event)
            except Exception as exc:
                logger.warning("could not post event %s: %s", note.reason, exc)

    # -- pipelines -----------------------------------------------------------------------

    async def reconcile_pipeline(
        self, body: Mapping[str, Any], *, apply_deployment: bool = True
    ) -> dict[str, Any]:
        """Validate the Pipeline, keep its Deployment in shape; returns its status."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        generation = meta.get("generation")
        now = self.clock()
        raw_spec = dict(body.get("spec") or {})
        self.pipeline_bodies[(namespace, name)] = {"metadata": dict(meta), "spec": raw_spec}
        try:
            spec = PipelineSpec.model_validate(raw_spec)
            compiled = compile_for_operator(spec, name)
        except (ManifestError, ValidationError) as exc:
            self.pipelines.pop((namespace, name), None)
            steps = raw_spec.get("steps")
            return build_invalid_pipeline_status(
                describe_problem(exc),
                generation,
                len(steps) if isinstance(steps, list) else None,
                now,
            )
        info = self.pipelines.get((namespace, name))
        if info is None:
            # Busy "now": runs in flight are not all supervised yet (after a restart or a
            # takeover), so nothing is scaled down before the scale-down delay.
            info = self.pipelines[(namespace, name)] = _PipelineInfo(
                namespace,
                name,
                1,
                0,
                1,
                0.0,
                queue_for(namespace, name),
                last_busy=now,
                deployment=deployment_name(name),
            )
        info.follow(spec)
        status = build_pipeline_status(compiled, generation, deployment_name(name), now)
        if apply_deployment:
            owner = WorkerOwner("Pipeline", namespace, name, meta.get("uid", ""))
            existing = await self.api.get_deployment(namespace, owner.deployment)
            status["worker"].update(await self._apply_workers(owner, spec, info, existing))
        return status

    async def _apply_workers(
        self,
        owner: WorkerOwner,
        spec: PipelineSpec,
        info: _PipelineInfo,
        existing: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Create ``owner``'s worker Deployment, or put ``existing`` back in shape."""
        source = RedisSource(
            url=None if self.config.redis_secret else self.config.redis_url,
            secret_name=self.config.redis_secret,
            secret_key=self.config.redis_secret_key,
        )
        wanted = build_deployment_for(
            owner,
            spec,
            source,
            replicas=info.minimum if existing is None else None,
            idle_timeout_ms=self.config.worker_idle_timeout_ms,
            extra_env=self.config.worker_env,
        )
        if existing is None:
            await self.api.create_deployment(wanted)
            info.replicas = info.minimum
            if info.metrics:
                self.metrics.set_worker_replicas(info.namespace, info.name, info.minimum)
            return {"replicas": info.minimum, "readyReplicas": 0}
        # Everything but replicas, which the scaler owns.
        patch = {"metadata": {"labels": wanted["metadata"]["labels"]}, "spec": wanted["spec"]}
        current = {
            "metadata": {"labels": existing.get("metadata", {}).get("labels")},
            "spec": {k: v for k, v in existing.get("spec", {}).items() if k != "replicas"},
        }
        if current != patch:
            await self.api.patch_deployment(owner.namespace, owner.deployment, patch)
        replicas = existing.get("spec", {}).get("replicas")
        if info.replicas is None and isinstance(replicas, int):
            info.replicas = replicas
        return {
            "replicas": replicas,
            "readyReplicas": existing.get("status", {}).get("readyReplicas", 0),
        }

    def forget_pipeline(self, namespace: str, name: str) -> None:
        """The Pipeline is gone: stop scaling its workers."""
        self.pipelines.pop((namespace, name), None)
        self.pipeline_bodies.pop((namespace, name), None)

    # -- runs ----------------------------------------------------------------------------

    async def supervise_run(
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
            await self._retire_workers(WorkerOwner("PipelineRun", namespace, name, uid))
        if not stopped:
            await self._close(uid)
        await self._expire(body, spec, stopped)
        logger.debug("supervisor of %s/%s (%s) ends", namespace, name, uid)

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
                    pipeline_body = self.pipeline_bodies.get((namespace, ref))
                    if pipeline_body is None:
                        pipeline_body = await self.api.get_custom("pipelines", namespace, ref)
                except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                    logger.warning("reading Pipeline %s/%s failed: %r", namespace, ref, exc)
                    await stopped.wait(1.0)
                    continue
            try:
                return resolve_pipeline(spec, namespace, pipeline_body)
            except RunProblem as problem:
                now = self.clock()
                generation = meta.get("generation")
                if problem.final:
                    status = build_rejected_run_status(
                        problem.reason, problem.message, generation, now
                    )
                    await self.api.patch_status("pipelineruns", namespace, name, status)
                    await self.post_notes(body, [Note("Warning", "Failed", problem.message)])
                    self.metrics.run_finished(namespace, ref or "inline", "Failed", 0.0)
                    return None
                if reported != problem.message:
                    reported = problem.message
                    status = build_pending_run_status(
                        problem.reason, problem.message, generation, now
                    )
                    await self.api.patch_status("pipelineruns", namespace, name, status)
                    await self.post_notes(body, [Note("Warning", problem.reason, problem.message)])
                await stopped.wait(self.config.pipeline_missing_retry)
        return None

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
        key = pipeline if owner is None else _run_key(name)
        settings: RunSettings = compiled.settings(run_spec)
        try:
            inputs = compiled.run_inputs(run_spec.inputs)
        except ManifestError as exc:
            status = build_rejected_run_status(
                "InvalidInputs", describe_problem(exc), meta.get("generation"), self.clock()
            )
            await self.api.patch_status("pipelineruns", namespace, name, status)
            await self.post_notes(body, [Note("Warning", "Failed", describe_problem(exc))])
            return
        if owner is not None and not await self._run_workers(body, owner, compiled.spec, stopped):
            return
        if compiled.spec.mode == Mode.SEQUENTIAL:
            logger.info("run %s/%s: sequential pipeline driven as its DAG", namespace, name)
        driver = RunDriver(uid, compiled, settings, inputs)
        label = pipeline or "inline"
        events: asyncio.Queue[tuple[str, p.StepEvent]] = asyncio.Queue()
        self.routes[uid] = events
        for entry, event in sorted(self.unacked.get(uid, {}).items()):
            events.put_nowait((entry, event))
        self.drivers[uid] = (namespace, key, driver)
        try:
            await self._loop(body, spec, stopped, driver, events, queue, label)
        finally:
            self.routes.pop(uid, None)
            self.drivers.pop(uid, None)
            if owner is not None:
                self.pipelines.pop((namespace, key), None)
        if owner is not None and driver.finished and not stopped:
            await self._retire_workers(owner)

    async def _run_workers(
        self, body: Mapping[str, Any], owner: WorkerOwner, spec: PipelineSpec, stopped: Any
    ) -> bool:
        """Create (or put back in shape) an inline run's worker Deployment and have the
        scaler follow it; False if the run cannot have it (and was failed) or stopped."""
        namespace = owner.namespace
        key = _run_key(owner.name)
        info = _PipelineInfo(
            namespace,
            key,
            1,
            0,
            1,
            0.0,
            owner.queue,
            last_busy=self.clock(),
            deployment=owner.deployment,
            metrics=False,
        )
        info.follow(spec)
        waiting = False
        while not stopped:
            try:
                existing = await self.api.get_deployment(namespace, owner.deployment)
                whose = ownership(existing, owner)
                if whose == "foreign":
                    message = (
                        f"Deployment {owner.deployment!r} exists and does not belong to this "
                        "run: delete or rename it, then create the run again"
                    )
                    now = self.clock()
                    status = build_rejected_run_status(
                        "WorkerConflict", message, _generation(body), now
                    )
                    await self.api.patch_status("pipelineruns", namespace, owner.name, status)
                    await self.post_notes(body, [Note("Warning", "Failed", message)])
                    self.metrics.run_finished(namespace, "inline", "Failed", 0.0)
                    return False
                if whose == "stale":
                    # A deleted run of the same name: the garbage collector removes it.
                    if not waiting:
                        logger.info("waiting for the old Deployment %s to go", owner.deployment)
                        waiting = True
                    await stopped.wait(1.0)
                    continue
                await self._apply_workers(owner, spec, info, existing)
            except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning("applying Deployment %s failed: %r", owner.deployment, exc)
                await stopped.wait(1.0)
                continue
            self.pipelines[(namespace, key)] = info
            return True
        return False

    async def _retire_workers(self, owner: WorkerOwner) -> None:
        """The run is over: nothing will reach its queue again, scale its workers to 0."""
        try:
            found = await self.api.get_deployment(owner.namespace, owner.deployment)
            if ownership(found, owner) != "ours" or found is None:
                return
            if (found.get("spec") or {}).get("replicas") != 0:
                await self.api.patch_deployment(
                    owner.namespace, owner.deployment, {"spec": {"replicas": 0}}
                )
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("scaling down Deployment %s failed: %r", owner.deployment, exc)

    async def _loop(
        self,
        body: Mapping[str, Any],
        spec: Mapping[str, Any],
        stopped: Any,
        driver: RunDriver,
        events: asyncio.Queue[tuple[str, p.StepEvent]],
        queue: str,
        pipeline: str,
    ) -> None:
        meta = body["metadata"]
        uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
        now = self.clock()
        snapshot = await self.store.load_state(uid)
        if snapshot is not None:
            driver.restore(snapshot)
            first = Step()
            driver._apply(driver.machine.refresh(now), now, first)
        else:
            first = driver.start(now)
        pending_acks: list[str] = []
        last_patch = 0.0
        last_phase: bool | None = None
        last_status: dict[str, Any] | None = None
        changed = True
        dirty = True  # something changed since the last status was built
        step = first
        # API writes (status patches, Events) go through their own task: successors are
        # kicked at once, whatever the API server's latency.
        writer = _Writer(self, body, namespace, name)
        try:
            while True:
                now = self.clock()
                if step.kicks:
                    await self.store.kick(uid, queue, step.kicks)
                dirty = dirty or changed
                if changed:
                    await self.store.save_state(uid, driver.snapshot())
                if pending_acks:
                    await self.store.ack(pending_acks)
                    waiting = self.unacked.get(uid, {})
                    for entry in pending_acks:
                        waiting.pop(entry, None)
                    pending_acks = []
                if step.notes:
                    writer.notes(step.notes)
                if changed:
                    self._count_steps(namespace, pipeline, driver, step)
                if driver.finished:
                    break
                # Batched: at most one patch per interval, at once on a phase change.
                phase = driver.machine.started_at is not None
                due = now - last_patch >= self.config.status_interval
                if phase != last_phase or (dirty and due):
                    dirty = False
                    status = build_run_status(driver, generation=_generation(body), now=now)
                    if status != last_status:
                        writer.status(status)
                        last_status = status
                    last_patch, last_phase = now, phase
                if stopped:
                    return
                step, changed = await self._next(driver, spec, events, pending_acks, uid)
        finally:
            leftover = await writer.close()
        await self._finish(body, driver, namespace, name, pipeline, stopped)
        await self.post_notes(body, leftover)

    async def _next(
        self,
        driver: RunDriver,
        spec: Mapping[str, Any],
        events: asyncio.Queue[tuple[str, p.StepEvent]],
        pending_acks: list[str],
        uid: str,
    ) -> tuple[Step, bool]:
        """Wait for events or the next deadline; what the driver decided, and if it changed."""
        now = self.clock()
        if spec.get("cancel") and not driver.finished:
            await self.store.mark_cancelled(uid)
            return driver.cancel(now), True
        step = Step()
        deadline = driver.next_deadline()
        wait = 0.25
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - now))
        batch: list[tuple[str, p.StepEvent]] = []
        with contextlib.suppress(TimeoutError):
            batch.append(await asyncio.wait_for(events.get(), wait))
        while not events.empty() and len(batch) < 1000:
            batch.append(events.get_nowait())
        now = self.clock()
        for entry, event in batch:
            pending_acks.append(entry)
            merged = driver.on_event(event, now)
            step.kicks += merged.kicks
            step.notes += merged.notes
            step.finished = step.finished or merged.finished
        deadline = driver.next_deadline()
        ticked = False
        if deadline is not None and now >= deadline:
            more = driver.tick(now)
            step.kicks += more.kicks
            step.notes += more.notes
            ticked = True
        return step, bool(batch) or ticked

    async def _finish(
        self,
        body: Mapping[str, Any],
        driver: RunDriver,
        namespace: str,
        name: str,
        pipeline: str,
        stopped: Any,
    ) -> None:
        uid = driver.run
        logger.debug("run %s/%s is over; writing its final status", namespace, name)
        # The run is over: write the final status with its outputs.
        if (
            driver.machine.outcome is not None
            and driver.machine.outcome.outcome.value == "Cancelled"
        ):
            await self.store.mark_cancelled(uid)
        outputs = await self.store.outputs(driver)
        status = build_run_status(
            driver, generation=_generation(body), now=self.clock(), outputs=outputs
        )
        while not await self._patch_run(namespace, name, status) and not stopped:
            await stopped.wait(1.0)
        logger.debug("run %s/%s: final status written", namespace, name)
        self.metrics.run_finished(
            namespace, pipeline, status["phase"], status.get("durationSeconds")
        )

    async def _patch_run(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        try:
            await self.api.patch_status("pipelineruns", namespace, name, status)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("status patch of %s/%s failed: %s", namespace, name, exc or repr(exc))
            return False
        self.status_patches += 1
        return True

    def _count_steps(self, namespace: str, pipeline: str, driver: RunDriver, step: Step) -> None:
        counted = getattr(driver, "_counted", None)
        if counted is None:
            counted = set()
            driver._counted = counted  # type: ignore[attr-defined]
        for node, state in driver.machine.nodes.items():
            if state.phase in TERMINAL and node not in counted:
                counted.add(node)
                duration = None
                if state.finished is not None and state.first_started is not None:
                    duration = state.finished - state.first_started
                self.metrics.step_finished(namespace, pipeline, node, state.phase.value, duration)

    async def _expire(self, body: Mapping[str, Any], spec: Mapping[str, Any], stopped: Any) -> None:
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        meta = body["metadata"]
        fresh = await self.api.get_custom("pipelineruns", meta["namespace"], meta["name"])
        if fresh is None:
            return
        status = fresh.get("status") or {}
        finished = status.get("finishedAt")
        if status.get("phase") not in FINISHED or finished is None:
            return
        from datetime import datetime

        at = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp() + float(ttl)
        if self.clock() < at:
            await stopped.wait(at - self.clock())
        if not stopped:
            try:
                await self.api.delete_custom("pipelineruns", meta["namespace"], meta["name"])
            except KubeError as exc:
                logger.warning("could not delete expired run %s: %s", meta["name"], exc)

    async def _close(self, uid: str) -> None:
        # The run is over: late events (a step abandoned by a timeout or a cancel) are
        # acknowledged as they come instead of waiting for a supervisor that is gone.
        self.closed.add(uid)
        late = self.unacked.pop(uid, {})
        if late:
            await self.store.ack(list(late))

    async def cleanup_run(self, uid: str, body: Mapping[str, Any] | None = None) -> int:
        """The finalizer's work: delete the run's Redis keys (and an inline run's queue,
        once its workers are scaled down)."""
        await self._close(uid)
        deleted = await self.store.delete_run(uid)
        meta = (body or {}).get("metadata") or {}
        if ((body or {}).get("spec") or {}).get("pipelineSpec") is not None and meta:
            owner = WorkerOwner("PipelineRun", meta["namespace"], meta["name"], uid)
            self.pipelines.pop((owner.namespace, _run_key(owner.name)), None)
            await self._retire_workers(owner)
            deleted += int(await self.redis.delete(owner.queue))
        return deleted

    # -- background tasks ----------------------------------------------------------------

    async def follow_peering(self, stopped: asyncio.Event) -> None:
        """HA: keep ``leadership`` in line with kopf's peering (nothing to do standalone)."""
        config = self.config.peering
        if config is None:
            return
        namespaces: list[str | None] = list(config.namespaces) or [None]
        while not stopped.is_set():
            if self.kube is None:  # not logged in yet
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopped.wait(), config.interval)
                continue
            try:
                objects = {ns: await self.api.get_peering(config.name, ns) for ns in namespaces}
            except Exception as exc:  # kopf cannot talk to the API either: keep the state
                logger.warning("reading the peering object failed: %r", exc)
            else:
                now = datetime.now(UTC)
                self.leadership.set(pause_reason(objects, config, now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), config.interval)

    async def route_events(self, stopped: asyncio.Event) -> None:
        """Read step events with the consumer group and hand each to its run, while this
        replica acts (always, standalone)."""
        await self.store.ensure_group()
        self.ready = True
        while not stopped.is_set():
            if self.leadership.active:
                await self._route_while_active(stopped)
                continue
            # Paused: kopf stops the run supervisors; what this replica read and did not
            # acknowledge stays pending in Redis, for the acting replica to claim.
            self.unacked.clear()
            await _first(stopped.wait(), self.leadership.wait_active())

    async def _route_while_active(self, stopped: asyncio.Event) -> None:
        # First what other consumers left pending (replicas paused or gone) and this one's
        # own pending events, page by page; then new ones. Claimed again every
        # ``adopt_interval``: a replica pausing reads for a moment after this one acts.
        pending = True
        after = "0"
        adopted_at = -math.inf
        while not stopped.is_set() and self.leadership.active:
            try:
                if time.monotonic() - adopted_at >= self.config.adopt_interval:
                    adopted_at = time.monotonic()
                    claimed = await self.store.adopt()
                    if claimed:
                        logger.info("claimed %d events other replicas left pending", claimed)
                        pending, after = True, "0"
                batch = await self.store.read_events(pending=pending, block_ms=1000, after=after)
            except Exception as exc:
                logger.warning("reading step events failed: %s", exc)
                await asyncio.sleep(1)
                continue
            if pending:
                if not batch:
                    pending = False
                    continue
                after = batch[-1][0]
            late: list[str] = []
            for entry, event in batch:
                if event.run in self.closed:
                    late.append(entry)
                    continue
                waiting = self.unacked[event.run]
                if entry in waiting:
                    continue  # routed already (pending events are read again after a claim)
                waiting[entry] = event
                route = self.routes.get(event.run)
                if route is not None:
                    route.put_nowait((entry, event))
            if late:
                try:
                    await self.store.ack(late)
                except Exception as exc:  # acknowledged on the next restart instead
                    logger.warning("acknowledging late events failed: %s", exc)

    async def scale(self, stopped: asyncio.Event) -> None:
        """Follow in-flight work with each pipeline's worker replicas, while this replica
        acts (a paused one's view is empty: it would scale everything down)."""
        while not stopped.is_set():
            if not self.leadership.active:
                # The acting replica owns replicas meanwhile: forget them, and read them
                # again when acting again.
                for info in self.pipelines.values():
                    info.replicas = None
                self.metrics.set_active_runs({})
                await _first(stopped.wait(), self.leadership.wait_active())
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
        for info in list(self.pipelines.values()):
            info.last_busy = now
            try:
                found = await self.api.get_deployment(info.namespace, info.deployment)
            except Exception as exc:  # the periodic reconcile reads it instead
                logger.warning("reading the Deployment of %s failed: %r", info.name, exc)
                continue
            replicas = ((found or {}).get("spec") or {}).get("replicas")
            if info.replicas is None and isinstance(replicas, int):
                info.replicas = replicas

    async def scale_once(self, now: float) -> None:
        """One pass of the scaler (and of the gauges)."""
        in_flight: defaultdict[tuple[str, str], int] = defaultdict(int)
        active: defaultdict[str, int] = defaultdict(int)
        for namespace, pipeline, driver in list(self.drivers.values()):
            in_flight[(namespace, pipeline)] += driver.in_flight()
            active[namespace] += 1
        self.metrics.set_active_runs(dict(active))
        for key, info in list(self.pipelines.items()):
            busy = in_flight.get(key, 0)
            if info.metrics:
                self.metrics.set_queue_depth(info.queue, await self.store.queue_depth(info.queue))
            if busy:
                info.last_busy = now
            if info.minimum == info.maximum:
                continue  # a fixed size: someone else (KEDA, a human) owns replicas
            wanted = desired_replicas(busy, info.concurrency, info.minimum, info.maximum)
            current = info.replicas
            quiet = now - info.last_busy >= info.scale_down_delay
            if current is None:
                continue  # not known (yet) since a pause: the next reconcile reads it
            if not busy and current > wanted and not quiet:
                continue
            if busy and wanted < current:
                continue  # never scale down under work: a pod may hold a task in flight
            if wanted != current and self.pipelines.get(key) is info:
                try:
                    await self.api.patch_deployment(
                        info.namespace, info.deployment, {"spec": {"replicas": wanted}}
                    )
                except KubeError as exc:
                    logger.warning("could not scale %s: %s", info.deployment, exc)
                    continue
                info.replicas = wanted
                if info.metrics:
                    self.metrics.set_worker_replicas(info.namespace, info.name, wanted)

    async def close(self) -> None:
        """Release connections."""
        await self.redis.aclose(close_connection_pool=True)
        if self.kube is not None:
            await self.kube.close()


async def _first(*waits: Awaitable[Any]) -> None:
    """Until the first of ``waits`` is done (the others are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
