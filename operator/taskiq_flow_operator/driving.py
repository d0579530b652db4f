"""``RunDriver``: one PipelineRun on the scheduling core, without any I/O.

The driver owns a ``RunMachine`` (the same core the library's engine drives), which
decides everything: which step or item goes next, retries, what a failure means, what a
filter keeps. The driver adds what only the cluster data path needs: one message per
step or item, arguments as Redis references, step events in, kicks and notes out. A
filter step's workers store the item itself, for the items its task kept; a fan-out
step's output is the stored items the core names when it gathers the step. The
supervisor (``runs``) carries out what it returns and persists ``snapshot()``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskiq_flow.core import (
    MISSING_INPUT,
    Action,
    Check,
    Dispatch,
    DispatchItem,
    Expand,
    Fail,
    Finish,
    Gather,
    Retry,
    RunMachine,
    RunOutcome,
    task_id,
)
from taskiq_flow.core.conditions import RUN_DATA
from taskiq_flow.dataflow.dag import POSITIONAL_ITEM, DAGNode
from taskiq_flow.manifests.compiler import CompiledPipeline, RunSettings
from taskiq_flow_worker import protocol as p

__all__ = ["Kick", "MapSourceError", "Note", "RunDriver", "Step"]


@dataclass(frozen=True, slots=True)
class Kick:
    """A message to send: task ``task_name`` with id ``task_id``."""

    task_name: str
    task_id: str
    step: str
    attempt: int
    item: int | None
    kwargs: dict[str, Any]
    filter: str | None = None  # an item of a filter step: the parameter receiving the item
    args: tuple[Any, ...] = ()
    item_attempt: int = 1
    timeout: float | None = None  # the worker cancels the task after this long
    final: bool = False  # a finally step: the worker runs it after a cancel too


@dataclass(frozen=True, slots=True)
class Note:
    """A Kubernetes Event to post about the run."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(slots=True)
class Step:
    """What a batch of input did: messages to send, Events to post."""

    kicks: list[Kick] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    finished: Finish | None = None
    # Conditions waiting for data: step → the data names' values or references (the
    # supervisor resolves them and answers with ``RunDriver.checked``).
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def merge(self, other: Step) -> None:
        """Add what ``other`` did to this one."""
        self.kicks += other.kicks
        self.notes += other.notes
        self.checks.update(other.checks)
        self.finished = self.finished or other.finished


