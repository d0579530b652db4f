"""The core's rules for the items of map and filter steps (every driver follows them)."""

from __future__ import annotations

import json

from taskiq_flow.core import (
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
    Skip,
)
from taskiq_flow.core.fanout import (
    ItemFailure,
    ItemPhase,
    first_items,
    items_error,
    judge_item_failure,
    kept_items,
    released_item,
    succeeded_item,
)
from taskiq_flow.errors import ErrorHandlingMode

NO_JITTER = RetryPolicy(retries=2, delay=1.0, backoff=2.0, jitter=False)
NO_RETRY = RetryPolicy()


def machine(
    *,
    mode: ErrorHandlingMode = ErrorHandlingMode.FAIL_FAST,
    limit: int | None = None,
    retry: RetryPolicy = NO_RETRY,
    timeout: float | None = None,
    filter_items: bool = False,
) -> RunMachine:
    plan = Plan(
        [
            NodeSpec("src"),
            NodeSpec("each", ("src",), retry, timeout, True, limit, filter_items),
            NodeSpec("sink", ("each",)),
        ]
    )
    return RunMachine(plan, error_mode=mode, rng=lambda: 0.0)


def items(actions: list[object]) -> list[tuple[int, int]]:
    return [(a.item, a.item_attempt) for a in actions if isinstance(a, DispatchItem)]


def expanded(m: RunMachine, total: int) -> list[object]:
    m.start(0.0)
    actions = m.succeeded("src", 1, 0.0)
    assert actions == [Expand("each", 1)]
    return m.expand("each", 1, total, 0.0)


def test_max_parallel_is_a_window_over_the_items() -> None:
    m = machine(limit=2)
    assert items(expanded(m, 5)) == [(0, 1), (1, 1)]
    assert items(m.item_succeeded("each", 1, 1, 1, 1.0)) == [(2, 1)]
    assert m.in_flight() == 2
    for item in (0, 2, 3):
        m.item_succeeded("each", 1, item, 1, 2.0)
    actions = m.item_succeeded("each", 1, 4, 1, 3.0)
    assert actions[0] == Gather("each", 1, (0, 1, 2, 3, 4), False)
    assert actions[1] == Dispatch("sink", 1)


def test_a_failed_item_is_retried_alone_and_the_step_keeps_its_attempt() -> None:
    m = machine(retry=NO_JITTER)
    expanded(m, 3)
    actions = m.item_failed("each", 1, 1, 1, "ValueError: flaky", 1.0)
    assert actions == [Retry("each", 2, 2.0, "ValueError: flaky", item=1)]
    assert m.next_deadline() == 2.0
    assert items(m.tick(2.0)) == [(1, 2)]
    m.item_succeeded("each", 1, 0, 1, 2.5)
    m.item_succeeded("each", 1, 2, 1, 2.5)
    assert m.item_succeeded("each", 1, 1, 1, 2.6) == []  # a late copy of the failed attempt
    actions = m.item_succeeded("each", 1, 1, 2, 3.0)
    assert isinstance(actions[0], Gather)
    assert m.nodes["each"].attempt == 1
    assert m.fanouts["each"].attempt_of(1) == 2


def test_fail_fast_fails_the_step_at_the_first_item_that_fails_for_good() -> None:
    m = machine(limit=2)
    expanded(m, 10)
    actions = m.item_failed("each", 1, 0, 1, "ValueError: bad", 1.0)
    assert actions[0] == Fail("each", 1, "ValueError: bad", item=0)
    assert actions[1] == Fail("each", 1, "1 of 10 items failed; item 0: ValueError: bad")
    finish = actions[-1]
    assert isinstance(finish, Finish)
    assert finish.outcome is RunOutcome.FAILED
    assert m.item_succeeded("each", 1, 1, 1, 2.0) == []  # abandoned with the run


def test_continue_on_error_runs_every_item_and_keeps_the_good_results() -> None:
    m = machine(mode=ErrorHandlingMode.CONTINUE_ON_ERROR, limit=1)
    expanded(m, 3)
    m.item_failed("each", 1, 0, 1, "ValueError: bad", 1.0)
    m.item_succeeded("each", 1, 1, 1, 2.0)
    actions = m.item_succeeded("each", 1, 2, 1, 3.0)
    assert actions[0] == Gather("each", 1, (1, 2), False)
    assert actions[1] == Fail("each", 1, "1 of 3 items failed; item 0: ValueError: bad")
    assert Skip("sink", "upstream step 'each' failed") in actions
    assert m.outcome is not None
    assert m.outcome.outcome is RunOutcome.FAILED
    assert m.fanouts["each"].counts() == {"total": 3, "succeeded": 2, "failed": 1, "running": 0}


