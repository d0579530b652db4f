"""Property tests of the run state machine: random DAGs driven by a simulated driver.

The ``Driver`` below plays the part of a real driver (the engine, the operator): it keeps
the attempts it has in flight, and at each step lets hypothesis choose one of them to
succeed or fail, or moves the clock to ``next_deadline()`` and ticks. While it carries out
the actions the machine returns it checks the invariants every driver relies on.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    RetryPolicy,
    RunMachine,
    RunOutcome,
    Skip,
)
from taskiq_flow.core.states import TERMINAL
from taskiq_flow.errors import ErrorHandlingMode

FAIL_FAST = ErrorHandlingMode.FAIL_FAST
CONTINUE_ON_ERROR = ErrorHandlingMode.CONTINUE_ON_ERROR
SKIP_FAILED = ErrorHandlingMode.SKIP_FAILED

MAX_STEPS = 3000
EPS = 1e-9

property_settings = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Scenario:
    """A random plan and the knobs of one run of it."""

    specs: tuple[NodeSpec, ...]
    max_in_flight: int | None
    timeout: float | None
    heavy: frozenset[str]  # steps that ``admit`` lets start only when nothing runs
    seed: int

    @property
    def deps(self) -> dict[str, tuple[str, ...]]:
        return {spec.name: spec.deps for spec in self.specs}

    def ancestors(self, name: str) -> set[str]:
        deps = self.deps
        seen: set[str] = set()
        stack = list(deps[name])
        while stack:
            dep = stack.pop()
            if dep not in seen:
                seen.add(dep)
                stack.extend(deps[dep])
        return seen


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    step_timeouts: bool = True,
    run_timeout: bool = False,
    admission: bool = False,
    max_nodes: int = 25,
) -> Scenario:
    """A DAG of 1-``max_nodes`` steps: step i depends on a random subset of steps < i."""
    count = draw(st.integers(1, max_nodes))
    specs = []
    for i in range(count):
        deps = sorted(draw(st.sets(st.integers(0, i - 1)))) if i else []
        policy = RetryPolicy(
            retries=draw(st.integers(0, 3)),
            delay=draw(st.sampled_from([0.0, 0.5, 1.0])),
            backoff=draw(st.sampled_from([1.0, 2.0])),
            jitter=draw(st.booleans()),
            max_delay=draw(st.sampled_from([None, 1.5])),
            max_retry_time=None,
        )
        timeout = draw(st.sampled_from([None, None, 0.75, 2.0])) if step_timeouts else None
        specs.append(NodeSpec(f"n{i}", tuple(f"n{d}" for d in deps), policy, timeout))
    # Declaration order need not be topological.
    specs = draw(st.permutations(specs))
    names = [spec.name for spec in specs]
    heavy = frozenset(draw(st.sets(st.sampled_from(names)))) if admission else frozenset()
    return Scenario(
        specs=tuple(specs),
        max_in_flight=draw(st.none() | st.integers(1, 4)),
        timeout=draw(st.none() | st.sampled_from([1.0, 3.0, 10.0])) if run_timeout else None,
        heavy=heavy,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


class Driver:
    """Drives one ``RunMachine`` (or several in lockstep) to the end of the run."""

    def __init__(
        self,
        scenario: Scenario,
        mode: ErrorHandlingMode,
        data: st.DataObject,
        *,
        cancel_at: int | None = None,
        twin_at: int | None = None,
        stale_budget: int = 10,
    ) -> None:
        self.sc = scenario
        self.mode = mode
        self.data = data
        self.plan = Plan(scenario.specs)
        self.specs = {spec.name: spec for spec in scenario.specs}
        self.rng = random.Random(scenario.seed)
        self.machine = self.new_machine(self.rng)
        self.machines = [self.machine]
        self.cancel_at = cancel_at
        self.twin_at = twin_at
        self.stale_budget = stale_budget
        self.early_budget = 10
        self.failure_percent = data.draw(st.sampled_from([0, 10, 30, 60]), label="failure %")
        self.cancelled_by_driver = False

        self.now = 0.0
        self.log: list[tuple[float, Action]] = []
        self.in_flight: dict[str, int] = {}
        self.dispatched_at: dict[tuple[str, int], float] = {}
        self.attempts: Counter[str] = Counter()
        self.retry_at: dict[tuple[str, int], float] = {}
        self.pending_retry: dict[str, float] = {}  # announced, not yet dispatched
        self.zombies: set[tuple[str, int]] = set()  # attempts abandoned while in flight
        self.delivered: set[tuple[str, int]] = set()  # attempts whose result was reported
        self.last_report: tuple[str, int, str] | None = None
        self.succeeded: set[str] = set()
        self.failed: list[str] = []
        self.skipped: set[str] = set()
        self.cancelled: set[str] = set()
        self.finish: Finish | None = None

    def new_machine(self, rng: random.Random) -> RunMachine:
        heavy = self.sc.heavy
        return RunMachine(
            self.plan,
            error_mode=self.mode,
            max_in_flight=self.sc.max_in_flight,
            timeout=self.sc.timeout,
            admit=(lambda name, running: name not in heavy) if heavy else None,
            rng=rng.random,
        )

    # -- feeding events ----------------------------------------------------------------

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[Action]:
        results = [getattr(machine, method)(*args, **kwargs) for machine in self.machines]
        for other in results[1:]:
            assert other == results[0], "the restored machine diverged from the original"
        return results[0]

    def run(self) -> Driver:
        self.observe(self.call("start", self.now))
        for step in range(MAX_STEPS):
            if self.twin_at == step:
                self.make_twin()
            if self.finish is not None:
                break
            if self.cancel_at == step:
                self.cancelled_by_driver = True
                actions = self.call("cancel", self.now)
                assert actions, "cancel() of a running run returned nothing"
                self.observe(actions)
                continue
            self.step()
        assert self.finish is not None, "the run never finished"
        if self.twin_at is not None and len(self.machines) == 1:
            self.make_twin()  # the run ended before the snapshot step: restore a finished run
        self.check_end()
        return self

    def make_twin(self) -> None:
        snapshot = json.loads(json.dumps(self.machine.snapshot()))  # as a driver persists it
        rng = random.Random()
        rng.setstate(self.rng.getstate())
        twin = self.new_machine(rng)
        twin.restore(snapshot)
        assert twin.snapshot() == self.machine.snapshot()
        assert twin.finished == self.machine.finished
        assert twin.progress() == self.machine.progress()
        self.machines.append(twin)

    def step(self) -> None:
        deadline = self.machine.next_deadline()
        assert deadline is None or deadline >= self.now, "a deadline was left in the past"
        # A driver that sleeps until next_deadline() wakes in time for every timer.
        due = list(self.pending_retry.values())
        due += [
            self.dispatched_at[node, attempt] + limit
            for node, attempt in self.in_flight.items()
            if (limit := self.specs[node].timeout) is not None
        ]
        if self.sc.timeout is not None:
            due.append(self.sc.timeout)
        due = [when for when in due if when > self.now]  # earlier ones have fired already
        if due:
            assert deadline is not None, "next_deadline() forgot a timer"
            assert deadline <= min(due) + EPS, "next_deadline() is too late"
        options = []
        if self.in_flight:
            options.append("complete")
        if deadline is not None:
            options.append("tick")
        assert options, "the run stalled: nothing in flight and nothing to wait for"
        if self.stale_budget > 0 and (self.zombies or self.delivered):
            options.append("stale")
        if self.early_budget > 0 and (deadline is None or deadline > self.now):
            options.append("early tick")
        kind = self.data.draw(st.sampled_from(options))
        if kind == "complete":
            self.complete(deadline)
        elif kind == "tick":
            assert deadline is not None
            self.now = max(self.now, deadline)
            self.observe(self.call("tick", self.now))
        elif kind == "stale":
            self.stale_budget -= 1
            self.send_stale()
        else:
            self.early_budget -= 1
            assert self.call("tick", self.now) == [], "tick() before the deadline did something"

    def complete(self, deadline: float | None) -> None:
        node = self.data.draw(st.sampled_from(sorted(self.in_flight)))
        attempt = self.in_flight.pop(node)
        dt = self.data.draw(st.sampled_from([0.0, 0.25, 1.0]))
        if deadline is None or self.now + dt < deadline:
            self.now += dt  # a real driver ticks before reporting anything past a deadline
        if self.data.draw(st.integers(0, 99)) >= self.failure_percent:
            outcome = "ok"
        else:
            outcome = self.data.draw(st.sampled_from(["error", "error", "fatal"]))
        self.delivered.add((node, attempt))
        self.last_report = (node, attempt, outcome)
        if outcome == "ok":
            self.succeeded.add(node)
            actions = self.call("succeeded", node, attempt, self.now)
        else:
            actions = self.call(
                "failed", node, attempt, "boom", self.now, retryable=outcome == "error"
            )
            # A failure report is answered first by a retry or a final failure of that step.
            assert actions, "a failure was ignored"
            assert isinstance(actions[0], Retry | Fail)
            assert actions[0].node == node
            assert actions[0].error == "boom"
        self.observe(actions)

    def send_stale(self) -> None:
        node, attempt = self.data.draw(st.sampled_from(sorted(self.zombies | self.delivered)))
        before = self.machine.snapshot()
        if self.data.draw(st.booleans()):
            assert self.call("succeeded", node, attempt, self.now) == []
        else:
            assert self.call("failed", node, attempt, "late", self.now) == []
        assert self.machine.snapshot() == before, "a stale event changed the machine"

    # -- carrying out actions, checking each -------------------------------------------

    def observe(self, actions: list[Action]) -> None:
        for action in actions:
            assert self.finish is None, f"{action!r} came after Finish"
            self.log.append((self.now, action))
            match action:
                case Dispatch(node, attempt):
                    self.on_dispatch(node, attempt)
                case Retry(node, attempt, at, error):
                    self.on_retry(node, attempt, at, error)
                case Fail(node, attempt, error):
                    self.on_fail(node, attempt, error)
                case Skip(node, _):
                    assert self.mode is CONTINUE_ON_ERROR, "only CONTINUE_ON_ERROR skips"
                    assert self.attempts[node] == 0, "a step that ran was skipped"
                    assert node not in self.skipped
                    self.skipped.add(node)
                case Cancel(node, _, was_running):
                    assert was_running == (node in self.in_flight)
                    assert node not in self.cancelled
                    assert node not in self.succeeded
                    assert node not in self.failed
                    assert node not in self.skipped
                    if was_running:
                        self.zombies.add((node, self.in_flight.pop(node)))
                    self.cancelled.add(node)
                    self.pending_retry.pop(node, None)
                case Finish():
                    self.finish = action
        for machine in self.machines:
            assert machine.running == set(self.in_flight)

    def on_dispatch(self, node: str, attempt: int) -> None:
        spec = self.specs[node]
        assert node not in self.in_flight, f"{node} dispatched while in flight"
        assert attempt == self.attempts[node] + 1, "attempts are not numbered 1, 2, 3..."
        assert attempt <= spec.retry.retries + 1, f"{node} dispatched more than retries + 1"
        if attempt > 1:
            assert (node, attempt) in self.retry_at, "a retry dispatched without a Retry"
            assert self.now >= self.retry_at[node, attempt], "a retry dispatched too early"
        for dep in spec.deps:
            ok = dep in self.succeeded or (self.mode is SKIP_FAILED and dep in self.failed)
            assert ok, f"{node} dispatched before its dependency {dep} finished"
        if self.mode is FAIL_FAST:
            assert not self.failed, "FAIL_FAST dispatched after a failure"
        if node in self.sc.heavy:
            assert not self.in_flight, f"admit() refused {node} but it started"
        self.attempts[node] = attempt
        self.in_flight[node] = attempt
        self.pending_retry.pop(node, None)
        self.dispatched_at[node, attempt] = self.now
        if self.sc.max_in_flight is not None:
            assert len(self.in_flight) <= self.sc.max_in_flight, "max_in_flight exceeded"

    def timed_out(self, node: str, attempt: int, error: str) -> None:
        """``node``'s attempt in flight was ended by the machine: it must have timed out."""
        limit = self.specs[node].timeout
        assert limit is not None, f"{node} has no timeout but its attempt was ended"
        assert self.now >= self.dispatched_at[node, attempt] + limit - EPS
        assert "timeout" in error
        self.zombies.add((node, self.in_flight.pop(node)))

    def on_retry(self, node: str, attempt: int, at: float, error: str) -> None:
        policy = self.specs[node].retry
        failed_attempt = attempt - 1
        if node in self.in_flight:
            assert self.in_flight[node] == failed_attempt
            self.timed_out(node, failed_attempt, error)
        else:
            assert self.last_report == (node, failed_attempt, "error")
        assert failed_attempt < policy.max_attempts, "a retry beyond the policy's retries"
        nominal = dataclasses.replace(policy, jitter=False).delay_before(failed_attempt, 0.0)
        if policy.jitter:
            assert self.now + nominal / 2 - EPS <= at <= self.now + nominal + EPS
        else:
            assert abs(at - (self.now + nominal)) < EPS
        self.retry_at[node, attempt] = at
        self.pending_retry[node] = at

    def on_fail(self, node: str, attempt: int, error: str) -> None:
        assert node not in self.failed
        if node in self.in_flight:
            assert self.in_flight[node] == attempt
            self.timed_out(node, attempt, error)
            retryable = True
        else:
            assert self.last_report is not None
            assert self.last_report[:2] == (node, attempt)
            retryable = self.last_report[2] == "error"
        if retryable:  # with no max_retry_time, only running out of attempts ends a step
            assert attempt == self.specs[node].retry.max_attempts, "failed with retries left"
        self.failed.append(node)

    # -- the end -----------------------------------------------------------------------

    def phases(self) -> dict[str, Phase]:
        return {name: state.phase for name, state in self.machine.nodes.items()}

    def check_end(self) -> None:
        machine = self.machine
        names = set(self.specs)
        phases = self.phases()
        assert set(phases) == names
        assert all(phase in TERMINAL for phase in phases.values()), phases
        # Every step in exactly one terminal phase, matching the actions the driver saw.
        assert {n for n, p in phases.items() if p is Phase.SUCCEEDED} == self.succeeded
        assert {n for n, p in phases.items() if p is Phase.FAILED} == set(self.failed)
        assert {n for n, p in phases.items() if p is Phase.SKIPPED} == self.skipped
        assert {n for n, p in phases.items() if p is Phase.CANCELLED} == self.cancelled
        counts = machine.counts()
        assert sum(counts.values()) == len(names)
        assert counts == {p: sum(x is p for x in phases.values()) for p in Phase}
        assert machine.progress() == (len(names), len(names))
        assert not self.in_flight
        # Finish exactly once, and last.
        finishes = [action for _, action in self.log if isinstance(action, Finish)]
        assert finishes == [self.log[-1][1]]
        assert machine.finished
        assert machine.outcome == self.finish
        # After Finish nothing happens, whatever arrives.
        later = self.now + 1_000.0
        for node, attempt in sorted(self.zombies | self.delivered):
            assert self.call("succeeded", node, attempt, later) == []
            assert self.call("failed", node, attempt, "late", later) == []
        assert self.call("tick", later) == []
        assert self.call("start", later) == []
        assert self.call("cancel", later) == []
        assert self.call("refresh", later) == []
        assert machine.next_deadline() is None
        assert self.phases() == phases


