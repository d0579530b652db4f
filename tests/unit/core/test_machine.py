"""Example-based tests of the run state machine."""

from __future__ import annotations

import json
from collections.abc import Collection

import pytest

from taskiq_flow.core import (
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
from taskiq_flow.errors import ErrorHandlingMode

NO_JITTER = RetryPolicy(retries=2, delay=1.0, backoff=2.0, jitter=False)


def diamond(retry: RetryPolicy | None = None) -> Plan:
    """a → (b, c) → d."""
    return Plan.from_mapping({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}, retry=retry)


def phases(machine: RunMachine) -> dict[str, Phase]:
    return {name: state.phase for name, state in machine.nodes.items()}


def test_diamond_dispatches_each_level_after_the_previous() -> None:
    machine = RunMachine(diamond())
    assert machine.start(0.0) == [Dispatch("a", 1)]
    assert machine.succeeded("a", 1, 1.0) == [Dispatch("b", 1), Dispatch("c", 1)]
    assert machine.succeeded("c", 1, 2.0) == []  # d still waits for b
    assert machine.succeeded("b", 1, 3.0) == [Dispatch("d", 1)]
    assert machine.succeeded("d", 1, 4.0) == [Finish(RunOutcome.SUCCEEDED, "all steps finished")]
    assert machine.finished
    assert set(phases(machine).values()) == {Phase.SUCCEEDED}
    assert machine.nodes["d"].started == 3.0
    assert machine.nodes["d"].finished == 4.0


def test_start_is_idempotent_and_results_before_start_are_ignored() -> None:
    machine = RunMachine(diamond())
    assert machine.succeeded("a", 1, 0.0) == []
    assert machine.tick(5.0) == []
    assert machine.start(0.0) == [Dispatch("a", 1)]
    assert machine.start(1.0) == []


def test_an_empty_plan_finishes_at_start() -> None:
    machine = RunMachine(Plan([]))
    assert machine.start(0.0) == [Finish(RunOutcome.SUCCEEDED, "all steps finished")]
    assert machine.progress() == (0, 0)


def test_results_for_unknown_steps_old_attempts_and_duplicates_are_ignored() -> None:
    plan = Plan([NodeSpec("a", retry=NO_JITTER), NodeSpec("b", ("a",))])
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.succeeded("nope", 1, 0.0) == []
    assert machine.succeeded("a", 2, 0.0) == []  # an attempt not yet started
    assert machine.failed("a", 1, "boom", 1.0) == [Retry("a", 2, 2.0, "boom")]
    assert machine.succeeded("a", 1, 1.5) == []  # the failed attempt reports again
    assert machine.tick(2.0) == [Dispatch("a", 2)]
    assert machine.succeeded("a", 1, 2.5) == []
    assert machine.succeeded("a", 2, 3.0) == [Dispatch("b", 1)]
    assert machine.succeeded("a", 2, 3.0) == []  # redelivered
    assert machine.nodes["a"].phase is Phase.SUCCEEDED


def test_step_timeout_retries_then_fails_naming_the_timeout() -> None:
    policy = RetryPolicy(retries=1, delay=1.0, jitter=False)
    machine = RunMachine(Plan([NodeSpec("a", retry=policy, timeout=5.0)]))
    assert machine.start(0.0) == [Dispatch("a", 1)]
    assert machine.next_deadline() == 5.0
    assert machine.tick(4.9) == []
    [retry] = machine.tick(5.0)
    assert isinstance(retry, Retry)
    assert (retry.node, retry.attempt, retry.at) == ("a", 2, 6.0)
    assert "timeout of 5s" in retry.error
    assert machine.nodes["a"].phase is Phase.RETRYING
    assert machine.running == set()
    assert machine.succeeded("a", 1, 5.5) == []  # the timed-out attempt is abandoned
    assert machine.next_deadline() == 6.0
    assert machine.tick(6.0) == [Dispatch("a", 2)]
    assert machine.next_deadline() == 11.0
    fail, finish = machine.tick(11.0)
    assert isinstance(fail, Fail)
    assert (fail.node, fail.attempt) == ("a", 2)
    assert fail.error.startswith("TimeoutError")
    assert "timeout of 5s" in fail.error
    assert isinstance(finish, Finish)
    assert finish.outcome is RunOutcome.FAILED
    assert finish.failed_node == "a"
    assert "timeout of 5s" in finish.reason
    assert not machine.timed_out  # a step timed out, not the run
    assert machine.nodes["a"].error == fail.error


def test_a_step_that_answers_in_time_is_not_timed_out() -> None:
    machine = RunMachine(Plan([NodeSpec("a", timeout=5.0), NodeSpec("b", ("a",))]))
    machine.start(0.0)
    assert machine.succeeded("a", 1, 4.0) == [Dispatch("b", 1)]
    assert machine.next_deadline() is None
    assert machine.tick(5.0) == []
    assert machine.succeeded("b", 1, 6.0)[-1].outcome is RunOutcome.SUCCEEDED  # type: ignore[union-attr]


def test_run_timeout_cancels_everything_and_sets_timed_out() -> None:
    plan = Plan.from_mapping({"a": [], "b": [], "c": ["a"]}, retry=NO_JITTER)
    machine = RunMachine(plan, timeout=10.0)
    assert machine.start(0.0) == [Dispatch("a", 1), Dispatch("b", 1)]
    assert machine.failed("b", 1, "boom", 1.0) == [Retry("b", 2, 2.0, "boom")]
    assert machine.next_deadline() == 2.0
    assert machine.tick(2.0) == [Dispatch("b", 2)]
    assert machine.next_deadline() == 10.0
    assert machine.tick(9.99) == []
    assert not machine.timed_out
    actions = machine.tick(10.0)
    reason = "the run exceeded its timeout of 10s"
    assert actions == [
        Cancel("a", reason, was_running=True),
        Cancel("b", reason, was_running=True),
        Cancel("c", reason, was_running=False),
        Finish(RunOutcome.FAILED, reason),
    ]
    assert machine.timed_out
    assert set(phases(machine).values()) == {Phase.CANCELLED}
    assert machine.running == set()
    assert machine.succeeded("a", 1, 10.5) == []
    assert machine.next_deadline() is None


def test_cancel_ends_the_run_cancelled() -> None:
    plan = Plan.from_mapping({"a": [], "b": [], "c": ["a", "b"]})
    machine = RunMachine(plan)
    machine.start(0.0)
    machine.succeeded("a", 1, 1.0)
    assert machine.cancel(2.0, reason="user asked") == [
        Cancel("b", "user asked", was_running=True),
        Cancel("c", "user asked", was_running=False),
        Finish(RunOutcome.CANCELLED, "user asked"),
    ]
    assert phases(machine) == {"a": Phase.SUCCEEDED, "b": Phase.CANCELLED, "c": Phase.CANCELLED}
    assert machine.outcome == Finish(RunOutcome.CANCELLED, "user asked")
    assert machine.cancel(3.0) == []
    assert machine.succeeded("b", 1, 3.0) == []
    assert machine.tick(100.0) == []


def test_cancel_while_a_step_waits_to_retry() -> None:
    machine = RunMachine(Plan([NodeSpec("a", retry=NO_JITTER)]))
    machine.start(0.0)
    machine.failed("a", 1, "boom", 0.0)
    assert machine.cancel(0.5) == [
        Cancel("a", "the run was cancelled", was_running=False),
        Finish(RunOutcome.CANCELLED, "the run was cancelled"),
    ]
    assert machine.tick(5.0) == []  # the retry never starts


def test_admit_refusing_never_stalls_the_run() -> None:
    calls: list[tuple[str, set[str]]] = []

    def admit(name: str, running: Collection[str]) -> bool:
        calls.append((name, set(running)))
        return False

    machine = RunMachine(Plan.from_mapping({"a": [], "b": [], "c": []}), admit=admit)
    assert machine.start(0.0) == [Dispatch("a", 1)]  # nothing ran, so a starts anyway
    assert calls == [("b", {"a"})]
    assert machine.succeeded("a", 1, 1.0) == [Dispatch("b", 1)]
    assert machine.succeeded("b", 1, 2.0) == [Dispatch("c", 1)]
    assert machine.succeeded("c", 1, 3.0) == [Finish(RunOutcome.SUCCEEDED, "all steps finished")]


def test_refresh_asks_admit_again() -> None:
    open_ = {"value": False}
    machine = RunMachine(
        Plan.from_mapping({"a": [], "b": []}), admit=lambda name, running: open_["value"]
    )
    assert machine.start(0.0) == [Dispatch("a", 1)]
    assert machine.refresh(1.0) == []
    open_["value"] = True
    assert machine.refresh(1.0) == [Dispatch("b", 1)]
    assert machine.running == {"a", "b"}


def test_max_in_flight_caps_dispatches_in_plan_order() -> None:
    plan = Plan.from_mapping({name: [] for name in "abcde"})
    machine = RunMachine(plan, max_in_flight=2)
    assert machine.start(0.0) == [Dispatch("a", 1), Dispatch("b", 1)]
    assert machine.succeeded("b", 1, 1.0) == [Dispatch("c", 1)]
    assert machine.failed("a", 1, "boom", 1.0, retryable=False)[:2] == [
        Fail("a", 1, "boom"),
        Cancel("c", "step 'a' failed: boom", was_running=True),
    ]


def test_max_retry_time_stops_retries() -> None:
    policy = RetryPolicy(retries=5, delay=10.0, backoff=1.0, jitter=False, max_retry_time=25.0)
    machine = RunMachine(Plan([NodeSpec("a", retry=policy)]))
    machine.start(0.0)
    assert machine.failed("a", 1, "e1", 0.0) == [Retry("a", 2, 10.0, "e1")]
    assert machine.tick(10.0) == [Dispatch("a", 2)]
    assert machine.failed("a", 2, "e2", 12.0) == [Retry("a", 3, 22.0, "e2")]
    assert machine.tick(22.0) == [Dispatch("a", 3)]
    # A third retry would start at 33s, past 25s after the first attempt began.
    fail, finish = machine.failed("a", 3, "e3", 23.0)
    assert fail == Fail("a", 3, "e3")
    assert isinstance(finish, Finish)
    assert finish.outcome is RunOutcome.FAILED


def test_a_non_retryable_failure_is_final() -> None:
    machine = RunMachine(Plan([NodeSpec("a", retry=NO_JITTER)]))
    machine.start(0.0)
    fail, finish = machine.failed("a", 1, "ValueError: bad", 0.0, retryable=False)
    assert fail == Fail("a", 1, "ValueError: bad")
    assert finish == Finish(RunOutcome.FAILED, "step 'a' failed: ValueError: bad", "a")


def test_retry_waits_grow_with_backoff() -> None:
    machine = RunMachine(Plan([NodeSpec("a", retry=NO_JITTER)]))
    machine.start(0.0)
    assert machine.failed("a", 1, "e", 0.0) == [Retry("a", 2, 1.0, "e")]
    assert machine.tick(0.5) == []
    assert machine.tick(1.0) == [Dispatch("a", 2)]
    assert machine.failed("a", 2, "e", 1.0) == [Retry("a", 3, 3.0, "e")]
    assert machine.tick(3.0) == [Dispatch("a", 3)]
    assert machine.failed("a", 3, "e", 3.0)[0] == Fail("a", 3, "e")


def test_jittered_retry_uses_the_rng() -> None:
    policy = RetryPolicy(retries=1, delay=4.0, jitter=True)
    machine = RunMachine(Plan([NodeSpec("a", retry=policy)]), rng=lambda: 0.5)
    machine.start(0.0)
    assert machine.failed("a", 1, "e", 10.0) == [Retry("a", 2, 13.0, "e")]  # 4 * 0.75


def test_continue_on_error_skips_descendants_and_finishes_the_rest() -> None:
    plan = Plan.from_mapping({"a": [], "b": ["a"], "c": ["b"], "x": [], "y": ["x"]})
    machine = RunMachine(plan, error_mode="ContinueOnError")
    assert machine.start(0.0) == [Dispatch("a", 1), Dispatch("x", 1)]
    assert machine.failed("a", 1, "boom", 1.0) == [
        Fail("a", 1, "boom"),
        Skip("b", "upstream step 'a' failed"),
        Skip("c", "upstream step 'b' was skipped"),
    ]
    assert machine.succeeded("x", 1, 2.0) == [Dispatch("y", 1)]
    assert machine.succeeded("y", 1, 3.0) == [Finish(RunOutcome.FAILED, "1 step(s) failed: a", "a")]
    assert phases(machine) == {
        "a": Phase.FAILED,
        "b": Phase.SKIPPED,
        "c": Phase.SKIPPED,
        "x": Phase.SUCCEEDED,
        "y": Phase.SUCCEEDED,
    }


def test_skip_failed_runs_consumers_of_a_failed_step() -> None:
    machine = RunMachine(diamond(), error_mode=ErrorHandlingMode.SKIP_FAILED)
    machine.start(0.0)
    machine.succeeded("a", 1, 1.0)
    assert machine.failed("b", 1, "boom", 2.0) == [Fail("b", 1, "boom")]
    assert machine.succeeded("c", 1, 3.0) == [Dispatch("d", 1)]
    assert machine.succeeded("d", 1, 4.0) == [Finish(RunOutcome.SUCCEEDED, "all steps finished")]
    assert machine.nodes["b"].phase is Phase.FAILED
    assert machine.nodes["b"].error == "boom"


def test_fail_fast_cancels_queued_and_retrying_steps() -> None:
    plan = Plan(
        [NodeSpec("a"), NodeSpec("b", retry=NO_JITTER), NodeSpec("c"), NodeSpec("d", ("c",))]
    )
    machine = RunMachine(plan)
    machine.start(0.0)
    machine.failed("b", 1, "flaky", 0.0)  # b waits to retry
    reason = "step 'c' failed: boom"
    assert machine.failed("c", 1, "boom", 0.5) == [
        Fail("c", 1, "boom"),
        Cancel("a", reason, was_running=True),
        Cancel("b", reason, was_running=False),
        Cancel("d", reason, was_running=False),
        Finish(RunOutcome.FAILED, reason, "c"),
    ]
    assert machine.tick(5.0) == []
    assert machine.succeeded("a", 1, 5.0) == []


def test_progress_and_counts() -> None:
    plan = Plan.from_mapping({"a": [], "b": ["a"], "c": []}, retry=NO_JITTER)
    machine = RunMachine(plan, error_mode="CONTINUE_ON_ERROR")
    assert machine.progress() == (0, 3)
    assert machine.counts()[Phase.PENDING] == 3
    machine.start(0.0)
    counts = machine.counts()
    assert counts[Phase.RUNNING] == 2
    assert counts[Phase.PENDING] == 1
    assert sum(counts.values()) == 3
    machine.failed("c", 1, "e", 1.0)
    assert machine.counts()[Phase.RETRYING] == 1
    assert machine.progress() == (0, 3)
    machine.succeeded("a", 1, 1.0)
    assert machine.progress() == (1, 3)
    machine.failed("b", 1, "e", 2.0, retryable=False)
    assert machine.progress() == (2, 3)
    assert machine.counts() == {
        Phase.PENDING: 0,
        Phase.RUNNING: 0,
        Phase.RETRYING: 1,
        Phase.SUCCEEDED: 1,
        Phase.FAILED: 1,
        Phase.SKIPPED: 0,
        Phase.CANCELLED: 0,
    }


def test_snapshot_restore_resumes_in_flight_and_retrying_steps() -> None:
    plan = Plan(
        [NodeSpec("a", timeout=30.0), NodeSpec("b", retry=NO_JITTER), NodeSpec("c", ("a", "b"))]
    )
    machine = RunMachine(plan, timeout=100.0)
    machine.start(0.0)
    machine.failed("b", 1, "boom", 1.0)
    snapshot = json.loads(json.dumps(machine.snapshot()))

    restored = RunMachine(plan, timeout=100.0)
    restored.restore(snapshot)
    assert restored.snapshot() == machine.snapshot()
    assert restored.running == {"a"}
    assert restored.next_deadline() == 2.0  # b's retry
    assert restored.start(5.0) == []  # already started
    assert restored.tick(2.0) == [Dispatch("b", 2)]
    assert restored.succeeded("a", 1, 3.0) == []  # c still waits for b
    assert restored.succeeded("b", 2, 4.0) == [Dispatch("c", 1)]
    assert restored.succeeded("c", 1, 5.0) == [Finish(RunOutcome.SUCCEEDED, "all steps finished")]


def test_snapshot_restore_keeps_a_step_timeout_and_the_run_timeout() -> None:
    plan = Plan([NodeSpec("a", timeout=30.0)])
    machine = RunMachine(plan, timeout=20.0)
    machine.start(0.0)
    restored = RunMachine(plan, timeout=20.0)
    restored.restore(json.loads(json.dumps(machine.snapshot())))
    assert restored.next_deadline() == 20.0
    assert restored.tick(20.0)[-1].outcome is RunOutcome.FAILED  # type: ignore[union-attr]
    assert restored.timed_out


def test_a_restored_finished_run_stays_finished() -> None:
    plan = Plan([NodeSpec("a")])
    machine = RunMachine(plan, timeout=5.0)
    machine.start(0.0)
    machine.tick(5.0)
    restored = RunMachine(plan, timeout=5.0)
    restored.restore(json.loads(json.dumps(machine.snapshot())))
    assert restored.finished
    assert restored.outcome == machine.outcome
    assert restored.timed_out
    assert restored.progress() == (1, 1)
    assert restored.succeeded("a", 1, 6.0) == []
    assert restored.tick(6.0) == []


@pytest.mark.parametrize("value", [0, -1])
def test_max_in_flight_must_be_positive(value: int) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        RunMachine(diamond(), max_in_flight=value)


def test_error_mode_spellings() -> None:
    assert RunMachine(diamond(), error_mode="FailFast").error_mode is ErrorHandlingMode.FAIL_FAST
    assert (
        RunMachine(diamond(), error_mode="skip_failed").error_mode is ErrorHandlingMode.SKIP_FAILED
    )
    with pytest.raises(ValueError, match="unknown error mode 'Sometimes'"):
        RunMachine(diamond(), error_mode="Sometimes")
