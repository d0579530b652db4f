"""``RunDriver``: one PipelineRun on the scheduling core, without any I/O.

The driver owns a ``RunMachine`` (the same core the library's engine drives) and adds
what only the cluster data path needs: map and filter steps fanned out into one message
per item, keyword arguments as Redis references, and step events in, kicks and notes out.
A filter step is a map step whose workers store the item itself, for the items its task
kept: its output is those items, in order (as ``taskiq-flow run`` computes it). The
supervisor (``supervising``) carries out what it returns and persists ``snapshot()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskiq_flow.core import Cancel, Dispatch, Fail, Finish, Retry, RunMachine, Skip
from taskiq_flow.core.actions import Action
from taskiq_flow.core.states import Phase, RunOutcome
from taskiq_flow.dataflow.dag import DAGNode
from taskiq_flow.manifests.compiler import CompiledPipeline, RunSettings
from taskiq_flow_worker import protocol as p

__all__ = ["Kick", "MapState", "Note", "RunDriver", "Step"]


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


@dataclass(frozen=True, slots=True)
class Note:
    """A Kubernetes Event to post about the run."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(slots=True)
class MapState:
    """The items of the current attempt of a map (or filter) step."""

    attempt: int
    total: int
    next: int = 0
    done: set[int] = field(default_factory=set)
    failed: int = 0
    size: int = 0
    kept: set[int] = field(default_factory=set)  # a filter step: the items kept

    @property
    def running(self) -> int:
        """Items sent and not finished."""
        return self.next - len(self.done) - self.failed