class RunDriver:
    """Drives one run: ``start``, then ``on_event``/``tick``/``cancel``; see the module doc."""

    def __init__(
        self,
        run: str,
        pipeline: CompiledPipeline,
        settings: RunSettings,
        inputs: Mapping[str, Any],
    ) -> None:
        self.run = run
        self.pipeline = pipeline
        self.dag = pipeline.dag
        self.inputs = dict(inputs)
        self.cancelling = False
        self.machine = RunMachine(
            self.dag.plan,
            error_mode=settings.error_mode,
            max_in_flight=settings.parallelism,
            timeout=settings.timeout,
        )
        self.producers: dict[str, str] = {
            output: node.name for node in self.dag.nodes.values() for output in node.outputs
        }
        self.lengths: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        # A gathered fan-out step whose output is not every item (a filter, or failed
        # items left out): the stored indices of its output, in order.
        self.kept: dict[str, list[int]] = {}
        # Bytes of the stored item outputs of fan-out steps in flight.
        self.item_bytes: dict[str, int] = {}

    # -- inputs --------------------------------------------------------------------------

    def start(self, now: float) -> Step:
        """Begin the run (nothing happens when it already started)."""
        step = Step()
        if self.machine.started_at is None:
            step.notes.append(Note("Normal", "Started", f"run started ({len(self.dag)} steps)"))
        self._apply(self.machine.start(now), now, step)
        return step

    def on_event(self, event: p.StepEvent, now: float) -> Step:
        """A worker reported an attempt (or one item of it); stale reports are ignored."""
        step = Step()
        name, attempt = event.step, event.attempt
        if event.item is None:
            if event.ok:
                if self.machine.step_current(name, attempt):
                    if event.length is not None:
                        self.lengths[name] = event.length
                    self.sizes[name] = event.size or 0
                actions = self.machine.succeeded(name, attempt, now)
            else:
                error = event.error or "the step failed"
                actions = self.machine.failed(name, attempt, error, now)
        elif event.ok:
            # The worker saw the value; ``keep`` is whether it was truthy (a filter's rule).
            truthy = True if event.keep is None else event.keep
            if truthy and self.machine.item_current(name, attempt, event.item, event.item_attempt):
                self.item_bytes[name] = self.item_bytes.get(name, 0) + (event.size or 0)
            actions = self.machine.item_succeeded(
                name, attempt, event.item, event.item_attempt, now, truthy
            )
        else:
            error = event.error or "the item failed"
            actions = self.machine.item_failed(
                name, attempt, event.item, event.item_attempt, error, now
            )
        self._apply(actions, now, step)
        return step

    def resume(self, now: float) -> Step:
        """After ``restore``: send what may start now (results in flight will come)."""
        step = Step()
        self._apply(self.machine.refresh(now), now, step)
        return step

    def tick(self, now: float) -> Step:
        """Time passed: due retries, step and run timeouts."""
        step = Step()
        self._apply(self.machine.tick(now), now, step)
        return step

    def cancel(self, now: float) -> Step:
        """``spec.cancel`` was set: no step but the finally ones is sent any more, and the
        run ends Cancelled once they are over (a second call does nothing)."""
        step = Step()
        if not self.cancelling:
            self.cancelling = True
            reason = "the run was cancelled (spec.cancel)"
            self._apply(self.machine.cancel(now, reason), now, step)
        return step

    def checked(self, node: str, values: Mapping[str, Any], now: float) -> Step:
        """The values a step's condition asked for (``Step.checks``), resolved."""
        step = Step()
        self._apply(self.machine.checked(node, values, now), now, step)
        return step

    # -- queries -------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run is over."""
        return self.machine.finished

    def in_flight(self) -> int:
        """Messages sent and not finished (items count one each): what workers must do."""
        return self.machine.in_flight()

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do."""
        return self.machine.next_deadline()

    def item_indices(self, name: str) -> list[int]:
        """The stored indices of the items of a gathered fan-out step's output, in order."""
        kept = self.kept.get(name)
        return list(kept) if kept is not None else list(range(self.lengths.get(name, 0)))

    # -- persistence ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as plain data."""
        return {
            "machine": self.machine.snapshot(),
            "lengths": self.lengths,
            "sizes": self.sizes,
            "kept": self.kept,
            "itemBytes": self.item_bytes,
            "cancelling": self.cancelling,
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Continue from a ``snapshot()``."""
        self.machine.restore(snapshot["machine"])
        self.lengths = dict(snapshot.get("lengths", {}))
        self.sizes = dict(snapshot.get("sizes", {}))
        self.kept = {name: list(kept) for name, kept in snapshot.get("kept", {}).items()}
        self.item_bytes = dict(snapshot.get("itemBytes", {}))
        self.cancelling = bool(snapshot.get("cancelling", False))

    # -- internals -----------------------------------------------------------------------

    def _apply(self, actions: list[Action], now: float, step: Step) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Dispatch):
                step.kicks.append(self._kick(action.node, action.attempt))
            elif isinstance(action, Expand):
                queue.extend(self._expand(action, now))
            elif isinstance(action, Check):
                step.checks[action.node] = self._check_data(action)
            elif isinstance(action, DispatchItem):
                step.kicks.append(self._kick_item(action))
            elif isinstance(action, Gather):
                self._gather(action)
            elif isinstance(action, Retry):
                what = f"step {action.node!r}"
                if action.item is not None:
                    what = f"item {action.item} of {what}"
                step.notes.append(
                    Note(
                        "Warning",
                        "Retrying",
                        f"{what} failed ({action.error}); attempt "
                        f"{action.attempt} in {max(action.at - now, 0):.1f}s",
                    )
                )
            elif isinstance(action, Fail) and action.item is None:
                step.notes.append(
                    Note(
                        "Warning",
                        "StepFailed",
                        f"step {action.node!r} failed after {action.attempt} attempt(s): "
                        f"{action.error}",
                    )
                )
            elif isinstance(action, Finish):
                step.finished = action
                reason = action.outcome.value
                kind = "Normal" if action.outcome is RunOutcome.SUCCEEDED else "Warning"
                step.notes.append(Note(kind, reason, f"run {reason.lower()}: {action.reason}"))

    def _kick(self, name: str, attempt: int) -> Kick:
        node = self.dag.nodes[name]
        args, kwargs = self._call(node)
        return Kick(
            node.task_name,
            task_id(self.run, name, attempt),
            name,
            attempt,
            None,
            kwargs,
            args=args,
            timeout=node.timeout,
            final=node.final,
        )

    def _check_data(self, action: Check) -> dict[str, Any]:
        """The values (inputs) or references (outputs) of the data a condition reads; an
        output whose producer did not produce it is left out."""
        return {name: self._value(name) for name in action.data if self._has_value(name)}

    def _expand(self, action: Expand, now: float) -> list[Action]:
        node = self.dag.nodes[action.node]
        try:
            total = self._length_of(node.map_over)
        except MapSourceError as exc:
            return self.machine.failed(node.name, action.attempt, str(exc), now, retryable=False)
        self.item_bytes[node.name] = 0
        return self.machine.expand(node.name, action.attempt, total, now)

    def _kick_item(self, action: DispatchItem) -> Kick:
        node = self.dag.nodes[action.node]
        args, kwargs = self._call(node)
        item = self._item(node.map_over, action.item)
        if node.map_param == POSITIONAL_ITEM:
            args = (item, *args)
        else:
            kwargs[node.map_param or "item"] = item
        return Kick(
            node.task_name,
            task_id(self.run, node.name, action.attempt, action.item, action.item_attempt),
            node.name,
            action.attempt,
            action.item,
            kwargs,
            (node.map_param or "item") if node.filter_items else None,
            args=args,
            item_attempt=action.item_attempt,
            timeout=node.timeout,
            final=node.final,
        )

    def _gather(self, action: Gather) -> None:
        """Record a fan-out step's output: the stored item outputs named by the core."""
        name = action.node
        fan = self.machine.fanouts[name]
        if action.of_source or len(action.items) != fan.total:
            self.kept[name] = list(action.items)
        self.lengths[name] = len(action.items)
        self.sizes[name] = self.item_bytes.pop(name, 0)

    def _call(self, node: DAGNode) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments of ``node``'s task (items aside)."""
        kwargs: dict[str, Any] = dict(node.args)
        args: tuple[Any, ...] = ()
        for name in node.inputs:
            if node.kind == "map" and name == node.map_over:
                continue
            if name == node.first_arg:
                args = (self._value(name),)
            else:
                kwargs[node.parameter_for(name)] = self._value(name)
        for name in node.optional_inputs:
            # An optional input with no value keeps the task's default.
            if self._has_value(name) or (name == RUN_DATA and node.final):
                kwargs[node.parameter_for(name)] = self._value(name)
        return args, kwargs

    def _has_value(self, name: str) -> bool:
        """Whether data ``name`` exists: a run input given, or an output produced."""
        producer = self.producers.get(name)
        return name in self.inputs if producer is None else self.machine.has_output(producer)

    def _value(self, name: str) -> Any:
        if name == RUN_DATA:
            return self.machine.run_data()
        producer = self.producers.get(name)
        if producer is None:
            return self.inputs.get(name, MISSING_INPUT)
        if not self.machine.has_output(producer):
            return MISSING_INPUT
        if self.dag.nodes[producer].kind == "map":
            kept = self.kept.get(producer)
            return p.items_ref(self.run, producer, self.lengths.get(producer, 0), kept)
        return p.output_ref(self.run, producer)

    def _item(self, over: str | None, index: int) -> Any:
        assert over is not None
        producer = self.producers.get(over)
        if producer is None:
            return self.inputs[over][index]
        if self.dag.nodes[producer].kind == "map":
            kept = self.kept.get(producer)
            stored = index if kept is None else kept[index]
            return {"$tfref": p.output_key(self.run, producer, stored)}
        return p.item_ref(self.run, producer, index)

    def _length_of(self, over: str | None) -> int:
        assert over is not None
        producer = self.producers.get(over)
        if producer is None:
            value = self.inputs.get(over)
            if not isinstance(value, list):
                raise MapSourceError(f"map over {over!r}: the input is not a list")
            return len(value)
        if producer not in self.lengths:
            raise MapSourceError(f"map over {over!r}: step {producer!r} did not return a list")
        return self.lengths[producer]


class MapSourceError(ValueError):
    """A map step's source is not a list."""