def first_fail_index(log: list[tuple[float, Action]]) -> int | None:
    return next((i for i, (_, a) in enumerate(log) if isinstance(a, Fail)), None)


# -- properties ------------------------------------------------------------------------


@property_settings
@given(
    scenario=scenarios(run_timeout=True, admission=True),
    mode=st.sampled_from(list(ErrorHandlingMode)),
    data=st.data(),
)
def test_every_run_keeps_the_invariants_and_finishes(
    scenario: Scenario, mode: ErrorHandlingMode, data: st.DataObject
) -> None:
    """Dependencies first, max_in_flight, admission, one terminal phase each, one Finish."""
    cancel_at = data.draw(st.none() | st.integers(0, 30), label="cancel_at")
    driver = Driver(scenario, mode, data, cancel_at=cancel_at).run()
    assert driver.finish is not None
    if driver.cancelled_by_driver:
        assert driver.finish.outcome is RunOutcome.CANCELLED
    elif driver.machine.timed_out:
        assert driver.finish.outcome is RunOutcome.FAILED
        assert "timeout" in driver.finish.reason
        assert driver.now >= scenario.timeout  # type: ignore[operator]
    elif mode is not FAIL_FAST:
        assert not driver.cancelled, "only FAIL_FAST, cancel() and the run timeout cancel"


