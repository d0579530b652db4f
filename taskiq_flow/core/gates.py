"""What lets a step start: the outcomes of its dependencies, its ``when`` condition, and
the ``finally`` phase.

``Gates`` is the machine's half that decides, once a dependency is over, whether its
dependents wait on, run or are skipped (``dependsOn`` with ``on``, ``SkipFailed``), asks
the driver for the data a ``when`` condition reads and evaluates it, and begins the
``finally`` steps once every other step is over. A mixin like ``items.ItemRules``: it
shares the machine's state and calls back into its step rules.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

from taskiq_flow.core.actions import Action, Check, Finish, Skip
from taskiq_flow.core.conditions import ConditionError
from taskiq_flow.core.plan import Plan
from taskiq_flow.core.states import NodeState, Phase
from taskiq_flow.errors import ErrorHandlingMode

__all__ = ["Gates"]


class Gates(ABC):
    """The start rules of ``RunMachine`` (a mixin: see the module doc)."""

    plan: Plan
    nodes: dict[str, NodeState]
    outcome: Finish | None
    verdict: Finish | None
    deadline: float | None
    _waiting: dict[str, int]
    _ready: list[int]
    _to_check: deque[str]
    _checking: set[str]

    # -- the step rules these build on (``RunMachine``) ---------------------------------

    @abstractmethod
    def _after(self, now: float, actions: list[Action]) -> list[Action]: ...

    @abstractmethod
    def _settle(self, node: str, state: NodeState, phase: Phase, now: float) -> None: ...

    @abstractmethod
    def _fail_step(
        self, node: str, state: NodeState, error: str, now: float, actions: list[Action]
    ) -> None: ...

    @abstractmethod
    def _mode_of(self, node: str) -> ErrorHandlingMode: ...

    # -- inputs ---------------------------------------------------------------------------

    def checked(self, node: str, values: Mapping[str, Any], now: float) -> list[Action]:
        """Answer to ``Check``: the values of the data names it listed (an output whose
        producer did not produce it left out)."""
        if node not in self._checking or self.outcome is not None:
            return []
        self._checking.discard(node)
        actions: list[Action] = []
        self._decide(node, values, now, actions)
        return self._after(now, actions)

    # -- queries --------------------------------------------------------------------------

    def run_data(self) -> dict[str, Any] | None:
        """The reserved data ``run`` that ``finally`` steps may consume: the phase the run
        has without them, its message and its failed steps; None before they begin."""
        verdict = self.verdict
        if verdict is None:
            return None
        failed = [
            name
            for name, state in self.nodes.items()
            if state.phase is Phase.FAILED and not self.plan.nodes[name].final
        ]
        return {"phase": verdict.outcome.value, "message": verdict.reason, "failedSteps": failed}

    # -- internals ------------------------------------------------------------------------

    def _count_waiting(self, name: str, over: Collection[str] = ()) -> int:
        """How many of ``name``'s dependencies it still waits for, not counting those in
        ``over``; a ``finally`` step waits only for other ``finally`` steps."""
        step = self.plan.nodes[name]
        deps = set(step.deps)
        if over:
            deps.difference_update(over)
        if step.final:
            deps = {dep for dep in deps if self.plan.nodes[dep].final}
        return len(deps)

    def _accepts(self, dependent: str, node: str, phase: Phase) -> bool:
        wanted = self.plan.nodes[dependent].accepts.get(node)
        if wanted is not None:
            return phase in wanted
        # SkipFailed lets the consumers of a failed step run without its output.
        return phase is Phase.SUCCEEDED or (
            phase is Phase.FAILED and self._mode_of(node) is ErrorHandlingMode.SKIP_FAILED
        )

    def _awaited(self, node: str) -> bool:
        """Whether a regular step still pending waits for ``node`` to fail (``on:
        [Failed]``): then its failure does not end a FailFast run."""
        for dependent in self.plan.dependents[node]:
            step = self.plan.nodes[dependent]
            if step.final or self.nodes[dependent].phase is not Phase.PENDING:
                continue
            if Phase.FAILED in step.accepts.get(node, ()):
                return True
        return False

    def _release(self, node: str, phase: Phase, now: float, actions: list[Action]) -> None:
        """``node`` ended in ``phase``: its dependents wait for one fewer step, or are
        skipped, and so on down the graph (a loop, not recursion: chains are long)."""
        ended = [(node, phase)]
        while ended:
            done, outcome = ended.pop()
            regular = not self.plan.nodes[done].final
            for dependent in self.plan.dependents[done]:
                step = self.plan.nodes[dependent]
                state = self.nodes[dependent]
                if state.phase is not Phase.PENDING or (step.final and regular):
                    continue  # a finally step waits for the finally phase, not for one step
                if self._accepts(dependent, done, outcome):
                    self._waiting[dependent] -= 1
                    if self._waiting[dependent] == 0:
                        self._make_ready(dependent)
                    continue
                said = "was skipped" if outcome is Phase.SKIPPED else outcome.value.lower()
                self._skip(dependent, state, f"upstream step {done!r} {said}", now, actions)
                ended.append((dependent, Phase.SKIPPED))

    def _make_ready(self, name: str) -> None:
        """``name`` waits for nothing: it is checked, then started when there is room."""
        step = self.plan.nodes[name]
        if step.final and self.verdict is None:
            return  # it starts with the finally phase
        if step.when is not None and not self.nodes[name].cleared:
            self._to_check.append(name)
        else:
            heapq.heappush(self._ready, self.plan.index[name])

    def _skip(
        self, name: str, state: NodeState, reason: str, now: float, actions: list[Action]
    ) -> None:
        state.error = reason
        self._settle(name, state, Phase.SKIPPED, now)
        actions.append(Skip(name, reason))

    def _pump_checks(self, now: float, actions: list[Action]) -> None:
        while self._to_check and self.outcome is None:
            name = self._to_check.popleft()
            condition = self.plan.nodes[name].when
            assert condition is not None
            if self.nodes[name].phase is not Phase.PENDING or name in self._checking:
                continue
            if condition.data:
                self._checking.add(name)
                actions.append(Check(name, condition.data))
            else:
                self._decide(name, {}, now, actions)

    def _decide(
        self, name: str, values: Mapping[str, Any], now: float, actions: list[Action]
    ) -> None:
        state = self.nodes[name]
        condition = self.plan.nodes[name].when
        assert condition is not None
        phases = {step: self.nodes[step].phase.value for step in condition.steps}
        try:
            holds = condition.evaluate(values, phases)
        except ConditionError as exc:
            error = f"ConditionError: when {condition.source!r}: {exc}"
            self._fail_step(name, state, error, now, actions)
            return
        if holds:
            state.cleared = True
            heapq.heappush(self._ready, self.plan.index[name])
        else:
            self._skip(name, state, f"when {condition.source!r} is false", now, actions)
            self._release(name, Phase.SKIPPED, now, actions)

    def _begin_finally(self, verdict: Finish, actions: list[Action]) -> bool:
        """The regular steps are over and ``verdict`` is the run's outcome without the
        ``finally`` steps: start them (True), or end the run when there are none."""
        self.verdict = verdict
        self.deadline = None  # the run's timeout is spent; finally steps have their own
        finals = [name for name in self.plan.order if self.plan.nodes[name].final]
        if not finals:
            self.outcome = verdict
            actions.append(verdict)
            return False
        for name in finals:
            if self.nodes[name].phase is Phase.PENDING and self._waiting[name] == 0:
                self._make_ready(name)
        return True
