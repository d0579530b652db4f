"""A ``RunMachine`` as plain data and back, for a driver that must survive a restart.

``Persistence`` is the machine's half that saves and loads its state (a mixin, like
``items.ItemRules``): it shares the machine's fields, declared here.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Mapping
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
    timed_out: bool
    _waiting: dict[str, int]
    _ready: list[int]
    _timers: list[tuple[float, int, str, int]]
    _terminal: int

    @abstractmethod
    def _releases(self, node: str, phase: Phase) -> bool: ...

    @abstractmethod
    def _queue_items(self, node: str, fan: Fanout) -> None: ...

    def snapshot(self) -> dict[str, Any]:
        """The machine's state as plain data, for a driver that must survive a restart."""
        return _snapshot(self)

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load a ``snapshot()`` into a fresh machine of the same plan; attempts in flight
        stay in flight (their results will come) and their timers are set again."""
        _restore(self, data)


def _snapshot(machine: Persistence) -> dict[str, Any]:
    outcome = machine.outcome
    return {
        "startedAt": machine.started_at,
        "deadline": machine.deadline,
        "timedOut": machine.timed_out,
        "outcome": None
        if outcome is None
        else {
            "outcome": outcome.outcome.value,
            "reason": outcome.reason,
            "failedNode": outcome.failed_node,
        },
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
            }
            for name, s in machine.nodes.items()
        },
        "fanouts": {name: fan.snapshot() for name, fan in machine.fanouts.items()},
    }


def _restore(machine: Persistence, data: Mapping[str, Any]) -> None:
    machine.started_at = data.get("startedAt")
    machine.deadline = data.get("deadline")
    machine.timed_out = bool(data.get("timedOut", False))
    done = data.get("outcome")
    if done is not None:
        machine.outcome = Finish(RunOutcome(done["outcome"]), done["reason"], done["failedNode"])
    machine.fanouts = {
        name: Fanout.restore(fan) for name, fan in (data.get("fanouts") or {}).items()
    }
    released: set[str] = set()
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
        if state.phase in TERMINAL:
            machine._terminal += 1
        if machine._releases(name, state.phase):
            released.add(name)
        if state.phase is Phase.RUNNING:
            machine.running.add(name)
            if state.deadline is not None:
                heapq.heappush(machine._timers, (state.deadline, state.attempt, name, STEP))
            fan = machine.fanouts.get(name)
            if fan is not None and fan.attempt == state.attempt:
                _restore_items(machine, name, fan)
        elif state.phase is Phase.RETRYING and state.retry_at is not None:
            heapq.heappush(machine._timers, (state.retry_at, state.attempt + 1, name, STEP))
    for name in machine.plan.order:
        machine._waiting[name] = len({d for d in machine.plan.deps(name) if d not in released})
        if machine._waiting[name] == 0 and machine.nodes[name].phase is Phase.PENDING:
            heapq.heappush(machine._ready, machine.plan.index[name])


def _restore_items(machine: Persistence, name: str, fan: Fanout) -> None:
    for item, when in fan.timers.items():
        retrying = fan.phases[item] == ItemPhase.RETRYING
        attempt = fan.attempt_of(item) + (1 if retrying else 0)
        heapq.heappush(machine._timers, (when, attempt, name, item))
    machine._queue_items(name, fan)
