"""``ExecutionEngine``: runs a ``DAG`` on any taskiq broker by driving the scheduling core.

The engine owns no scheduling logic. It asks ``RunMachine`` what to do, kicks tasks
through a ``Dispatcher``, and feeds completions and the passing of time back in. A map
node is a nested machine over its items, driven by the same loop and the same channel.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskiq import AsyncBroker, TaskiqResult

from taskiq_flow.core import (
    Action,
    Cancel,
    Dispatch,
    Fail,
    Finish,
    NodeSpec,
    Phase,
    Plan,
    Retry,
    RunMachine,
    RunOutcome,
    Skip,
)
from taskiq_flow.dataflow.cache import DataCache
from taskiq_flow.dataflow.dag import DAG, DAGNode
from taskiq_flow.dispatch import Dispatcher
from taskiq_flow.errors import (
    ErrorHandlingMode,
    PipelineError,
    PipelineTimeoutError,
    StepTimeoutError,
    UnknownTaskError,
    format_error,
    names_unknown_task,
)
from taskiq_flow.optimization.parallel import ResourceAwareExecutor, global_limit
from taskiq_flow.tracking.observer import RunObserver

__all__ = ["SPREAD_ITEM", "ExecutionEngine", "ExecutionReport", "ItemProgress", "StepReport"]

SPREAD_ITEM = "**"
"""A map step's ``map_param`` that passes each item (a dict) as keyword arguments."""

_KICK_BURST = 256  # kicks sent concurrently at most; bounds open connections

ProgressCallback = Callable[["ItemProgress"], Any]


@dataclass(slots=True)
class ItemProgress:
    """Progress of a map step: reported after each item finishes."""

    node: str
    total: int
    succeeded: int
    failed: int

    @property
    def done(self) -> int:
        """Items finished either way."""
        return self.succeeded + self.failed


@dataclass(slots=True)
class StepReport:
    """What happened to one step."""

    name: str
    status: str
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    error: str | None = None
    items: dict[str, int] | None = None
    item_errors: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class ExecutionReport:
    """Per-step status, attempts, durations and errors of one run, and its success rate."""

    pipeline_id: str
    status: str
    started_at: float | None
    finished_at: float | None
    duration: float | None
    steps: dict[str, StepReport] = field(default_factory=dict)
    reason: str = ""

    @property
    def errors(self) -> dict[str, str]:
        """``{step: error}`` for the steps that failed."""
        return {n: s.error for n, s in self.steps.items() if s.status == "Failed" and s.error}

    @property
    def success_rate(self) -> float:
        """Share of steps that succeeded (1.0 for an empty report)."""
        if not self.steps:
            return 1.0
        ok = sum(1 for s in self.steps.values() if s.status == Phase.SUCCEEDED)
        return ok / len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {
            "pipeline_id": self.pipeline_id,
            "status": self.status,
            "reason": self.reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "success_rate": self.success_rate,
            "errors": self.errors,
            "steps": {
                name: {
                    "status": s.status,
                    "attempts": s.attempts,
                    "duration": s.duration,
                    "started_at": s.started_at,
                    "finished_at": s.finished_at,
                    "error": s.error,
                    "items": s.items,
                }
                for name, s in self.steps.items()
            },
        }