@dataclass(slots=True)
class Step:
    """What a batch of input did: messages to send, Events to post."""

    kicks: list[Kick] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    finished: Finish | None = None


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
        self.machine = RunMachine(
            self.dag.plan,
            error_mode=settings.error_mode,
            max_in_flight=settings.parallelism,
            timeout=settings.timeout,
        )
        self.producers: dict[str, str] = {
            output: node.name for node in self.dag.nodes.values() for output in node.outputs
        }
        self.maps: dict[str, MapState] = {}
        self.lengths: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        # A finished filter step: the indices of the items it kept, in order.
        self.kept: dict[str, list[int]] = {}

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
        state = self.machine.nodes.get(event.step)
        if state is None or state.phase is not Phase.RUNNING or state.attempt != event.attempt:
            return step
        if event.item is None:
            if event.ok:
                if event.length is not None:
                    self.lengths[event.step] = event.length
                self.sizes[event.step] = event.size or 0
                actions = self.machine.succeeded(event.step, event.attempt, now)
            else:
                error = event.error or "the step failed"
                actions = self.machine.failed(event.step, event.attempt, error, now)
            self._apply(actions, now, step)
            return step
        items = self.maps.get(event.step)
        if items is None or items.attempt != event.attempt or event.item in items.done:
            return step
        if not event.ok:
            items.failed += 1
            error = f"item {event.item}: {event.error or 'failed'}"
            self._apply(self.machine.failed(event.step, event.attempt, error, now), now, step)
            return step
        items.done.add(event.item)
        node = self.dag.nodes[event.step]
        if not node.filter_items:
            items.size += event.size or 0
        elif event.keep:  # a filter step's output holds the kept items only
            items.kept.add(event.item)
            items.size += event.size or 0
        if len(items.done) == items.total:
            self._reduce(node, items)
            self._apply(self.machine.succeeded(event.step, event.attempt, now), now, step)
        else:
            self._kick_items(node, items, step)
        return step

    def tick(self, now: float) -> Step:
        """Time passed: due retries, step and run timeouts."""
        step = Step()
        self._apply(self.machine.tick(now), now, step)
        return step

    def cancel(self, now: float) -> Step:
        """``spec.cancel`` was set: nothing more is sent, the run ends Cancelled."""
        step = Step()
        self._apply(self.machine.cancel(now, "the run was cancelled (spec.cancel)"), now, step)
        return step

    # -- queries -------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run is over."""
        return self.machine.finished

    def in_flight(self) -> int:
        """Messages sent and not finished (items count one each): what workers must do."""
        count = 0
        for name in self.machine.running:
            items = self.maps.get(name)
            count += items.running if items is not None else 1
        return count

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do."""
        return self.machine.next_deadline()

    def item_indices(self, name: str) -> list[int]:
        """The items of a finished map (or filter) step's output, by their stored index."""
        kept = self.kept.get(name)
        return list(kept) if kept is not None else list(range(self.lengths.get(name, 0)))

    # -- persistence ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue after a restart, as plain data."""
        return {
            "machine": self.machine.snapshot(),
            "maps": {
                name: {
                    "attempt": m.attempt,
                    "total": m.total,
                    "next": m.next,
                    "done": sorted(m.done),
                    "failed": m.failed,
                    "size": m.size,
                    "kept": sorted(m.kept),
                }
                for name, m in self.maps.items()
            },
            "lengths": self.lengths,
            "sizes": self.sizes,
            "kept": self.kept,
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Continue from a ``snapshot()``."""
        self.machine.restore(snapshot["machine"])
        self.maps = {
            name: MapState(
                attempt=m["attempt"],
                total=m["total"],
                next=m["next"],
                done=set(m["done"]),
                failed=m["failed"],
                size=m["size"],
                kept=set(m.get("kept", ())),
            )
            for name, m in snapshot.get("maps", {}).items()
        }
        self.lengths = dict(snapshot.get("lengths", {}))
        self.sizes = dict(snapshot.get("sizes", {}))
        self.kept = {name: list(kept) for name, kept in snapshot.get("kept", {}).items()}

    # -- internals -----------------------------------------------------------------------

    def _apply(self, actions: list[Action], now: float, step: Step) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Dispatch):
                queue.extend(self._dispatch(action, now, step))
            elif isinstance(action, Retry):
                step.notes.append(
                    Note(
                        "Warning",
                        "Retrying",
                        f"step {action.node!r} failed ({action.error}); attempt "
                        f"{action.attempt} in {max(action.at - now, 0):.1f}s",
                    )
                )
            elif isinstance(action, Fail):
                step.notes.append(
                    Note(
                        "Warning",
                        "StepFailed",
                        f"step {action.node!r} failed after {action.attempt} attempt(s): "
                        f"{action.error}",
                    )
                )
            elif isinstance(action, Cancel):
                self.maps.pop(action.node, None)
            elif isinstance(action, Skip):
                continue
            elif isinstance(action, Finish):
                step.finished = action
                reason = {
                    RunOutcome.SUCCEEDED: "Succeeded",
                    RunOutcome.FAILED: "Failed",
                    RunOutcome.CANCELLED: "Cancelled",
                }[action.outcome]
                kind = "Normal" if action.outcome is RunOutcome.SUCCEEDED else "Warning"
                step.notes.append(Note(kind, reason, f"run {reason.lower()}: {action.reason}"))

    def _dispatch(self, action: Dispatch, now: float, step: Step) -> list[Action]:
        node = self.dag.nodes[action.node]
        if node.kind != "map":
            step.kicks.append(
                Kick(
                    node.task_name,
                    p.task_id(self.run, node.name, action.attempt),
                    node.name,
                    action.attempt,
                    None,
                    self._kwargs(node),
                )
            )
            return []
        try:
            total = self._length_of(node.map_over)
        except MapSourceError as exc:
            return self.machine.failed(node.name, action.attempt, str(exc), now, retryable=False)
        items = self.maps[node.name] = MapState(action.attempt, total)
        if total == 0:
            self._reduce(node, items)
            self.sizes[node.name] = 2
            return self.machine.succeeded(node.name, action.attempt, now)
        self._kick_items(node, items, step)
        return []

    def _reduce(self, node: DAGNode, items: MapState) -> None:
        """Every item succeeded: record the step's output (a map's results, in order, or
        the items a filter kept, in order)."""
        if node.filter_items:
            kept = self.kept[node.name] = sorted(items.kept)
            self.lengths[node.name] = len(kept)
        else:
            self.lengths[node.name] = items.total
        self.sizes[node.name] = items.size

    def _kick_items(self, node: DAGNode, items: MapState, step: Step) -> None:
        limit = node.max_parallel or items.total
        base = self._kwargs(node)
        param = node.map_param or "item"
        keep = param if node.filter_items else None
        while items.next < items.total and items.running < limit:
            index = items.next
            items.next += 1
            kwargs = dict(base)
            kwargs[param] = self._item(node.map_over, index)
            step.kicks.append(
                Kick(
                    node.task_name,
                    p.task_id(self.run, node.name, items.attempt, index),
                    node.name,
                    items.attempt,
                    index,
                    kwargs,
                    keep,
                )
            )

    def _kwargs(self, node: DAGNode) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(node.args)
        for name in node.inputs:
            if node.kind == "map" and name == node.map_over:
                continue
            value = self._value(name)
            if value is not _MISSING:
                kwargs[node.parameter_for(name)] = value
        for name in node.optional_inputs:
            value = self._value(name)
            if value is not _MISSING:
                kwargs[node.parameter_for(name)] = value
        return kwargs

    def _value(self, name: str) -> Any:
        producer = self.producers.get(name)
        if producer is None:
            return self.inputs.get(name, _MISSING)
        if self.machine.nodes[producer].phase is not Phase.SUCCEEDED:
            return _MISSING  # SkipFailed: the consumer runs without it
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


_MISSING: Any = object()
