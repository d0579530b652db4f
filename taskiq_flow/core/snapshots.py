"""A ``RunMachine`` as plain data and back, for a driver that must survive a restart.

``Persistence`` is the machine's half that saves and loads its state (a mixin, like
``items.ItemRules``): it shares the machine's fields, declared here.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import Any

from taskiq_flow.core.actions import Finish
from taskiq_flow.core.fanout import Fanout, ItemPhase
from taskiq_flow.core.plan import Plan
from taskiq_flow.core.states import STEP, TERMINAL, NodeState, Phase, RunOutcome

__all__ = ["Persistence"]


class Persistence(ABC):
    """``snapshot()`` and ``restore()`` of ``RunMachine`` (a mixin: see the module doc)."""

    plan: Plan
    nodes: dict[str, NodeState]
    fanouts: dict[str, Fanout]
    running: set[str]
    started_at: float | None
    deadline: float | None
    outcome: Finish | None
    verdict: Finish | None
    timed_out: bool
    _waiting: dict[str, int]
    _ready: list[int]
    _timers: list[tuple[float, int, str, int]]
    _terminal: int
    _regular_left: int

    @abstractmethod
    def _count_waiting(self, name: str, over: Collection[str] = ()) -> int: ...

    @abstractmethod
    def _make_ready(self, name: str) -> None: ...

    @abstractmethod
    def _queue_items(self, node: str, fan: Fanout) -> None: ...

    def snapshot(self) -> dict[str, Any]:
        """The machine's state as plain data, for a driver that must survive a restart."""
        return _snapshot(self)

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a ``snapshot()`` into a fresh machine of the same plan; attempts in flight
        stay in flight (their results will come) and their timers are set again."""
        _restore(self, data)


def _finish_data(finish: Finish | None) -> dict[str, Any] | None:
    if finish is None:
        return None
    return {
        "outcome": finish.outcome.value,
        "reason": finish.reason,
        "failedNode": finish.failed_node,
    }


def _finish_of(data: Mapping[str, Any] | None) -> Finish | None:
    if data is None:
        return None
    return Finish(RunOutcome(data["outcome"]), data["reason"], data["failedNode"])


def _snapshot(machine: Persistence) -> dict[str, Any]:
    return {
        "startedAt": machine.started_at,
        "deadline": machine.deadline,
        "timedOut": machine.timed_out,
        "outcome": _finish_data(machine.outcome),
        "verdict": _finish_data(machine.verdict),
        "nodes": {
            name: {
                "phase": s.phase.value,
                "attempt": s.attempt,
                "firstStarted": s.first_started,
                "started": s.started,
                "finished": s.finished,
                "retryAt": s.retry_at,
                "deadline": s.deadline,
                "error": s.error,
                "cleared": s.cleared,
            }
            for name, s in machine.nodes.items()
        },
        "fanouts": {name: fan.snapshot() for name, fan in machine.fanouts.items()},
    }


def _restore(machine: Persistence, data: Mapping[str, Any]) -> None:
    machine.started_at = data.get("startedAt")
    machine.deadline = data.get("deadline")
    machine.timed_out = bool(data.get("timedOut", False))
    machine.outcome = _finish_of(data.get("outcome"))
    machine.verdict = _finish_of(data.get("verdict"))
    machine.fanouts = {
        name: Fanout.restore(fan) for name, fan in (data.get("fanouts") or {}).items()
    }
    ended: set[str] = set()
    for name, saved in data["nodes"].items():
        state = machine.nodes[name]
        state.phase = Phase(saved["phase"])
        state.attempt = saved["attempt"]
        state.first_started = saved.get("firstStarted")
        state.started = saved.get("started")
        state.finished = saved.get("finished")
        state.retry_at = saved.get("retryAt")
        state.deadline = saved.get("deadline")
        state.error = saved.get("error")
        state.cleared = bool(saved.get("cleared", False))
        if state.phase in TERMINAL:
            ended.add(name)
            machine._terminal += 1
            if not machine.plan.nodes[name].final:
                machine._regular_left -= 1
        if state.phase is Phase.RUNNING:
            machine.running.add(name)
            if state.deadline is not None:
                heapq.heappush(machine._timers, (state.deadline, state.attempt, name, STEP))
            fan = machine.fanouts.get(name)
            if fan is not None and fan.attempt == state.attempt:
                _restore_items(machine, name, fan)
        elif state.phase is Phase.RETRYING and state.retry_at is not None:
            heapq.heappush(machine._timers, (state.retry_at, state.attempt + 1, name, STEP))
    # A pending step waits for its dependencies still going: one that ended in an outcome
    # it does not accept would have skipped it already.
    for name in machine.plan.order:
        machine._waiting[name] = machine._count_waiting(name, over=ended)
        if machine._waiting[name] == 0 and machine.nodes[name].phase is Phase.PENDING:
            machine._make_ready(name)


def _restore_items(machine: Persistence, name: str, fan: Fanout) -> None:
    for item, when in fan.timers.items():
        retrying = fan.phases[item] == ItemPhase.RETRYING
        attempt = fan.attempt_of(item) + (1 if retrying else 0)
        heapq.heappush(machine._timers, (when, attempt, name, item))
    machine._queue_items(name, fan)