def test_skip_failed_leaves_failed_items_out_and_the_step_succeeds() -> None:
    m = machine(mode=ErrorHandlingMode.SKIP_FAILED)
    expanded(m, 3)
    m.item_succeeded("each", 1, 0, 1, 1.0)
    m.item_failed("each", 1, 1, 1, "ValueError: bad", 1.0)
    actions = m.item_succeeded("each", 1, 2, 1, 2.0)
    assert actions[:2] == [Gather("each", 1, (0, 2), False), Dispatch("sink", 1)]
    assert m.nodes["each"].phase is Phase.SUCCEEDED


def test_a_filter_keeps_the_items_whose_task_returned_a_truthy_value() -> None:
    m = machine(filter_items=True)
    expanded(m, 4)
    for item, result in enumerate([1, 0, "yes", ""]):
        actions = m.item_succeeded("each", 1, item, 1, 1.0, result)
    assert actions[0] == Gather("each", 1, (0, 2), True)
    assert m.fanouts["each"].counts()["succeeded"] == 4


def test_an_unknown_task_is_never_retried() -> None:
    m = machine(retry=NO_JITTER)
    expanded(m, 2)
    actions = m.item_failed("each", 1, 0, 1, "UnknownTaskError: no task 'x'", 1.0)
    assert not any(isinstance(a, Retry) for a in actions)
    assert m.outcome is not None


def test_a_step_timeout_applies_to_each_item() -> None:
    m = machine(timeout=5.0, retry=NO_JITTER, limit=1)
    expanded(m, 2)
    assert m.next_deadline() == 5.0
    actions = m.tick(5.0)
    assert actions == [
        Retry("each", 2, 6.0, "TimeoutError: the step exceeded its timeout of 5s", item=0),
        DispatchItem("each", 1, 1, 1),  # the window had room again
    ]
    assert items(m.tick(6.0)) == []  # the retry is due, but item 1 fills the window
    assert items(m.item_succeeded("each", 1, 1, 1, 7.0)) == [(0, 2)]


def test_an_empty_map_succeeds_with_an_empty_output() -> None:
    m = machine()
    actions = expanded(m, 0)
    assert actions[:2] == [Gather("each", 1, (), False), Dispatch("sink", 1)]


def test_a_restored_machine_goes_on_with_the_same_items() -> None:
    m = machine(limit=2, retry=NO_JITTER)
    expanded(m, 5)
    m.item_succeeded("each", 1, 0, 1, 1.0)
    m.item_failed("each", 1, 1, 1, "ValueError: flaky", 1.0)
    data = json.loads(json.dumps(m.snapshot()))
    twin = machine(limit=2, retry=NO_JITTER)
    twin.restore(data)
    for copy in (m, twin):
        assert copy.in_flight() == 2  # items 2 (sent before) and 3 (sent when 0 finished)
        assert items(copy.tick(2.0)) == []  # the window is full: item 1 waits its turn
        assert items(copy.item_succeeded("each", 1, 2, 1, 2.5)) == [(1, 2)]
    assert twin.snapshot() == m.snapshot()


# -- the same rules as functions, for the worker-side sequential driver ------------------


def test_a_driver_without_a_shared_view_keeps_the_window_by_releasing_item_plus_limit() -> None:
    assert list(first_items(3, 10)) == [0, 1, 2]
    assert list(first_items(None, 4)) == [0, 1, 2, 3]
    assert list(first_items(8, 2)) == [0, 1]
    # Each held-back item has exactly one releaser: 3..9 once each, nothing beyond.
    released = [released_item(item, 3, 10) for item in range(10)]
    assert released == [3, 4, 5, 6, 7, 8, 9, None, None, None]
    assert released_item(0, None, 10) is None


