"""Property tests of the item rules: one fan-out step driven with random item outcomes.

A simulated driver answers ``Expand``, keeps the item attempts in flight, and lets
hypothesis pick one to succeed, fail or time out, or moves the clock to the next
deadline; it checks what every driver relies on while it carries out the actions.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskiq_flow.core import (
    Action,
    Dispatch,
    DispatchItem,
    Expand,
    Fail,
    Finish,
    Gather,
    NodeSpec,
    Phase,
    Plan,
    Retry,
    RetryPolicy,
    RunMachine,
    RunOutcome,
)
from taskiq_flow.errors import ErrorHandlingMode

MODES = list(ErrorHandlingMode)


@st.composite
def runs(draw: st.DrawFn) -> tuple[RunMachine, int, list[int]]:
    total = draw(st.integers(0, 12))
    limit = draw(st.one_of(st.none(), st.integers(1, 4)))
    retries = draw(st.integers(0, 2))
    timeout = draw(st.one_of(st.none(), st.just(5.0)))
    filters = draw(st.booleans())
    policy = RetryPolicy(retries=retries, delay=1.0, jitter=False, max_retry_time=None)
    plan = Plan(
        [
            NodeSpec("each", (), policy, timeout, True, limit, filters),
            NodeSpec("after", ("each",)),
        ]
    )
    machine = RunMachine(plan, error_mode=draw(st.sampled_from(MODES)), rng=lambda: 0.0)
    choices = draw(st.lists(st.integers(0, 1000), min_size=200, max_size=200))
    return machine, total, choices


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_items_follow_the_rules(run: tuple[RunMachine, int, list[int]]) -> None:
    machine, total, choices = run
    step = machine.plan.nodes["each"]
    limit = step.max_parallel
    in_flight: dict[int, int] = {}  # item -> its attempt in flight
    attempts: dict[int, int] = {}
    outcomes: dict[int, str] = {}  # item -> "ok" | "dropped" | "failed", final ones
    gathered: list[Gather] = []
    now = 0.0

    def carry_out(actions: list[Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Expand):
                queue.extend(machine.expand("each", action.attempt, total, now))
            elif isinstance(action, DispatchItem):
                assert action.item_attempt == attempts.get(action.item, 0) + 1
                assert action.item not in in_flight
                attempts[action.item] = action.item_attempt
                in_flight[action.item] = action.item_attempt
                assert limit is None or len(in_flight) <= limit
            elif isinstance(action, Retry | Fail) and action.item is not None:
                in_flight.pop(action.item, None)
                if isinstance(action, Fail):
                    outcomes[action.item] = "failed"
                    assert action.attempt <= step.retry.max_attempts
            elif isinstance(action, Gather):
                gathered.append(action)
            elif isinstance(action, Dispatch):
                assert action.node == "after"

    carry_out(machine.start(now))
    for choice in choices:
        if machine.finished:
            break
        if in_flight and choice % 4 != 3:
            item = sorted(in_flight)[choice % len(in_flight)]
            attempt = in_flight.pop(item)
            if choice % 4 == 0:
                carry_out(machine.item_failed("each", 1, item, attempt, "ValueError: x", now))
            else:
                result = choice % 2 == 0
                kept = result or not step.filter_items
                carry_out(machine.item_succeeded("each", 1, item, attempt, now, result))
                outcomes[item] = "ok" if kept else "dropped"
        else:
            deadline = machine.next_deadline()
            if deadline is None:
                if machine.nodes["each"].phase is not Phase.RUNNING:
                    break
                continue
            now = max(now, deadline)
            timed_out = machine.tick(now)
            for action in timed_out:
                if isinstance(action, Retry | Fail) and action.item is not None:
                    in_flight.pop(action.item, None)
            carry_out(timed_out)
        # A result of the step that follows, to let the run end.
        if machine.nodes["after"].phase is Phase.RUNNING:
            carry_out(machine.succeeded("after", 1, now))

    state = machine.nodes["each"]
    failed = sorted(i for i, o in outcomes.items() if o == "failed")
    mode = machine.error_mode
    if state.phase is Phase.SUCCEEDED:
        assert mode is ErrorHandlingMode.SKIP_FAILED or not failed
        assert len(gathered) == 1
        kept = tuple(i for i in range(total) if outcomes.get(i) == "ok")
        assert gathered[0].items == kept
    if failed and mode is ErrorHandlingMode.FAIL_FAST:
        # The step fails at its first item that fails for good: nothing is gathered.
        assert state.phase is Phase.FAILED
        assert gathered == []
        assert machine.outcome is not None
        assert machine.outcome.outcome is RunOutcome.FAILED
    if failed and mode is ErrorHandlingMode.CONTINUE_ON_ERROR and state.phase is Phase.FAILED:
        assert len(gathered) == 1  # the good items' results are kept
        assert machine.nodes["after"].phase is Phase.SKIPPED
    assert machine.nodes["each"].attempt <= 1  # items are retried, never the whole step
    # The state survives a round trip through JSON at any point.
    twin = RunMachine(machine.plan, error_mode=mode, rng=lambda: 0.0)
    twin.restore(json.loads(json.dumps(machine.snapshot())))
    assert twin.snapshot() == machine.snapshot()
    if machine.finished:
        assert isinstance(machine.outcome, Finish)