@property_settings
@given(scenario=scenarios(), data=st.data())
def test_fail_fast_stops_at_the_first_failure(scenario: Scenario, data: st.DataObject) -> None:
    driver = Driver(scenario, FAIL_FAST, data).run()
    assert driver.finish is not None
    first = first_fail_index(driver.log)
    if first is None:
        assert driver.finish.outcome is RunOutcome.SUCCEEDED
        assert set(driver.phases().values()) == {Phase.SUCCEEDED}
        return
    assert not any(isinstance(a, Dispatch) for _, a in driver.log[first:])
    failed_node = driver.log[first][1].node  # type: ignore[union-attr]
    assert driver.failed == [failed_node]
    assert driver.finish.outcome is RunOutcome.FAILED
    assert driver.finish.failed_node == failed_node
    # The failure's own actions end the run: cancels, then Finish, nothing else.
    rest = [a for _, a in driver.log[first + 1 :]]
    assert all(isinstance(a, Cancel) for a in rest[:-1])
    assert not driver.skipped


@property_settings
@given(scenario=scenarios(), data=st.data())
def test_continue_on_error_finishes_every_healthy_branch(
    scenario: Scenario, data: st.DataObject
) -> None:
    driver = Driver(scenario, CONTINUE_ON_ERROR, data).run()
    assert driver.finish is not None
    failed = set(driver.failed)
    for name, phase in driver.phases().items():
        if name in failed:
            assert phase is Phase.FAILED
        elif scenario.ancestors(name) & failed:
            assert phase is Phase.SKIPPED, f"{name} descends from a failure but is {phase}"
        else:
            assert phase is Phase.SUCCEEDED, f"{name} has no failed ancestor but is {phase}"
    if failed:
        assert driver.finish.outcome is RunOutcome.FAILED
        assert driver.finish.failed_node in failed
    else:
        assert driver.finish.outcome is RunOutcome.SUCCEEDED