def test_an_item_failure_is_judged_as_the_machine_judges_it() -> None:
    policy = RetryPolicy(retries=1, delay=2.0, jitter=False, max_retry_time=10.0)
    fail_fast, skip = ErrorHandlingMode.FAIL_FAST, ErrorHandlingMode.SKIP_FAILED
    assert judge_item_failure(policy, fail_fast, 1, 0.0, 1.0, 0.5, "E: x") == ItemFailure(
        3.0, False
    )
    # Out of attempts: failed for good, which fails the step at once only under FailFast.
    assert judge_item_failure(policy, fail_fast, 2, 0.0, 1.0, 0.5, "E: x") == ItemFailure(
        None, True
    )
    assert judge_item_failure(policy, skip, 2, 0.0, 1.0, 0.5, "E: x") == ItemFailure(None, False)
    # max_retry_time counts from the item's own first attempt.
    assert judge_item_failure(policy, skip, 1, 0.0, 9.0, 0.5, "E: x").retry_at is None
    assert judge_item_failure(policy, skip, 1, 5.0, 9.0, 0.5, "E: x").retry_at == 11.0
    unknown = "UnknownTaskError: unknown task 'm:f'"
    assert judge_item_failure(policy, skip, 1, 0.0, 1.0, 0.5, unknown).retry_at is None


def test_the_output_is_the_items_that_succeeded_in_order() -> None:
    phases = [
        succeeded_item(True, 4),
        succeeded_item(True, 0),  # a filter's task did not keep it
        ItemPhase.FAILED,
        succeeded_item(False, 0),  # a map keeps every result, falsy or not
    ]
    assert phases == [ItemPhase.SUCCEEDED, ItemPhase.DROPPED, ItemPhase.FAILED, ItemPhase.SUCCEEDED]
    assert kept_items(phases) == [0, 3]
    assert items_error(1, 4, 2, "E: x") == "1 of 4 items failed; item 2: E: x"


def test_the_runs_max_in_flight_counts_items_and_steps_alike() -> None:
    plan = Plan(
        [
            NodeSpec("solo"),
            NodeSpec("each", (), NO_RETRY, None, True),
        ]
    )
    m = RunMachine(plan, max_in_flight=2, rng=lambda: 0.0)
    assert m.start(0.0) == [Dispatch("solo", 1), Expand("each", 1)]
    # One task runs (solo): one of the four items fits.
    assert items(m.expand("each", 1, 4, 0.0)) == [(0, 1)]
    assert m.in_flight() == 2
    # solo's end frees a slot for the next item; an item's end for the one after it.
    assert items(m.succeeded("solo", 1, 1.0)) == [(1, 1)]
    assert items(m.item_succeeded("each", 1, 0, 1, 2.0)) == [(2, 1)]
    assert m.in_flight() == 2


def test_a_run_without_max_in_flight_starts_every_item_at_once() -> None:
    m = RunMachine(Plan([NodeSpec("each", (), NO_RETRY, None, True)]), rng=lambda: 0.0)
    assert m.start(0.0) == [Expand("each", 1)]
    assert len(items(m.expand("each", 1, 50, 0.0))) == 50


def test_a_step_that_continues_on_failure_does_not_fail_the_run() -> None:
    plan = Plan(
        [
            NodeSpec("broken", continue_on_failure=True),
            NodeSpec("after", ("broken",)),
            NodeSpec("aside"),
        ]
    )
    m = RunMachine(plan, error_mode=ErrorHandlingMode.FAIL_FAST, rng=lambda: 0.0)
    assert m.start(0.0) == [Dispatch("broken", 1), Dispatch("aside", 1)]
    # Under FailFast the run would end here; the step's own override keeps it going,
    # and its consumer is skipped as under ContinueOnError.
    assert m.failed("broken", 1, "E: x", 1.0) == [
        Fail("broken", 1, "E: x"),
        Skip("after", "upstream step 'broken' failed"),
    ]
    assert m.succeeded("aside", 1, 2.0) == [Finish(RunOutcome.SUCCEEDED, "all steps finished")]
    assert (m.nodes["broken"].phase, m.nodes["after"].phase) == (Phase.FAILED, Phase.SKIPPED)


def test_a_map_that_continues_on_failure_runs_every_item_and_keeps_the_good_ones() -> None:
    plan = Plan([NodeSpec("each", (), NO_RETRY, None, True, continue_on_failure=True)])
    m = RunMachine(plan, error_mode=ErrorHandlingMode.FAIL_FAST, rng=lambda: 0.0)
    m.start(0.0)
    assert items(m.expand("each", 1, 3, 0.0)) == [(0, 1), (1, 1), (2, 1)]
    assert m.item_failed("each", 1, 0, 1, "E: x", 1.0) == [Fail("each", 1, "E: x", item=0)]
    m.item_succeeded("each", 1, 1, 1, 1.0)
    actions = m.item_succeeded("each", 1, 2, 1, 1.0)
    assert Gather("each", 1, (1, 2), False) in actions
    assert actions[-1] == Finish(RunOutcome.SUCCEEDED, "all steps finished")
    assert m.nodes["each"].phase is Phase.FAILED
