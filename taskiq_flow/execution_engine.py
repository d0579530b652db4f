"""``ExecutionEngine``: runs a ``DAG`` on any taskiq broker by driving the scheduling core.

The engine owns no scheduling logic. It asks ``RunMachine`` what to do, kicks tasks
through a ``Dispatcher``, and feeds completions and the passing of time back in. The
items of a map step are the core's too: the engine only finds the list they come from
and assembles the output the core names.
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
    MISSING_INPUT,
    Action,
    Cancel,
    Check,
    Dispatch,
    DispatchItem,
    Expand,
    Fail,
    Gather,
    NodeSpec,
    Phase,
    Plan,
    RunMachine,
    RunOutcome,
    Skip,
    task_id,
)
from taskiq_flow.core.conditions import RUN_DATA
from taskiq_flow.core.report import ExecutionReport, StepReport, report_of
from taskiq_flow.core.states import tracking_status
from taskiq_flow.dataflow.cache import DataCache
from taskiq_flow.dataflow.dag import DAG, POSITIONAL_ITEM, DAGNode
from taskiq_flow.dispatch import Dispatcher
from taskiq_flow.errors import (
    ErrorHandlingMode,
    PipelineError,
    PipelineTimeoutError,
    StepTimeoutError,
    format_error,
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


class ExecutionEngine:
    """Runs a DAG: each step as a taskiq task, as soon as its inputs exist.

    ``max_parallel`` caps tasks in flight, map items included (``None``: no cap);
    ``error_mode`` decides what a failure does
    (see ``ErrorHandlingMode``); ``timeout`` bounds the whole run and ``task_timeout``
    each step that sets none itself. With ``resource_aware`` a step starts only while the
    machine has room for it, by ``resource_profiles`` and psutil readings.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        dag: DAG,
        max_parallel: int | None = None,
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
                spec.fan_out,
                spec.max_parallel,
                spec.filter_items,
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

    def cancel(self, reason: str = "the run was cancelled") -> bool:
        """Cancel the run in progress the way a PipelineRun's ``spec.cancel`` does: its
        regular steps stop and its ``finally`` steps run; ``execute`` then raises a
        ``PipelineError`` of a Cancelled run. False (nothing done) when no run is in
        progress, it has no finally step or they already began: cancel the task then.
        """
        run = self._current
        return run is not None and run.cancel(reason)

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
class _Items:
    """A fan-out step in flight: the items it maps over and the results that came back."""

    node: DAGNode
    items: list[Any]
    results: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Sent:
    """What a task id in flight is: a step's attempt, or one attempt of one of its items."""

    step: str
    attempt: int
    item: int | None = None
    item_attempt: int = 1