class ExecutionEngine:
    """Runs a DAG: each step as a taskiq task, as soon as its inputs exist.

    ``max_parallel`` caps steps in flight; ``error_mode`` decides what a failure does
    (see ``ErrorHandlingMode``); ``timeout`` bounds the whole run and ``task_timeout``
    each step that sets none itself. With ``resource_aware`` a step starts only while the
    machine has room for it, by ``resource_profiles`` and psutil readings.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        dag: DAG,
        max_parallel: int | None = 10,
        error_mode: ErrorHandlingMode | str = ErrorHandlingMode.FAIL_FAST,
        resource_aware: bool = False,
        resource_profiles: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        timeout: float | None = None,
        task_timeout: float | None = None,
        execution_mode: str = "parallel",
        progress_callback: ProgressCallback | None = None,
        executor: ResourceAwareExecutor | None = None,
        observer: RunObserver | None = None,
    ) -> None:
        self.broker = broker
        self.observer = observer  # tracking: told of each run's and step's start and end
        self.dag = dag
        self.max_parallel = max_parallel
        self.error_mode = ErrorHandlingMode.parse(error_mode)
        self.timeout = timeout
        self.task_timeout = task_timeout
        self.execution_mode = execution_mode
        self.progress_callback = progress_callback
        profiles = dict(resource_profiles or {})
        for node in dag.nodes.values():
            profile = profiles.get(node.name) or profiles.get(node.task_name)
            if profile is None and node.resources:
                profile = {
                    "estimated_memory_mb": node.resources.get("memory", 0),
                    "estimated_cpu_cores": node.resources.get("cpu", 0),
                }
            if profile is not None:
                profiles[node.name] = profile
        self.resource_aware = resource_aware or executor is not None
        self.executor = executor
        if resource_aware and executor is None:
            self.executor = ResourceAwareExecutor(
                max_parallel=max_parallel or 10, resource_profiles=profiles
            )
        elif executor is not None and not executor.resource_profiles:
            executor.resource_profiles = profiles
        self.plan = self._plan_with_timeouts()
        self._report: ExecutionReport | None = None
        self._current: _Run | None = None

    def _plan_with_timeouts(self) -> Plan:
        if self.task_timeout is None:
            return self.dag.plan
        return Plan(
            NodeSpec(
                spec.name,
                spec.deps,
                spec.retry,
                spec.timeout if spec.timeout is not None else self.task_timeout,
            )
            for spec in (self.dag.plan.nodes[name] for name in self.dag.plan.order)
        )

    def _admit(self, name: str, running: Collection[str]) -> bool:
        return self.executor is None or self.executor.admit(name, running)

    async def execute(
        self, inputs: Mapping[str, Any] | None = None, pipeline_id: str | None = None
    ) -> dict[str, Any]:
        """Run the DAG; return ``{output name: value}`` for every output produced.

        Raises ``MissingInputsError`` before sending anything when an external input is
        not given. With ``FAIL_FAST`` a failure raises ``PipelineError`` (a timeout
        ``StepTimeoutError`` or ``PipelineTimeoutError``) carrying the partial results.
        """
        given = dict(inputs or {})
        self.dag.validate(given)
        run = _Run(self, given, pipeline_id or uuid.uuid4().hex)
        self._current = run
        try:
            return await run.execute()
        finally:
            self._current = None
            self._report = run.report()

    def current_report(self) -> ExecutionReport | None:
        """A report of the run in progress (``None`` when none is), for live progress.

        Call it from the event loop that runs ``execute``.
        """
        run = self._current
        return None if run is None else run.report()

    def get_execution_report(self) -> ExecutionReport:
        """The report of the last run (raises ``RuntimeError`` before any run)."""
        if self._report is None:
            raise RuntimeError("the engine has not run yet")
        return self._report


@dataclass(slots=True)
class _MapState:
    """A map step in flight: a nested machine over its items."""

    node: DAGNode
    attempt: int
    items: list[Any]
    machine: RunMachine
    results: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Kick:
    """One task to send, and whose machine hears if sending fails."""

    map_state: _MapState | None
    machine_node: str
    attempt: int
    task_id: str
    node: DAGNode
    kwargs: dict[str, Any]


class _Run:
    """One execution of an engine's DAG."""

    def __init__(self, engine: ExecutionEngine, inputs: dict[str, Any], run_id: str) -> None:
        self.engine = engine
        self.dag = engine.dag
        self.run_id = run_id
        self.cache = DataCache(inputs)
        self.external = set(inputs)
        self.machine = RunMachine(
            engine.plan,
            error_mode=engine.error_mode,
            max_in_flight=engine.max_parallel,
            timeout=engine.timeout,
            admit=self._admit_step,
        )
        # task id -> (step, attempt, item index or -1, item attempt)
        self.pending: dict[str, tuple[str, int, int, int]] = {}
        self.maps: dict[str, _MapState] = {}
        self.exceptions: dict[str, BaseException] = {}
        self.item_counts: dict[str, dict[str, int]] = {}
        self.item_errors: dict[str, dict[int, str]] = {}
        self.wall_offset = time.time() - time.monotonic()
        self.dispatcher: Dispatcher | None = None

    # -- admission ---------------------------------------------------------------------

    def _admit_step(self, name: str, running: Collection[str]) -> bool:
        return self._global_room() and self.engine._admit(name, running)

    def _global_room(self) -> bool:
        """Whether one more task fits under ``set_max_parallel_tasks``.

        The machines decide several dispatches before any is sent, so this run's tasks
        are counted from its machines (sent or not), other runs' from the global count.
        """
        limit = global_limit.limit
        if limit is None:
            return True
        sent = len(self.dispatcher.outstanding) if self.dispatcher is not None else 0
        others = max(0, global_limit.in_flight - sent)
        own = sum(1 for n in self.machine.running if self.dag.nodes[n].kind != "map")
        own += sum(len(state.machine.running) for state in self.maps.values())
        return others + own < limit

    # -- the loop ----------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        clock = asyncio.get_running_loop().time
        self.wall_offset = time.time() - clock()
        observer = self.engine.observer
        if observer is not None:
            observer.run_started(self.run_id, "dataflow", list(self.engine.plan.order))
        try:
            await self._loop(clock)
            outcome = self._outcome()
        except BaseException as exc:
            if observer is not None:
                cancelled = isinstance(exc, asyncio.CancelledError)
                await observer.run_finished(
                    self.run_id,
                    "CANCELLED" if cancelled else "FAILED",
                    error="cancelled" if cancelled else format_error(exc),
                )
            raise
        if observer is not None:
            finish = self.machine.outcome
            if finish is None or finish.outcome is RunOutcome.SUCCEEDED:
                await observer.run_finished(self.run_id, "COMPLETED", result=outcome)
            else:  # CONTINUE_ON_ERROR: outputs are returned, but steps failed
                await observer.run_finished(
                    self.run_id, "FAILED", result=outcome, error=finish.reason
                )
        return outcome

    async def _loop(self, clock: Callable[[], float]) -> None:
        async with Dispatcher(
            self.engine.broker, self.run_id, mode=self.engine.execution_mode
        ) as dispatcher:
            self.dispatcher = dispatcher
            await self._apply(None, self.machine.start(clock()))
            while not self.machine.finished:
                deadline = self._next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - clock())
                for completion in await dispatcher.wait(timeout):
                    await self._on_result(completion.task_id, completion.result)
                now = clock()
                if self.machine.finished:
                    break
                await self._apply(None, self.machine.tick(now))
                for state in list(self.maps.values()):
                    await self._apply(state, state.machine.tick(now))

    def _next_deadline(self) -> float | None:
        deadlines = [self.machine.next_deadline()]
        deadlines.extend(state.machine.next_deadline() for state in self.maps.values())
        return min((d for d in deadlines if d is not None), default=None)

    def _outcome(self) -> dict[str, Any]:
        outputs = {k: v for k, v in self.cache.to_dict().items() if k not in self.external}
        finish = self.machine.outcome
        assert finish is not None
        if finish.outcome is RunOutcome.SUCCEEDED or (
            finish.outcome is RunOutcome.FAILED
            and self.engine.error_mode is ErrorHandlingMode.CONTINUE_ON_ERROR
            and not self.machine.timed_out
        ):
            return outputs
        errors = {
            name: state.error
            for name, state in self.machine.nodes.items()
            if state.phase is Phase.FAILED and state.error
        }
        failed = finish.failed_node
        error_class: type[PipelineError] = PipelineError
        if self.machine.timed_out:
            error_class = PipelineTimeoutError
        elif failed is not None and (self.machine.nodes[failed].error or "").startswith(
            "TimeoutError: the step exceeded"
        ):
            error_class = StepTimeoutError
        raise error_class(
            f"pipeline {self.run_id} failed: {finish.reason}",
            failed_node=failed,
            partial_results=outputs,
            errors=errors,
            cause=self.exceptions.get(failed) if failed else None,
        )

    # -- actions -----------------------------------------------------------------------

    async def _apply(self, origin: _MapState | None, actions: Sequence[Action]) -> None:
        if actions:
            await self._drain([(origin, a) for a in actions])

    async def _drain(self, pairs: Sequence[tuple[_MapState | None, Action]]) -> None:
        queue = deque(pairs)
        while queue:
            kicks: list[_Kick] = []
            while queue:
                state, action = queue.popleft()
                if state is None:
                    queue.extend(self._handle_step(action, kicks))
                else:
                    queue.extend(self._handle_item(state, action, kicks))
            if len(kicks) == 1:
                # The common case of a chain: no task to gather, no extra trip through the
                # event loop.
                try:
                    await self._send(kicks[0])
                except Exception as exc:
                    queue.extend(self._send_failed(kicks[0], exc))
                continue
            for start in range(0, len(kicks), _KICK_BURST):
                burst = kicks[start : start + _KICK_BURST]
                outcomes = await asyncio.gather(
                    *(self._send(kick) for kick in burst), return_exceptions=True
                )
                for kick, outcome in zip(burst, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        queue.extend(self._send_failed(kick, outcome))

    def _handle_step(
        self, action: Action, kicks: list[_Kick]
    ) -> list[tuple[_MapState | None, Action]]:
        if isinstance(action, Dispatch):
            node = self.dag.nodes[action.node]
            if self.engine.observer is not None and action.attempt == 1:
                self.engine.observer.step_started(
                    self.run_id, self.machine.plan.index[node.name], node.name
                )
            if node.kind == "map":
                return self._start_map(node, action.attempt)
            task_id = f"{self.run_id}.{node.name}.{action.attempt}"
            try:
                kwargs = self._kwargs(node)
            except Exception as exc:
                return self._step_failed(node.name, action.attempt, exc, retryable=False)
            kicks.append(_Kick(None, node.name, action.attempt, task_id, node, kwargs))
            self.pending[task_id] = (node.name, action.attempt, -1, 1)
        elif isinstance(action, Retry | Fail | Cancel | Skip):
            self.maps.pop(action.node, None)
            if isinstance(action, Fail) and self.engine.observer is not None:
                self._observe_end(action.node, error=action.error)
        return []

    def _observe_end(self, name: str, *, result: Any = None, error: str | None = None) -> None:
        assert self.engine.observer is not None
        self.engine.observer.step_finished(
            self.run_id, self.machine.plan.index[name], name, result=result, error=error
        )

    def _handle_item(
        self, state: _MapState, action: Action, kicks: list[_Kick]
    ) -> list[tuple[_MapState | None, Action]]:
        node = state.node
        if isinstance(action, Dispatch):
            index = int(action.node)
            task_id = f"{self.run_id}.{node.name}.{state.attempt}.{index}"
            if action.attempt > 1:
                task_id += f".{action.attempt}"
            try:
                kwargs = self._kwargs(node)
            except Exception as exc:
                return [
                    (state, a)
                    for a in state.machine.failed(
                        action.node, action.attempt, format_error(exc), self._now(), retryable=False
                    )
                ]
            item = state.items[index]
            if node.map_param == SPREAD_ITEM:
                kwargs.update(item)
            else:
                kwargs[node.map_param or "item"] = item
            kicks.append(_Kick(state, action.node, action.attempt, task_id, node, kwargs))
            self.pending[task_id] = (node.name, state.attempt, index, action.attempt)
        elif isinstance(action, Fail):
            state.errors[int(action.node)] = action.error
        elif isinstance(action, Finish):
            return self._finish_map(state)
        return []

    def _start_map(self, node: DAGNode, attempt: int) -> list[tuple[_MapState | None, Action]]:
        source = (
            node.map_items if node.map_items is not None else self.cache.get(node.map_over or "")
        )
        if isinstance(source, str | bytes | Mapping) or not hasattr(source, "__iter__"):
            error = TypeError(
                f"map step {node.name!r} needs a list to map over, got {type(source).__name__}"
            )
            return self._step_failed(node.name, attempt, error, retryable=False)
        items = list(source)
        plan = Plan(NodeSpec(str(i), (), node.retry, node.timeout) for i in range(len(items)))
        machine = RunMachine(
            plan,
            error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR,
            max_in_flight=node.max_parallel,
            admit=lambda _name, _running: self._global_room(),
        )
        state = _MapState(node, attempt, items, machine)
        self.maps[node.name] = state
        self.item_counts[node.name] = {"total": len(items), "succeeded": 0, "failed": 0}
        return [(state, a) for a in machine.start(self._now())]

    def _finish_map(self, state: _MapState) -> list[tuple[_MapState | None, Action]]:
        node = state.node
        self.maps.pop(node.name, None)
        self.item_errors[node.name] = dict(state.errors)
        now = self._now()
        if state.errors and self.engine.error_mode is not ErrorHandlingMode.SKIP_FAILED:
            first = min(state.errors)
            message = (
                f"{len(state.errors)} of {len(state.items)} items failed; "
                f"item {first}: {state.errors[first]}"
            )
            return [
                (None, a)
                for a in self.machine.failed(
                    node.name, state.attempt, message, now, retryable=False
                )
            ]
        ordered = sorted(state.results)
        if node.filter_items:
            value: Any = [state.items[i] for i in ordered if state.results[i]]
        else:
            value = [state.results[i] for i in ordered]
        self.cache.set(node.output, value)
        if self.engine.observer is not None:
            self._observe_end(node.name, result=value)
        return [(None, a) for a in self.machine.succeeded(node.name, state.attempt, now)]

    def _step_failed(
        self, name: str, attempt: int, exc: BaseException, *, retryable: bool
    ) -> list[tuple[_MapState | None, Action]]:
        self.exceptions[name] = exc
        actions = self.machine.failed(
            name, attempt, format_error(exc), self._now(), retryable=retryable
        )
        return [(None, a) for a in actions]

    async def _send(self, kick: _Kick) -> None:
        assert self.dispatcher is not None
        node = kick.node
        labels: dict[str, Any] = {}
        timeout = self.machine.plan.nodes[node.name].timeout
        if timeout is not None:
            labels["timeout"] = timeout  # the worker cancels the task too
        await self.dispatcher.kick(
            node.task_name,
            kick.task_id,
            node=node.name,
            attempt=kick.attempt,
            step_index=self.machine.plan.index[node.name],
            kwargs=kick.kwargs,
            task=node.task,
            labels=labels,
        )

    def _send_failed(
        self, kick: _Kick, exc: BaseException
    ) -> list[tuple[_MapState | None, Action]]:
        self.pending.pop(kick.task_id, None)
        retryable = not isinstance(exc, UnknownTaskError)
        if kick.map_state is None:
            return self._step_failed(kick.machine_node, kick.attempt, exc, retryable=retryable)
        actions = kick.map_state.machine.failed(
            kick.machine_node, kick.attempt, format_error(exc), self._now(), retryable=retryable
        )
        return [(kick.map_state, a) for a in actions]

    # -- results -----------------------------------------------------------------------

    async def _on_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        entry = self.pending.pop(task_id, None)
        if entry is None:
            return
        name, attempt, index, item_attempt = entry
        now = self._now()
        if index >= 0:
            state = self.maps.get(name)
            if state is None or state.attempt != attempt:
                return  # a late item of an abandoned attempt
            counts = self.item_counts[name]
            item = str(index)
            if result.is_err:
                actions = state.machine.failed(item, item_attempt, format_error(result.error), now)
                if any(isinstance(a, Fail) for a in actions):
                    counts["failed"] += 1
            else:
                state.results[index] = result.return_value
                actions = state.machine.succeeded(item, item_attempt, now)
                counts["succeeded"] += 1
            self._report_progress(name, counts)
            await self._apply(state, actions)
            return
        if result.is_err:
            if result.error is not None:
                self.exceptions[name] = result.error
            error = format_error(result.error)
            actions = self.machine.failed(
                name, attempt, error, now, retryable=not names_unknown_task(error)
            )
            await self._apply(None, actions)
            return
        try:
            self._store(self.dag.nodes[name], result.return_value)
        except Exception as exc:
            await self._drain(self._step_failed(name, attempt, exc, retryable=False))
            return
        if self.engine.observer is not None:
            self._observe_end(name, result=result.return_value)
        await self._apply(None, self.machine.succeeded(name, attempt, now))

    def _report_progress(self, name: str, counts: dict[str, int]) -> None:
        callback = self.engine.progress_callback
        if callback is not None:
            callback(ItemProgress(name, counts["total"], counts["succeeded"], counts["failed"]))

    def _store(self, node: DAGNode, value: Any) -> None:
        if not node.multi_output:
            self.cache.set(node.output, value)
            return
        if not isinstance(value, Mapping):
            raise TypeError(
                f"task {node.task_name!r} declares outputs {list(node.outputs)} and must "
                f"return a dict with those keys, not {type(value).__name__}"
            )
        missing = [name for name in node.outputs if name not in value]
        if missing:
            raise KeyError(
                f"task {node.task_name!r} did not return the declared output(s) {missing}"
            )
        for name in node.outputs:
            self.cache.set(name, value[name])

    def _kwargs(self, node: DAGNode) -> dict[str, Any]:
        kwargs = dict(node.args)
        lenient = self.engine.error_mode is ErrorHandlingMode.SKIP_FAILED
        for name in node.inputs:
            if self.cache.has(name):
                kwargs[node.parameter_for(name)] = self.cache.get(name)
            elif lenient:
                kwargs[node.parameter_for(name)] = None  # its producer failed and was skipped
            else:
                raise KeyError(f"input {name!r} of step {node.name!r} has no value")
        for name in node.optional_inputs:
            if self.cache.has(name):
                kwargs[node.parameter_for(name)] = self.cache.get(name)
        return kwargs

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- report ------------------------------------------------------------------------

    def report(self) -> ExecutionReport:
        def wall(t: float | None) -> float | None:
            return None if t is None else t + self.wall_offset

        steps = {}
        for name, state in self.machine.nodes.items():
            duration = None
            if state.first_started is not None and state.finished is not None:
                duration = state.finished - state.first_started
            steps[name] = StepReport(
                name=name,
                status=state.phase.value,
                attempts=state.attempt,
                started_at=wall(state.first_started),
                finished_at=wall(state.finished),
                duration=duration,
                error=state.error if state.phase is not Phase.SUCCEEDED else None,
                items=self.item_counts.get(name),
                item_errors=self.item_errors.get(name, {}),
            )
        outcome = self.machine.outcome
        started = self.machine.started_at
        finished = max(
            (s.finished for s in self.machine.nodes.values() if s.finished), default=None
        )
        return ExecutionReport(
            pipeline_id=self.run_id,
            status=outcome.outcome.value if outcome else "Running",
            started_at=wall(started),
            finished_at=wall(finished),
            duration=None if started is None or finished is None else finished - started,
            steps=steps,
            reason=outcome.reason if outcome else "",
        )
