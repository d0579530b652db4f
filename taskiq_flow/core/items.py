"""How a ``RunMachine`` handles the items of fan-out (map and filter) steps.

``ItemRules`` is the machine's half that decides for items: the ``maxParallel`` window,
per-item retries and timeouts, what an item failure means under each error mode, what a
filter keeps, and what the step's output is once every item has its outcome. It shares
the machine's state and calls back into its step rules (declared here, defined there).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from taskiq_flow.core.actions import Action, DispatchItem, Fail, Gather, Retry
from taskiq_flow.core.fanout import (
    Fanout,
    ItemPhase,
    items_error,
    judge_item_failure,
    succeeded_item,
)
from taskiq_flow.core.plan import Plan
from taskiq_flow.core.states import NodeState, Phase, timeout_error
from taskiq_flow.errors import ErrorHandlingMode

__all__ = ["ItemRules"]


class ItemRules(ABC):
    """The item rules of ``RunMachine`` (a mixin: see the module doc)."""

    plan: Plan
    error_mode: ErrorHandlingMode
    admit_item: Callable[[], bool] | None
    nodes: dict[str, NodeState]
    fanouts: dict[str, Fanout]
    _rng: Callable[[], float]
    _spreading: list[int]
    _timers: list[tuple[float, int, str, int]]

    # -- the step rules these build on (``RunMachine``) ---------------------------------

    @abstractmethod
    def _current(self, node: str, attempt: int) -> NodeState | None: ...

    @abstractmethod
    def _after(self, now: float, actions: list[Action]) -> list[Action]: ...

    @abstractmethod
    def _settle(self, node: str, state: NodeState, phase: Phase, now: float) -> None: ...

    @abstractmethod
    def _release(self, node: str, phase: Phase, now: float, actions: list[Action]) -> None: ...

    @abstractmethod
    def _fail_step(
        self, node: str, state: NodeState, error: str, now: float, actions: list[Action]
    ) -> None: ...

    @abstractmethod
    def in_flight(self) -> int: ...

    @abstractmethod
    def has_room(self) -> bool: ...

    @abstractmethod
    def _mode_of(self, node: str) -> ErrorHandlingMode: ...

    # -- inputs ---------------------------------------------------------------------------

    def expand(self, node: str, attempt: int, total: int, now: float) -> list[Action]:
        """Answer to ``Expand``: the fan-out step's attempt has ``total`` items."""
        state = self._current(node, attempt)
        if state is None or (node in self.fanouts and self.fanouts[node].attempt == attempt):
            return []
        step = self.plan.nodes[node]
        fan = self.fanouts[node] = Fanout(attempt, total, step.max_parallel)
        actions: list[Action] = []
        if total == 0:
            self._complete_fanout(node, state, fan, now, actions)
        else:
            self._queue_items(node, fan)
        return self._after(now, actions)

    def item_succeeded(
        self, node: str, attempt: int, item: int, item_attempt: int, now: float, result: Any = True
    ) -> list[Action]:
        """Attempt ``item_attempt`` of item ``item`` returned ``result`` (only a filter step
        looks at it; a driver that cannot see it passes whether it was truthy)."""
        found = self._current_item(node, attempt, item, item_attempt)
        if found is None:
            return []
        state, fan = found
        fan.finish(item, succeeded_item(self.plan.nodes[node].filter_items, result))
        actions: list[Action] = []
        self._item_settled(node, state, fan, now, actions)
        return self._after(now, actions)

    def item_failed(
        self,
        node: str,
        attempt: int,
        item: int,
        item_attempt: int,
        error: str,
        now: float,
        *,
        retryable: bool | None = None,
    ) -> list[Action]:
        """Attempt ``item_attempt`` of item ``item`` failed with ``error``."""
        found = self._current_item(node, attempt, item, item_attempt)
        if found is None:
            return []
        state, fan = found
        actions: list[Action] = []
        self._fail_item(node, state, fan, item, error, now, retryable, actions)
        return self._after(now, actions)

    def item_current(self, node: str, attempt: int, item: int, item_attempt: int) -> bool:
        """Whether a result of ``item_attempt`` of ``item`` would be taken (not stale)."""
        return self._current_item(node, attempt, item, item_attempt) is not None

    # -- internals ------------------------------------------------------------------------

    def _item_timer_live(self, when: float, attempt: int, node: str, item: int) -> bool:
        fan = self.fanouts.get(node)
        return (
            fan is not None
            and self.nodes[node].phase is Phase.RUNNING
            and fan.timers.get(item) == when
            and fan.attempt_of(item) + (fan.phases[item] == ItemPhase.RETRYING) == attempt
        )

    def _current_item(
        self, node: str, attempt: int, item: int, item_attempt: int
    ) -> tuple[NodeState, Fanout] | None:
        state = self._current(node, attempt)
        fan = self.fanouts.get(node)
        if state is None or fan is None or fan.attempt != attempt:
            return None
        if not fan.is_current(item, item_attempt):
            return None
        return state, fan

    def _queue_items(self, node: str, fan: Fanout) -> None:
        # A step queued twice costs one extra pop: cheaper than tracking membership.
        if fan.startable():
            heapq.heappush(self._spreading, self.plan.index[node])

    def _pump_items(self, now: float, actions: list[Action]) -> None:
        while self._spreading:
            name = self.plan.order[self._spreading[0]]
            fan = self.fanouts[name]
            state = self.nodes[name]
            if state.phase is not Phase.RUNNING or fan.attempt != state.attempt:
                heapq.heappop(self._spreading)
                continue
            timeout = self.plan.nodes[name].timeout
            while fan.startable():
                if not self.has_room():
                    return
                # Like steps: admission may wait, but never while no task runs at all.
                if self.admit_item is not None and not self.admit_item() and self.in_flight():
                    return
                item, item_attempt = fan.take(now)
                if timeout is not None:
                    fan.timers[item] = now + timeout
                    heapq.heappush(self._timers, (now + timeout, item_attempt, name, item))
                actions.append(DispatchItem(name, fan.attempt, item, item_attempt))
            heapq.heappop(self._spreading)
            # A step whose window is full comes back when one of its items finishes.

    def _item_timer(
        self, node: str, item: int, attempt: int, when: float, now: float, actions: list[Action]
    ) -> None:
        if not self._item_timer_live(when, attempt, node, item):
            return
        fan = self.fanouts[node]
        state = self.nodes[node]
        if fan.phases[item] == ItemPhase.RETRYING:
            fan.retry_due(item)
            self._queue_items(node, fan)
            return
        limit = self.plan.nodes[node].timeout
        assert limit is not None
        self._fail_item(node, state, fan, item, timeout_error(limit), now, True, actions)

    def _fail_item(
        self,
        node: str,
        state: NodeState,
        fan: Fanout,
        item: int,
        error: str,
        now: float,
        retryable: bool | None,
        actions: list[Action],
    ) -> None:
        attempt = fan.attempt_of(item)
        policy = self.plan.nodes[node].retry
        verdict = judge_item_failure(
            policy,
            self._mode_of(node),
            attempt,
            fan.first_start(item),
            now,
            self._rng(),
            error,
            retryable,
        )
        if verdict.retry_at is not None:
            fan.wait_retry(item, verdict.retry_at)
            heapq.heappush(self._timers, (verdict.retry_at, attempt + 1, node, item))
            actions.append(Retry(node, attempt + 1, verdict.retry_at, error, item=item))
        else:
            fan.finish(item, ItemPhase.FAILED)
            fan.errors[item] = error
            actions.append(Fail(node, attempt, error, item=item))
            if verdict.fails_step:
                # The step fails at once; its other items are abandoned with the run.
                self._fail_step(node, state, _items_error(fan), now, actions)
                return
        self._item_settled(node, state, fan, now, actions)

    def _item_settled(
        self, node: str, state: NodeState, fan: Fanout, now: float, actions: list[Action]
    ) -> None:
        if fan.complete:
            self._complete_fanout(node, state, fan, now, actions)
        else:
            self._queue_items(node, fan)  # its window may have room again

    def _complete_fanout(
        self, node: str, state: NodeState, fan: Fanout, now: float, actions: list[Action]
    ) -> None:
        # Under ContinueOnError a step with failed items still keeps the good ones' results
        # (its consumers are skipped); under SkipFailed the failed items are left out.
        step = self.plan.nodes[node]
        actions.append(Gather(node, fan.attempt, tuple(fan.kept()), step.filter_items))
        if fan.failed and self._mode_of(node) is not ErrorHandlingMode.SKIP_FAILED:
            self._fail_step(node, state, _items_error(fan), now, actions)
            return
        self._settle(node, state, Phase.SUCCEEDED, now)
        self._release(node, Phase.SUCCEEDED, now, actions)


def _items_error(fan: Fanout) -> str:
    first = fan.first_error()
    assert first is not None
    return items_error(fan.failed, fan.total, *first)