@dataclass(slots=True)
class _Kick:
    """One task to send."""

    sent: _Sent
    task_id: str
    node: DAGNode
    args: tuple[Any, ...]
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
            admit_item=self._global_room,
        )
        self.pending: dict[str, _Sent] = {}
        self.maps: dict[str, _Items] = {}
        self.exceptions: dict[str, BaseException] = {}
        self.wall_offset = time.time() - time.monotonic()
        self.dispatcher: Dispatcher | None = None
        self._cancelling: asyncio.Future[None] | None = None

    def cancel(self, reason: str) -> bool:
        """See ``ExecutionEngine.cancel``."""
        machine = self.machine
        has_finally = any(node.final for node in self.dag.nodes.values())
        if not has_finally or machine.verdict is not None or machine.started_at is None:
            return False
        # Carried out beside the loop, which wakes up when a finally step finishes.
        self._cancelling = asyncio.ensure_future(self._drain(machine.cancel(self._now(), reason)))
        return True

    # -- admission ---------------------------------------------------------------------

    def _admit_step(self, name: str, running: Collection[str]) -> bool:
        return self._global_room() and self.engine._admit(name, running)

    def _global_room(self) -> bool:
        """Whether one more task fits under ``set_max_parallel_tasks``.

        The machine decides several dispatches before any is sent, so this run's tasks
        are counted from the machine (sent or not), other runs' from the global count.
        """
        limit = global_limit.limit
        if limit is None:
            return True
        sent = len(self.dispatcher.outstanding) if self.dispatcher is not None else 0
        others = max(0, global_limit.in_flight - sent)
        return others + self.machine.in_flight() < limit

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
            assert finish is not None
            # CONTINUE_ON_ERROR: outputs are returned, but steps failed.
            error = None if finish.outcome is RunOutcome.SUCCEEDED else finish.reason
            await observer.run_finished(
                self.run_id, tracking_status(finish.outcome), result=outcome, error=error
            )
        return outcome

    async def _loop(self, clock: Callable[[], float]) -> None:
        async with Dispatcher(
            self.engine.broker, self.run_id, mode=self.engine.execution_mode
        ) as dispatcher:
            self.dispatcher = dispatcher
            await self._drain(self.machine.start(clock()))
            while not self.machine.finished:
                deadline = self.machine.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - clock())
                for completion in await dispatcher.wait(timeout):
                    await self._on_result(completion.task_id, completion.result)
                if self.machine.finished:
                    break
                await self._drain(self.machine.tick(clock()))

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

    async def _drain(self, actions: Sequence[Action]) -> None:
        queue = deque(actions)
        while queue:
            kicks: list[_Kick] = []
            while queue:
                queue.extend(self._carry_out(queue.popleft(), kicks))
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

    def _carry_out(self, action: Action, kicks: list[_Kick]) -> list[Action]:
        if isinstance(action, Dispatch):
            return self._dispatch(action, kicks)
        if isinstance(action, DispatchItem):
            return self._dispatch_item(action, kicks)
        if isinstance(action, Expand):
            return self._expand(action)
        if isinstance(action, Check):
            # An output whose producer did not produce it is not in the cache.
            cache = self.cache
            values = {name: cache.get(name) for name in action.data if cache.has(name)}
            return self.machine.checked(action.node, values, self._now())
        if isinstance(action, Gather):
            self._gather(action)
        elif isinstance(action, Fail) and action.item is None:
            self.maps.pop(action.node, None)
            if self.engine.observer is not None:
                self._observe_end(action.node, error=action.error)
        elif isinstance(action, Cancel | Skip):
            self.maps.pop(action.node, None)
        return []

    def _dispatch(self, action: Dispatch, kicks: list[_Kick]) -> list[Action]:
        node = self.dag.nodes[action.node]
        if self.engine.observer is not None and action.attempt == 1:
            self._observe_start(node.name)
        args, kwargs = self._call(node)
        sent = _Sent(node.name, action.attempt)
        tid = task_id(self.run_id, node.name, action.attempt)
        kicks.append(_Kick(sent, tid, node, args, kwargs))
        return []

    def _expand(self, action: Expand) -> list[Action]:
        node = self.dag.nodes[action.node]
        if self.engine.observer is not None and action.attempt == 1:
            self._observe_start(node.name)
        source = (
            node.map_items if node.map_items is not None else self.cache.get(node.map_over or "")
        )
        if isinstance(source, str | bytes | Mapping) or not hasattr(source, "__iter__"):
            error = TypeError(
                f"map step {node.name!r} needs a list to map over, got {type(source).__name__}"
            )
            return self._step_failed(node.name, action.attempt, error, retryable=False)
        items = list(source)
        self.maps[node.name] = _Items(node, items)
        return self.machine.expand(node.name, action.attempt, len(items), self._now())

    def _dispatch_item(self, action: DispatchItem, kicks: list[_Kick]) -> list[Action]:
        state = self.maps[action.node]
        node = state.node
        args, kwargs = self._call(node)
        item = state.items[action.item]
        if node.map_param == SPREAD_ITEM:
            kwargs.update(item)
        elif node.map_param == POSITIONAL_ITEM:
            args = (item, *args)
        else:
            kwargs[node.map_param or "item"] = item
        sent = _Sent(node.name, action.attempt, action.item, action.item_attempt)
        tid = task_id(self.run_id, node.name, action.attempt, action.item, action.item_attempt)
        kicks.append(_Kick(sent, tid, node, args, kwargs))
        return []

    def _gather(self, action: Gather) -> None:
        state = self.maps.pop(action.node)
        source = state.items if action.of_source else state.results
        value = [source[i] for i in action.items]
        self.cache.set(state.node.output, value)
        # The step may have failed with its good items kept (ContinueOnError).
        succeeded = self.machine.nodes[action.node].phase is Phase.SUCCEEDED
        if self.engine.observer is not None and succeeded:
            self._observe_end(action.node, result=value)

    def _observe_start(self, name: str) -> None:
        assert self.engine.observer is not None
        self.engine.observer.step_started(self.run_id, self.machine.plan.index[name], name)

    def _observe_end(self, name: str, *, result: Any = None, error: str | None = None) -> None:
        assert self.engine.observer is not None
        self.engine.observer.step_finished(
            self.run_id, self.machine.plan.index[name], name, result=result, error=error
        )

    def _step_failed(
        self, name: str, attempt: int, exc: BaseException, *, retryable: bool | None = None
    ) -> list[Action]:
        self.exceptions[name] = exc
        return self.machine.failed(
            name, attempt, format_error(exc), self._now(), retryable=retryable
        )

    async def _send(self, kick: _Kick) -> None:
        assert self.dispatcher is not None
        node = kick.node
        labels: dict[str, Any] = {}
        timeout = self.machine.plan.nodes[node.name].timeout
        if timeout is not None:
            labels["timeout"] = timeout  # the worker cancels the task too
        self.pending[kick.task_id] = kick.sent
        await self.dispatcher.kick(
            node.task_name,
            kick.task_id,
            node=node.name,
            attempt=kick.sent.attempt,
            step_index=self.machine.plan.index[node.name],
            kwargs=kick.kwargs,
            args=kick.args,
            task=node.task,
            labels=labels,
        )

    def _send_failed(self, kick: _Kick, exc: BaseException) -> list[Action]:
        self.pending.pop(kick.task_id, None)
        sent = kick.sent
        if sent.item is None:
            return self._step_failed(sent.step, sent.attempt, exc)
        return self.machine.item_failed(
            sent.step, sent.attempt, sent.item, sent.item_attempt, format_error(exc), self._now()
        )

    # -- results -----------------------------------------------------------------------

    async def _on_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        sent = self.pending.pop(task_id, None)
        if sent is None:
            return
        now = self._now()
        name = sent.step
        if sent.item is not None:
            if result.is_err:
                error = format_error(result.error)
                actions = self.machine.item_failed(
                    name, sent.attempt, sent.item, sent.item_attempt, error, now
                )
            else:
                value = result.return_value
                if self.machine.item_current(name, sent.attempt, sent.item, sent.item_attempt):
                    self.maps[name].results[sent.item] = value
                actions = self.machine.item_succeeded(
                    name, sent.attempt, sent.item, sent.item_attempt, now, value
                )
            self._report_progress(name)
            await self._drain(actions)
            return
        if result.is_err:
            if result.error is not None:
                self.exceptions[name] = result.error
            error = format_error(result.error)
            await self._drain(self.machine.failed(name, sent.attempt, error, now))
            return
        try:
            self._store(self.dag.nodes[name], result.return_value)
        except Exception as exc:
            await self._drain(self._step_failed(name, sent.attempt, exc, retryable=False))
            return
        if self.engine.observer is not None:
            self._observe_end(name, result=result.return_value)
        await self._drain(self.machine.succeeded(name, sent.attempt, now))

    def _report_progress(self, name: str) -> None:
        callback = self.engine.progress_callback
        fan = self.machine.fanouts.get(name)
        if callback is not None and fan is not None:
            callback(ItemProgress(name, fan.total, fan.succeeded + fan.dropped, fan.failed))

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

    def _call(self, node: DAGNode) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments of ``node``'s task (items aside)."""
        kwargs = dict(node.args)
        args: tuple[Any, ...] = ()
        for name in node.inputs:
            # The core started this step, so an input without a value is one whose
            # producer it let the step do without.
            if name == RUN_DATA:
                value = self.machine.run_data()
            else:
                value = self.cache.get(name) if self.cache.has(name) else MISSING_INPUT
            if name == node.first_arg:
                args = (value,)
            else:
                kwargs[node.parameter_for(name)] = value
        for name in node.optional_inputs:
            if self.cache.has(name):
                kwargs[node.parameter_for(name)] = self.cache.get(name)
            elif name == RUN_DATA and node.final:
                kwargs[node.parameter_for(name)] = self.machine.run_data()
        return args, kwargs

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- report ------------------------------------------------------------------------

    def report(self) -> ExecutionReport:
        return report_of(self.machine, self.run_id, self._now(), self.wall_offset)
