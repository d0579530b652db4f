"""The run state machine. Pure: time comes in as ``now``, randomness as ``rng``."""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Collection

from taskiq_flow.core.actions import Action, Cancel, Dispatch, Expand, Fail, Finish, Retry
from taskiq_flow.core.fanout import Fanout
from taskiq_flow.core.gates import Gates
from taskiq_flow.core.items import ItemRules
from taskiq_flow.core.plan import Plan
from taskiq_flow.core.retry import retry_time
from taskiq_flow.core.snapshots import Persistence
from taskiq_flow.core.states import (
    MISSING_INPUT,
    STEP,
    TERMINAL,
    NodeState,
    Phase,
    RunOutcome,
    timeout_error,
)
from taskiq_flow.errors import ErrorHandlingMode

# NodeState, MISSING_INPUT and timeout_error live in ``states`` and are re-exported here,
# where drivers met them first.
__all__ = ["MISSING_INPUT", "NodeState", "RunMachine", "timeout_error"]

Admit = Callable[[str, Collection[str]], bool]
"""``admit(step, running)``: may ``step`` start while ``running`` are in flight?"""


class RunMachine(Gates, ItemRules, Persistence):
    """Decides, for one run of a plan, what to dispatch, retry, skip or cancel.

    Drivers call ``start(now)`` once, then ``succeeded``/``failed`` as results arrive and
    ``tick(now)`` when ``next_deadline()`` has passed; each returns the actions to carry
    out, in order. A fan-out step asks for its item count (``Expand``, answered with
    ``expand``) and then dispatches items (``DispatchItem``), whose results come back
    through ``item_succeeded``/``item_failed``. A step with a ``when`` condition that reads
    data asks for it (``Check``, answered with ``checked``). Events for an attempt that is no longer
    current (a late result of a timed-out or cancelled attempt, a redelivered message)
    are ignored, which is what makes at-least-once delivery safe.

    ``max_in_flight`` bounds the tasks in flight: plain steps and the items of fan-out
    steps alike (a run's ``parallelism``, as Argo counts it); a fan-out step's
    ``max_parallel`` also bounds its own items.

    Once every regular step is over (or the run failed fast, was cancelled or timed out)
    the run's outcome so far is the ``verdict`` and the ``finally`` steps start; the run
    ends when they are over too.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        error_mode: ErrorHandlingMode | str = ErrorHandlingMode.FAIL_FAST,
        max_in_flight: int | None = None,
        timeout: float | None = None,
        admit: Admit | None = None,
        admit_item: Callable[[], bool] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self.plan = plan
        self.error_mode = ErrorHandlingMode.parse(error_mode)
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.admit = admit
        self.admit_item = admit_item
        self._rng = rng
        self.nodes: dict[str, NodeState] = {name: NodeState() for name in plan.order}
        self.fanouts: dict[str, Fanout] = {}
        self.running: set[str] = set()
        self.started_at: float | None = None
        self.deadline: float | None = None
        self.outcome: Finish | None = None
        self.verdict: Finish | None = None  # the outcome of the regular steps
        self.timed_out = False
        self._waiting = {name: self._count_waiting(name) for name in plan.order}
        self._regular_left = sum(not plan.nodes[name].final for name in plan.order)
        self._ready: list[int] = []  # heap of plan indexes: earliest in plan order first
        self._to_check: deque[str] = deque()  # ready steps whose ``when`` is to be decided
        self._checking: set[str] = set()  # steps whose ``Check`` the driver has not answered
        self._spreading: list[int] = []  # heap of plan indexes of fan-outs with items to start
        # (when, attempt, node, item or STEP), lazily pruned
        self._timers: list[tuple[float, int, str, int]] = []
        self._terminal = 0

    # -- inputs ------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin the run: dispatch the steps that depend on nothing."""
        if self.started_at is not None:
            return []
        self.started_at = now
        if self.timeout is not None:
            self.deadline = now + self.timeout
        for name, count in self._waiting.items():
            if count == 0:
                self._make_ready(name)
        return self._after(now, [])

    def succeeded(self, node: str, attempt: int, now: float) -> list[Action]:
        """Attempt ``attempt`` of ``node`` produced its result."""
        state = self._current(node, attempt)
        if state is None:
            return []
        actions: list[Action] = []
        self._settle(node, state, Phase.SUCCEEDED, now)
        self._release(node, Phase.SUCCEEDED, now, actions)
        return self._after(now, actions)

    def failed(
        self, node: str, attempt: int, error: str, now: float, *, retryable: bool | None = None
    ) -> list[Action]:
        """Attempt ``attempt`` of ``node`` failed with ``error``; ``retryable=False`` when
        no retry could help (the driver found its input invalid)."""
        state = self._current(node, attempt)
        if state is None:
            return []
        actions: list[Action] = []
        self._fail_attempt(node, state, error, now, retryable, actions)
        return self._after(now, actions)

    def tick(self, now: float) -> list[Action]:
        """Time passed: start due retries, time out attempts, end an overdue run."""
        if self.outcome is not None or self.started_at is None:
            return []
        actions: list[Action] = []
        if self.deadline is not None and now >= self.deadline:
            self.timed_out = True
            self._abort(
                RunOutcome.FAILED,
                f"the run exceeded its timeout of {self.timeout:g}s",
                now,
                actions,
            )
            return self._after(now, actions)
        while self._timers and self._timers[0][0] <= now and self.outcome is None:
            when, attempt, node, item = heapq.heappop(self._timers)
            if item == STEP:
                self._step_timer(node, attempt, now, actions)
            else:
                self._item_timer(node, item, attempt, when, now, actions)
        return self._after(now, actions)

    def cancel(self, now: float, reason: str = "the run was cancelled") -> list[Action]:
        """Stop the run: no regular step is dispatched any more and the run ends Cancelled
        once its ``finally`` steps (which a cancel does not stop) are over."""
        if self.verdict is not None or self.started_at is None:
            return []
        actions: list[Action] = []
        self._abort(RunOutcome.CANCELLED, reason, now, actions)
        return self._after(now, actions)

    def refresh(self, now: float) -> list[Action]:
        """Re-check admission (``admit``'s answer may have changed) and dispatch."""
        if self.outcome is not None or self.started_at is None:
            return []
        actions: list[Action] = []
        self._pump(now, actions)
        return actions

    # -- queries -----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run is over."""
        return self.outcome is not None

    def next_deadline(self) -> float | None:
        """The earliest time at which ``tick`` has something to do."""
        if self.outcome is not None:
            return None
        while self._timers and not self._timer_live(*self._timers[0]):
            heapq.heappop(self._timers)
        candidates = [t for t in (self.deadline,) if t is not None]
        if self._timers:
            candidates.append(self._timers[0][0])
        return min(candidates, default=None)

    def counts(self) -> dict[Phase, int]:
        """How many steps are in each phase."""
        result = dict.fromkeys(Phase, 0)
        for state in self.nodes.values():
            result[state.phase] += 1
        return result

    def progress(self) -> tuple[int, int]:
        """(finished steps, all steps)."""
        return self._terminal, len(self.nodes)

    def in_flight(self) -> int:
        """Tasks sent and not finished: steps, and items of fan-out steps one each."""
        count = 0
        for name in self.running:
            fan = self.fanouts.get(name)
            count += 1 if fan is None else fan.running
        return count

    def step_current(self, node: str, attempt: int) -> bool:
        """Whether a result of ``attempt`` of ``node`` would be taken (not stale)."""
        return self._current(node, attempt) is not None

    def has_output(self, node: str) -> bool:
        """Whether ``node``'s output exists: it succeeded, or it is a fan-out step whose
        items all have their outcome (``ContinueOnError`` keeps the good items' results
        of a step that failed)."""
        if self.nodes[node].phase is Phase.SUCCEEDED:
            return True
        fan = self.fanouts.get(node)
        return fan is not None and fan.complete

    # -- internals: steps --------------------------------------------------------------

    def _after(self, now: float, actions: list[Action]) -> list[Action]:
        self._pump(now, actions)
        while self._maybe_finish(actions):  # the finally steps began
            self._pump(now, actions)
        return actions

    def _current(self, node: str, attempt: int) -> NodeState | None:
        if self.outcome is not None:
            return None
        state = self.nodes.get(node)
        if state is None or state.phase is not Phase.RUNNING or state.attempt != attempt:
            return None
        return state

    def _timer_live(self, when: float, attempt: int, node: str, item: int) -> bool:
        if item != STEP:
            return self._item_timer_live(when, attempt, node, item)
        state = self.nodes[node]
        if state.phase is Phase.RETRYING:
            return state.attempt == attempt - 1 and state.retry_at == when
        return state.phase is Phase.RUNNING and state.attempt == attempt and state.deadline == when

    def _step_timer(self, node: str, attempt: int, now: float, actions: list[Action]) -> None:
        state = self.nodes[node]
        if state.phase is Phase.RETRYING and state.attempt == attempt - 1:
            state.phase = Phase.PENDING
            state.retry_at = None
            heapq.heappush(self._ready, self.plan.index[node])
        elif state.phase is Phase.RUNNING and state.attempt == attempt:
            limit = self.plan.nodes[node].timeout
            assert limit is not None
            self._fail_attempt(node, state, timeout_error(limit), now, True, actions)

    def _mode_of(self, node: str) -> ErrorHandlingMode:
        """The error mode for ``node``'s failure: the run's, unless the step continues on
        failure or is a ``finally`` step (then as under ``CONTINUE_ON_ERROR``: the other
        steps go on; only a ``finally`` step's failure still fails the run)."""
        step = self.plan.nodes[node]
        if step.continue_on_failure or step.final:
            return ErrorHandlingMode.CONTINUE_ON_ERROR
        return self.error_mode

    def _settle(self, node: str, state: NodeState, phase: Phase, now: float) -> None:
        if state.phase is Phase.RUNNING:
            self.running.discard(node)
        state.phase = phase
        state.finished = now
        state.deadline = None
        state.retry_at = None
        self._terminal += 1
        if not self.plan.nodes[node].final:
            self._regular_left -= 1

    def _fail_attempt(
        self,
        node: str,
        state: NodeState,
        error: str,
        now: float,
        retryable: bool | None,
        actions: list[Action],
    ) -> None:
        # ``retryable``: None lets the core classify the error (``retry.is_retryable``).
        state.error = error
        policy = self.plan.nodes[node].retry
        assert state.first_started is not None
        retry_at = retry_time(
            policy, state.attempt, state.first_started, now, self._rng(), error, retryable
        )
        if retry_at is not None:
            self.running.discard(node)
            state.phase = Phase.RETRYING
            state.deadline = None
            state.retry_at = retry_at
            heapq.heappush(self._timers, (retry_at, state.attempt + 1, node, STEP))
            actions.append(Retry(node, state.attempt + 1, retry_at, error))
            return
        self._fail_step(node, state, error, now, actions)

    def _fail_step(
        self, node: str, state: NodeState, error: str, now: float, actions: list[Action]
    ) -> None:
        state.error = error
        self._settle(node, state, Phase.FAILED, now)
        actions.append(Fail(node, state.attempt, error))
        if self._mode_of(node) is ErrorHandlingMode.FAIL_FAST and not self._awaited(node):
            self._abort(
                RunOutcome.FAILED, f"step {node!r} failed: {error}", now, actions, failed_node=node
            )
        else:
            self._release(node, Phase.FAILED, now, actions)

    def _abort(
        self,
        outcome: RunOutcome,
        reason: str,
        now: float,
        actions: list[Action],
        failed_node: str | None = None,
    ) -> None:
        for name in self.plan.order:
            state = self.nodes[name]
            if state.phase in TERMINAL or self.plan.nodes[name].final:
                continue
            was_running = state.phase is Phase.RUNNING
            self._settle(name, state, Phase.CANCELLED, now)
            actions.append(Cancel(name, reason, was_running))
        self._ready.clear()
        self._spreading.clear()
        self._timers.clear()
        self._to_check.clear()
        self._checking.clear()
        self._begin_finally(Finish(outcome, reason, failed_node), actions)

    def _pump(self, now: float, actions: list[Action]) -> None:
        if self.outcome is not None:
            return
        self._pump_checks(now, actions)
        self._pump_steps(now, actions)
        self._pump_items(now, actions)

    def has_room(self) -> bool:
        """Whether one more task may start under ``max_in_flight``."""
        return self.max_in_flight is None or self.in_flight() < self.max_in_flight

    def _pump_steps(self, now: float, actions: list[Action]) -> None:
        while self._ready:
            # A fan-out step waits for room too: it starts an item as soon as it expands.
            if not self.has_room():
                return
            name = self.plan.order[self._ready[0]]
            state = self.nodes[name]
            if state.phase is not Phase.PENDING:
                heapq.heappop(self._ready)
                continue
            # Admission may say no, but never when nothing runs: that would stall the run.
            if self.admit is not None and self.running and not self.admit(name, self.running):
                return
            heapq.heappop(self._ready)
            state.phase = Phase.RUNNING
            state.attempt += 1
            state.started = now
            if state.first_started is None:
                state.first_started = now
            self.running.add(name)
            step = self.plan.nodes[name]
            if step.fan_out:
                # Its timeout applies to each item; the step waits for its item count.
                actions.append(Expand(name, state.attempt))
                continue
            state.deadline = None if step.timeout is None else now + step.timeout
            if state.deadline is not None:
                heapq.heappush(self._timers, (state.deadline, state.attempt, name, STEP))
            actions.append(Dispatch(name, state.attempt))

    def _maybe_finish(self, actions: list[Action]) -> bool:
        """End the regular steps' part of the run or the whole run, if it is time; True
        when ``finally`` steps just began."""
        if self.outcome is not None:
            return False
        if self.verdict is None:
            if self._regular_left > 0:
                return False
            return self._begin_finally(self._regular_verdict(), actions)
        if self._terminal < len(self.nodes):
            return False
        verdict = self.verdict
        failed = self._failed(final=True)
        if failed and verdict.outcome is RunOutcome.SUCCEEDED:
            verdict = Finish(
                RunOutcome.FAILED,
                f"{len(failed)} finally step(s) failed: {', '.join(failed)}",
                failed[0],
            )
        self.outcome = verdict
        actions.append(verdict)
        return False

    def _regular_verdict(self) -> Finish:
        failed = self._failed(final=False)
        if failed and self.error_mode is not ErrorHandlingMode.SKIP_FAILED:
            return Finish(
                RunOutcome.FAILED, f"{len(failed)} step(s) failed: {', '.join(failed)}", failed[0]
            )
        return Finish(RunOutcome.SUCCEEDED, "all steps finished")

    def _failed(self, *, final: bool) -> list[str]:
        """The failed regular (or ``finally``) steps that fail the run."""
        return [
            name
            for name, state in self.nodes.items()
            if state.phase is Phase.FAILED
            and self.plan.nodes[name].final is final
            and not self.plan.nodes[name].continue_on_failure
        ]