@property_settings
@given(scenario=scenarios(), data=st.data())
def test_skip_failed_runs_every_step_and_succeeds(scenario: Scenario, data: st.DataObject) -> None:
    driver = Driver(scenario, SKIP_FAILED, data).run()
    assert driver.finish is not None
    assert driver.finish.outcome is RunOutcome.SUCCEEDED
    for name, phase in driver.phases().items():
        assert driver.attempts[name] >= 1, f"{name} never ran"
        assert phase is (Phase.FAILED if name in driver.failed else Phase.SUCCEEDED)


@property_settings
@given(
    scenario=scenarios(),
    mode=st.sampled_from(list(ErrorHandlingMode)),
    data=st.data(),
)
def test_retries_follow_the_policy(
    scenario: Scenario, mode: ErrorHandlingMode, data: st.DataObject
) -> None:
    driver = Driver(scenario, mode, data).run()
    dispatches: dict[str, list[tuple[float, int]]] = {}
    retries: dict[tuple[str, int], float] = {}
    for now, action in driver.log:
        if isinstance(action, Dispatch):
            dispatches.setdefault(action.node, []).append((now, action.attempt))
        elif isinstance(action, Retry):
            retries[action.node, action.attempt] = action.at
    for name, runs in dispatches.items():
        policy = driver.specs[name].retry
        assert len(runs) <= policy.retries + 1
        assert [attempt for _, attempt in runs] == list(range(1, len(runs) + 1))
        for now, attempt in runs[1:]:
            assert now >= retries[name, attempt]
    # Every Retry announced is followed by its dispatch, unless the run was cut short.
    for name, attempt in retries:
        if driver.machine.nodes[name].phase is not Phase.CANCELLED:
            assert attempt <= driver.attempts[name], f"retry {attempt} of {name} never ran"


@property_settings
@given(
    scenario=scenarios(),
    mode=st.sampled_from(list(ErrorHandlingMode)),
    data=st.data(),
)
def test_stale_events_change_nothing(
    scenario: Scenario, mode: ErrorHandlingMode, data: st.DataObject
) -> None:
    # The driver checks each stale result returns [] and leaves the snapshot unchanged;
    # here they are plentiful, and after Finish every old attempt is replayed.
    driver = Driver(scenario, mode, data, stale_budget=40).run()
    assert driver.finish is not None


@property_settings
@given(
    scenario=scenarios(run_timeout=True, admission=True),
    mode=st.sampled_from(list(ErrorHandlingMode)),
    data=st.data(),
)
def test_restored_snapshot_continues_like_the_original(
    scenario: Scenario, mode: ErrorHandlingMode, data: st.DataObject
) -> None:
    twin_at = data.draw(st.integers(0, 40), label="twin_at")
    driver = Driver(scenario, mode, data, twin_at=twin_at).run()
    original, restored = driver.machines
    assert {n: s.phase for n, s in restored.nodes.items()} == driver.phases()
    assert restored.outcome == original.outcome
    assert restored.counts() == original.counts()
