"""Example-based tests of the control-flow rules of the run state machine: ``when``
conditions, the outcomes a step accepts of its dependencies, and ``finally`` steps."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taskiq_flow.core import (
    Action,
    Cancel,
    Dispatch,
    Fail,
    Finish,
    NodeSpec,
    Phase,
    Plan,
    RunMachine,
    RunOutcome,
    Skip,
)
from taskiq_flow.core.actions import Check
from taskiq_flow.core.conditions import Condition, ConditionError
from taskiq_flow.core.plan import ANY_OUTCOME
from taskiq_flow.core.states import timeout_error
from taskiq_flow.errors import ErrorHandlingMode

SUCCEEDED = frozenset({Phase.SUCCEEDED})
FAILED = frozenset({Phase.FAILED})
SKIPPED = frozenset({Phase.SKIPPED})
ALL_DONE = Finish(RunOutcome.SUCCEEDED, "all steps finished")
CANCELLED_REASON = "the run was cancelled"


def phases(machine: RunMachine) -> dict[str, Phase]:
    return {name: state.phase for name, state in machine.nodes.items()}


def restored(machine: RunMachine, plan: Plan, **options: Any) -> RunMachine:
    """A fresh machine of ``plan`` loaded from ``machine``'s snapshot, through JSON."""
    copy = RunMachine(plan, **options)
    copy.restore(json.loads(json.dumps(machine.snapshot())))
    assert copy.snapshot() == machine.snapshot()
    return copy


def unordered(actions: list[Action]) -> set[Action]:
    """The actions as a set, for a list whose order no rule fixes; no repeats allowed."""
    assert len(set(actions)) == len(actions)
    return set(actions)


# -- Condition: compiling and the names it reads --------------------------------------


def test_a_condition_reads_the_names_of_each_root() -> None:
    condition = Condition(
        "outputs['a-b'] > 1 && steps.s.phase == 'Succeeded' && inputs.n == 2 && outputs.x"
    )
    assert condition.inputs == ("n",)
    assert condition.outputs == ("a-b", "x")
    assert condition.steps == ("s",)
    assert condition.data == ("n", "a-b", "x")
    assert condition.source.startswith("outputs['a-b']")


def test_a_condition_names_each_reference_once_in_order_of_appearance() -> None:
    condition = Condition('inputs.b > inputs.a && inputs.b < 10 && outputs["x-y"] == 1')
    assert condition.inputs == ("b", "a")
    assert condition.outputs == ("x-y",)
    assert condition.steps == ()


@pytest.mark.parametrize(
    "source",
    [
        'inputs.a == "outputs.b"',
        "inputs.a == 'steps.c.phase'",
        'inputs.a == """inputs.z"""',
        'inputs.a == r"outputs.q"',
        r'inputs.a == "say \"steps.q\""',
    ],
)
def test_a_root_name_inside_a_string_literal_is_not_a_reference(source: str) -> None:
    condition = Condition(source)
    assert (condition.inputs, condition.outputs, condition.steps) == (("a",), (), ())


@pytest.mark.parametrize(
    ("source", "inputs"),
    [
        ("[{'steps': 1}].all(x, x.steps == 1)", ()),
        ("inputs.cfg.steps == 3", ("cfg",)),
        ("inputs.m.outputs", ("m",)),
    ],
)
def test_a_field_named_like_a_root_is_not_a_reference(source: str, inputs: tuple[str, ...]) -> None:
    condition = Condition(source)
    assert (condition.inputs, condition.outputs, condition.steps) == (inputs, (), ())


@pytest.mark.parametrize(
    ("source", "named"),
    [("input.n > 1", "'input'"), ("foo", "'foo'"), ("inputs.l.exists(x, y == 1)", "'y'")],
)
def test_a_name_that_is_not_a_root_is_refused(source: str, named: str) -> None:
    with pytest.raises(ConditionError, match=f"unknown name {named}"):
        Condition(source)


def test_macro_variables_and_type_names_are_not_unknown_names() -> None:
    condition = Condition("type(inputs.x) == string && inputs.l.exists(item, item > 0)")
    assert condition.inputs == ("x", "l")


def test_a_condition_with_a_syntax_error_is_refused() -> None:
    with pytest.raises(ConditionError):
        Condition("outputs.x >")
    assert issubclass(ConditionError, ValueError)


@pytest.mark.parametrize(
    "source",
    ["outputs[inputs.k]", "outputs", "size(inputs) > 0", "steps[0] == 1", 'outputs["a" + "b"]'],
)
def test_names_must_be_literal(source: str) -> None:
    with pytest.raises(ConditionError, match="by name"):
        Condition(source)


def test_a_condition_evaluates_over_the_values_it_is_given() -> None:
    condition = Condition("outputs.score > 1 && steps.a.phase == 'Succeeded'")
    assert condition.evaluate({"score": 2}, {"a": "Succeeded"}) is True
    assert condition.evaluate({"score": 0}, {"a": "Succeeded"}) is False
    assert condition.evaluate({"score": 2}, {"a": "Failed"}) is False
    assert Condition("has(outputs.x)").evaluate({}, {}) is False
    assert Condition("has(outputs.x)").evaluate({"x": None}, {}) is True
    with pytest.raises(ConditionError, match="no such key: score"):
        condition.evaluate({}, {"a": "Succeeded"})
    with pytest.raises(ConditionError, match="gave int, not a bool"):
        Condition("inputs.n + 1").evaluate({"n": 1}, {})


def test_conditions_are_equal_by_source() -> None:
    assert Condition("inputs.a") == Condition("inputs.a")
    assert hash(Condition("inputs.a")) == hash(Condition("inputs.a"))
    assert Condition("inputs.a") != Condition("inputs.b")
    assert repr(Condition("inputs.a")) == "Condition('inputs.a')"


# -- when -------------------------------------------------------------------------------


def test_a_when_reading_data_asks_for_a_check_and_a_true_answer_dispatches() -> None:
    when = Condition("outputs.score > 1 && inputs.mode == 'full'")
    plan = Plan([NodeSpec("a"), NodeSpec("b", ("a",), when=when), NodeSpec("c", ("b",))])
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Dispatch("a", 1)]
    assert machine.succeeded("a", 1, 1.0) == [Check("b", ("mode", "score"))]
    assert machine.nodes["b"].phase is Phase.PENDING
    assert machine.refresh(1.5) == []  # the Check is asked once
    assert machine.checked("b", {"mode": "full", "score": 2}, 2.0) == [Dispatch("b", 1)]
    assert machine.checked("b", {"mode": "full", "score": 2}, 2.5) == []  # redelivered
    assert machine.succeeded("b", 1, 3.0) == [Dispatch("c", 1)]
    assert machine.succeeded("c", 1, 4.0) == [ALL_DONE]
    assert machine.nodes["b"].started == 2.0


def test_a_when_on_a_step_without_dependencies_is_checked_at_start() -> None:
    plan = Plan([NodeSpec("a", when=Condition("inputs.go"))])
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Check("a", ("go",))]
    assert machine.checked("a", {"go": True}, 1.0) == [Dispatch("a", 1)]
    assert machine.succeeded("a", 1, 2.0) == [ALL_DONE]


def test_a_false_when_skips_the_step_and_its_dependents() -> None:
    source = "outputs.score > 1"
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b", ("a",), when=Condition(source)),
            NodeSpec("c", ("b",)),
            NodeSpec("d", ("c",)),
        ]
    )
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.succeeded("a", 1, 1.0) == [Check("b", ("score",))]
    reason = f"when {source!r} is false"
    assert machine.checked("b", {"score": 0}, 2.0) == [
        Skip("b", reason),
        Skip("c", "upstream step 'b' was skipped"),
        Skip("d", "upstream step 'c' was skipped"),
        ALL_DONE,
    ]
    assert phases(machine) == {
        "a": Phase.SUCCEEDED,
        "b": Phase.SKIPPED,
        "c": Phase.SKIPPED,
        "d": Phase.SKIPPED,
    }
    assert machine.nodes["b"].error == reason
    assert machine.nodes["b"].attempt == 0  # never dispatched
    assert machine.nodes["c"].error == "upstream step 'b' was skipped"


def test_a_when_reading_only_steps_is_decided_without_a_check() -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b", ("a",), when=Condition("steps.a.phase == 'Succeeded'")),
            NodeSpec("c", ("a",), when=Condition("steps.a.phase == 'Failed'")),
        ]
    )
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Dispatch("a", 1)]
    actions = machine.succeeded("a", 1, 1.0)
    assert unordered(actions) == {
        Dispatch("b", 1),
        Skip("c", "when \"steps.a.phase == 'Failed'\" is false"),
    }
    assert not any(isinstance(action, Check) for action in actions)
    assert machine.succeeded("b", 1, 2.0) == [ALL_DONE]


def test_a_when_reading_steps_and_data_sees_the_phases_at_check_time() -> None:
    when = Condition("steps.x.phase == 'Succeeded' && inputs.go")
    plan = Plan([NodeSpec("a"), NodeSpec("x"), NodeSpec("b", ("a",), when=when)])
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Dispatch("a", 1), Dispatch("x", 1)]
    assert machine.succeeded("a", 1, 1.0) == [Check("b", ("go",))]
    assert machine.succeeded("x", 1, 2.0) == []
    assert machine.checked("b", {"go": True}, 3.0) == [Dispatch("b", 1)]


def test_a_condition_error_fails_the_step_and_fail_fast_ends_the_run() -> None:
    source = "outputs.score > 1"
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("x"),
            NodeSpec("b", ("a",), when=Condition(source)),
            NodeSpec("c", ("b",)),
        ]
    )
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Dispatch("a", 1), Dispatch("x", 1)]
    assert machine.succeeded("a", 1, 1.0) == [Check("b", ("score",))]
    error = f"ConditionError: when {source!r}: no such key: score"
    reason = f"step 'b' failed: {error}"
    assert machine.checked("b", {}, 2.0) == [  # score's producer did not produce it
        Fail("b", 0, error),
        Cancel("x", reason, was_running=True),
        Cancel("c", reason, was_running=False),
        Finish(RunOutcome.FAILED, reason, "b"),
    ]
    assert machine.nodes["b"].phase is Phase.FAILED
    assert machine.nodes["b"].error == error
    assert machine.succeeded("x", 1, 3.0) == []


def test_a_non_bool_condition_fails_the_step_like_any_failure() -> None:
    source = "inputs.n + 1"
    plan = Plan([NodeSpec("b", when=Condition(source)), NodeSpec("c", ("b",)), NodeSpec("y")])
    machine = RunMachine(plan, error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR)
    assert unordered(machine.start(0.0)) == {Check("b", ("n",)), Dispatch("y", 1)}
    error = f"ConditionError: when {source!r}: the expression gave int, not a bool"
    assert machine.checked("b", {"n": 1}, 1.0) == [
        Fail("b", 0, error),
        Skip("c", "upstream step 'b' failed"),
    ]
    assert machine.succeeded("y", 1, 2.0) == [Finish(RunOutcome.FAILED, "1 step(s) failed: b", "b")]


def test_answers_to_checks_never_asked_or_no_longer_wanted_are_ignored() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("x"), NodeSpec("b", ("a",), when=Condition("inputs.go"))])
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.checked("b", {"go": True}, 0.5) == []  # b still waits for a
    assert machine.checked("a", {}, 0.5) == []  # a has no condition
    assert machine.checked("nope", {}, 0.5) == []
    assert machine.nodes["b"].phase is Phase.PENDING
    assert machine.succeeded("a", 1, 1.0) == [Check("b", ("go",))]
    reason = "step 'x' failed: boom"
    assert machine.failed("x", 1, "boom", 2.0) == [
        Fail("x", 1, "boom"),
        Cancel("b", reason, was_running=False),
        Finish(RunOutcome.FAILED, reason, "x"),
    ]
    assert machine.checked("b", {"go": True}, 3.0) == []
    assert phases(machine)["b"] is Phase.CANCELLED


def test_a_step_whose_when_holds_still_waits_for_room() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("b", when=Condition("inputs.go"))])
    machine = RunMachine(plan, max_in_flight=1)
    assert unordered(machine.start(0.0)) == {Check("b", ("go",)), Dispatch("a", 1)}
    assert machine.checked("b", {"go": True}, 1.0) == []  # a holds the only slot
    assert machine.nodes["b"].phase is Phase.PENDING
    assert machine.refresh(1.5) == []
    assert machine.succeeded("a", 1, 2.0) == [Dispatch("b", 1)]  # not checked again
    assert machine.succeeded("b", 1, 3.0) == [ALL_DONE]


def test_a_false_when_at_the_head_of_a_long_chain_skips_it_all() -> None:
    size = 5000
    source = "inputs.go"
    plan = Plan(
        [NodeSpec("s0", when=Condition(source))]
        + [NodeSpec(f"s{i}", (f"s{i - 1}",)) for i in range(1, size)]
    )
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Check("s0", ("go",))]
    actions = machine.checked("s0", {"go": False}, 1.0)
    assert actions == [
        Skip("s0", f"when {source!r} is false"),
        *(Skip(f"s{i}", f"upstream step 's{i - 1}' was skipped") for i in range(1, size)),
        ALL_DONE,
    ]
    assert machine.counts()[Phase.SKIPPED] == size
    assert machine.progress() == (size, size)


# -- accepts ----------------------------------------------------------------------------


def test_a_step_accepting_a_failure_runs_after_it_and_fail_fast_does_not_cancel() -> None:
    plan = Plan(
        [
            NodeSpec("x"),
            NodeSpec("y"),
            NodeSpec("h", ("x",), accepts={"x": FAILED}),
            NodeSpec("z", ("x",)),
        ]
    )
    machine = RunMachine(plan, error_mode=ErrorHandlingMode.FAIL_FAST)
    assert machine.start(0.0) == [Dispatch("x", 1), Dispatch("y", 1)]
    assert machine.failed("x", 1, "boom", 1.0) == [
        Fail("x", 1, "boom"),
        Skip("z", "upstream step 'x' failed"),
        Dispatch("h", 1),
    ]
    assert phases(machine)["y"] is Phase.RUNNING
    assert machine.succeeded("y", 1, 2.0) == []
    # The run still fails, at the end, because x failed.
    assert machine.succeeded("h", 1, 3.0) == [Finish(RunOutcome.FAILED, "1 step(s) failed: x", "x")]


def test_a_handled_failure_of_a_continue_on_failure_step_lets_the_run_succeed() -> None:
    plan = Plan(
        [NodeSpec("x", continue_on_failure=True), NodeSpec("h", ("x",), accepts={"x": FAILED})]
    )
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.failed("x", 1, "boom", 1.0) == [Fail("x", 1, "boom"), Dispatch("h", 1)]
    assert machine.succeeded("h", 1, 2.0) == [ALL_DONE]


def test_a_dependent_not_accepting_the_outcome_is_skipped_at_once() -> None:
    plan = Plan([NodeSpec("x"), NodeSpec("y"), NodeSpec("d", ("x", "y"), accepts={"x": FAILED})])
    machine = RunMachine(plan)
    machine.start(0.0)
    # d is skipped as soon as x succeeds, while y is still running.
    assert machine.succeeded("x", 1, 1.0) == [Skip("d", "upstream step 'x' succeeded")]
    assert machine.nodes["d"].phase is Phase.SKIPPED
    assert machine.succeeded("y", 1, 2.0) == [ALL_DONE]


def test_a_dependent_accepting_skipped_runs_after_its_dependency_was_skipped() -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b", ("a",), when=Condition("outputs.flag")),
            NodeSpec("c", ("b",), accepts={"b": SKIPPED}),
            NodeSpec("d", ("b",)),
        ]
    )
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.succeeded("a", 1, 1.0) == [Check("b", ("flag",))]
    assert machine.checked("b", {"flag": False}, 2.0) == [
        Skip("b", "when 'outputs.flag' is false"),
        Skip("d", "upstream step 'b' was skipped"),
        Dispatch("c", 1),
    ]
    assert machine.succeeded("c", 1, 3.0) == [ALL_DONE]


@pytest.mark.parametrize("outcome", [Phase.SUCCEEDED, Phase.FAILED, Phase.SKIPPED])
def test_a_dependent_accepting_any_outcome_runs_after_each(outcome: Phase) -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b", ("a",)),
            NodeSpec("c", ("b",), accepts={"b": ANY_OUTCOME}),
        ]
    )
    machine = RunMachine(plan, error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR)
    machine.start(0.0)
    if outcome is Phase.SKIPPED:  # b is skipped because a failed
        assert machine.failed("a", 1, "boom", 1.0) == [
            Fail("a", 1, "boom"),
            Skip("b", "upstream step 'a' failed"),
            Dispatch("c", 1),
        ]
    else:
        assert machine.succeeded("a", 1, 1.0) == [Dispatch("b", 1)]
        if outcome is Phase.SUCCEEDED:
            assert machine.succeeded("b", 1, 2.0) == [Dispatch("c", 1)]
        else:
            assert machine.failed("b", 1, "boom", 2.0) == [Fail("b", 1, "boom"), Dispatch("c", 1)]
    assert machine.nodes["b"].phase is outcome
    assert machine.nodes["c"].phase is Phase.RUNNING


def test_skip_failed_releases_dependents_of_a_failed_step_by_default() -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b", ("a",)),  # the default: SkipFailed lets it run
            NodeSpec("c", ("a",), accepts={"a": SUCCEEDED}),  # says it needs a's success
        ]
    )
    machine = RunMachine(plan, error_mode=ErrorHandlingMode.SKIP_FAILED)
    machine.start(0.0)
    assert machine.failed("a", 1, "boom", 1.0) == [
        Fail("a", 1, "boom"),
        Skip("c", "upstream step 'a' failed"),
        Dispatch("b", 1),
    ]
    assert machine.succeeded("b", 1, 2.0) == [ALL_DONE]


def test_a_failure_whose_only_taker_was_skipped_still_fails_fast() -> None:
    # h would run after x failed, but h is skipped first (w's when is false): no step
    # waits for x's failure any more, so it ends the run at once under FailFast.
    plan = Plan(
        [
            NodeSpec("x"),
            NodeSpec("y"),
            NodeSpec("w", when=Condition("inputs.go")),
            NodeSpec("h", ("x", "w"), accepts={"x": FAILED}),
        ]
    )
    machine = RunMachine(plan)
    assert unordered(machine.start(0.0)) == {
        Dispatch("x", 1),
        Dispatch("y", 1),
        Check("w", ("go",)),
    }
    assert machine.checked("w", {"go": False}, 1.0) == [
        Skip("w", "when 'inputs.go' is false"),
        Skip("h", "upstream step 'w' was skipped"),
    ]
    reason = "step 'x' failed: boom"
    assert machine.failed("x", 1, "boom", 2.0) == [
        Fail("x", 1, "boom"),
        Cancel("y", reason, was_running=True),
        Finish(RunOutcome.FAILED, reason, "x"),
    ]


# -- finally ----------------------------------------------------------------------------


def test_finally_steps_start_after_every_regular_step_and_finish_follows_them() -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b", ("a",)),
            NodeSpec("f", ("a",), final=True),
            NodeSpec("g", final=True),
        ]
    )
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Dispatch("a", 1)]
    assert machine.verdict is None
    assert machine.run_data() is None
    assert machine.succeeded("a", 1, 1.0) == [Dispatch("b", 1)]  # not f, though a is done
    assert machine.run_data() is None
    # In plan order: g depends on nothing, so it comes before f.
    assert machine.succeeded("b", 1, 2.0) == [Dispatch("g", 1), Dispatch("f", 1)]
    assert machine.verdict == ALL_DONE
    assert machine.outcome is None
    assert not machine.finished
    assert machine.run_data() == {
        "phase": "Succeeded",
        "message": "all steps finished",
        "failedSteps": [],
    }
    assert machine.succeeded("g", 1, 3.0) == []
    assert machine.succeeded("f", 1, 4.0) == [ALL_DONE]
    assert machine.finished
    assert machine.outcome == ALL_DONE


def test_finally_steps_start_after_a_fail_fast_failure() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("b"), NodeSpec("c", ("b",)), NodeSpec("f", final=True)])
    machine = RunMachine(plan)
    assert machine.start(0.0) == [Dispatch("a", 1), Dispatch("b", 1)]
    reason = "step 'a' failed: boom"
    assert machine.failed("a", 1, "boom", 1.0) == [
        Fail("a", 1, "boom"),
        Cancel("b", reason, was_running=True),
        Cancel("c", reason, was_running=False),
        Dispatch("f", 1),
    ]
    verdict = Finish(RunOutcome.FAILED, reason, "a")
    assert machine.verdict == verdict
    assert machine.run_data() == {"phase": "Failed", "message": reason, "failedSteps": ["a"]}
    assert machine.succeeded("b", 1, 2.0) == []  # cancelled: its late result is ignored
    assert machine.succeeded("f", 1, 3.0) == [verdict]
    assert phases(machine) == {
        "a": Phase.FAILED,
        "b": Phase.CANCELLED,
        "c": Phase.CANCELLED,
        "f": Phase.SUCCEEDED,
    }


def test_finally_steps_start_after_a_cancel_and_the_run_stays_cancelled() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("b", ("a",)), NodeSpec("f", final=True)])
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.cancel(1.0) == [
        Cancel("a", CANCELLED_REASON, was_running=True),
        Cancel("b", CANCELLED_REASON, was_running=False),
        Dispatch("f", 1),
    ]
    verdict = Finish(RunOutcome.CANCELLED, CANCELLED_REASON)
    assert machine.verdict == verdict
    assert machine.run_data() == {
        "phase": "Cancelled",
        "message": CANCELLED_REASON,
        "failedSteps": [],
    }
    assert machine.cancel(2.0) == []
    assert machine.succeeded("a", 1, 2.0) == []
    # A failed finally step does not turn a cancelled run into a failed one.
    assert machine.failed("f", 1, "boom", 3.0) == [Fail("f", 1, "boom"), verdict]
    assert machine.outcome == verdict


def test_finally_steps_start_after_the_run_timeout_which_no_longer_applies() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("f", final=True, timeout=5.0)])
    machine = RunMachine(plan, timeout=10.0)
    machine.start(0.0)
    assert machine.next_deadline() == 10.0
    reason = "the run exceeded its timeout of 10s"
    assert machine.tick(10.0) == [Cancel("a", reason, was_running=True), Dispatch("f", 1)]
    assert machine.timed_out
    assert machine.verdict == Finish(RunOutcome.FAILED, reason)
    assert machine.next_deadline() == 15.0  # f's own timer, not the spent run deadline
    assert machine.tick(12.0) == []
    assert machine.nodes["f"].phase is Phase.RUNNING
    assert machine.tick(15.0) == [
        Fail("f", 1, timeout_error(5.0)),
        Finish(RunOutcome.FAILED, reason),
    ]


def test_the_run_timeout_does_not_cut_finally_steps_short() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("f", final=True)])
    machine = RunMachine(plan, timeout=10.0)
    machine.start(0.0)
    assert machine.succeeded("a", 1, 1.0) == [Dispatch("f", 1)]
    assert machine.next_deadline() is None
    assert machine.tick(20.0) == []
    assert not machine.timed_out
    assert machine.succeeded("f", 1, 30.0) == [ALL_DONE]


def test_a_failed_finally_step_fails_a_succeeded_run() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("f", final=True)])
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.succeeded("a", 1, 1.0) == [Dispatch("f", 1)]
    assert machine.verdict == ALL_DONE
    fail, finish = machine.failed("f", 1, "boom", 2.0)
    assert fail == Fail("f", 1, "boom")
    assert isinstance(finish, Finish)
    assert finish.outcome is RunOutcome.FAILED
    assert finish.failed_node == "f"
    assert machine.outcome == finish
    assert machine.verdict == ALL_DONE  # the regular steps' outcome is kept
    assert machine.run_data() == {
        "phase": "Succeeded",
        "message": "all steps finished",
        "failedSteps": [],
    }


def test_cancel_during_the_finally_phase_does_nothing() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("f", final=True)])
    machine = RunMachine(plan)
    machine.start(0.0)
    machine.succeeded("a", 1, 1.0)
    assert machine.cancel(2.0) == []
    assert machine.nodes["f"].phase is Phase.RUNNING
    assert machine.verdict == ALL_DONE
    assert machine.succeeded("f", 1, 3.0) == [ALL_DONE]


def test_finally_steps_may_depend_on_each_other() -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("f1", final=True),
            NodeSpec("f2", ("f1", "a"), final=True, accepts={"f1": FAILED}),
            NodeSpec("f3", ("f1",), final=True),
        ]
    )
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.succeeded("a", 1, 1.0) == [Dispatch("f1", 1)]  # f2 and f3 wait for f1
    assert machine.failed("f1", 1, "boom", 2.0) == [
        Fail("f1", 1, "boom"),
        Skip("f3", "upstream step 'f1' failed"),
        Dispatch("f2", 1),
    ]
    finish = Finish(RunOutcome.FAILED, "1 finally step(s) failed: f1", "f1")
    assert machine.succeeded("f2", 1, 3.0) == [finish]


def test_a_regular_dependency_never_skips_a_finally_step() -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b", when=Condition("inputs.go")),
            NodeSpec("c", ("a",)),
            NodeSpec("f", ("a", "b", "c"), final=True),
        ]
    )
    machine = RunMachine(plan, error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR)
    assert unordered(machine.start(0.0)) == {Dispatch("a", 1), Check("b", ("go",))}
    assert machine.checked("b", {"go": False}, 1.0) == [Skip("b", "when 'inputs.go' is false")]
    assert machine.failed("a", 1, "boom", 2.0) == [
        Fail("a", 1, "boom"),
        Skip("c", "upstream step 'a' failed"),
        Dispatch("f", 1),
    ]
    assert machine.run_data() == {
        "phase": "Failed",
        "message": "1 step(s) failed: a",
        "failedSteps": ["a"],
    }
    assert machine.succeeded("f", 1, 3.0) == [Finish(RunOutcome.FAILED, "1 step(s) failed: a", "a")]


def test_a_finally_step_accepting_a_regular_failure_does_not_stop_fail_fast() -> None:
    # A finally step's dependencies on regular steps are ignored: it does not wait for
    # x's failure, so x's failure under FailFast cancels y at once.
    plan = Plan(
        [NodeSpec("x"), NodeSpec("y"), NodeSpec("f", ("x",), final=True, accepts={"x": FAILED})]
    )
    machine = RunMachine(plan)
    machine.start(0.0)
    reason = "step 'x' failed: boom"
    assert machine.failed("x", 1, "boom", 1.0) == [
        Fail("x", 1, "boom"),
        Cancel("y", reason, was_running=True),
        Dispatch("f", 1),
    ]
    assert machine.succeeded("f", 1, 2.0) == [Finish(RunOutcome.FAILED, reason, "x")]


@pytest.mark.parametrize("a_fails", [False, True])
def test_a_finally_step_may_run_only_when_the_run_failed(a_fails: bool) -> None:
    when = Condition("steps.a.phase == 'Failed'")
    plan = Plan([NodeSpec("a"), NodeSpec("notify", final=True, when=when)])
    machine = RunMachine(plan, error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR)
    machine.start(0.0)
    if a_fails:
        assert machine.failed("a", 1, "boom", 1.0) == [Fail("a", 1, "boom"), Dispatch("notify", 1)]
        assert machine.succeeded("notify", 1, 2.0) == [
            Finish(RunOutcome.FAILED, "1 step(s) failed: a", "a")
        ]
    else:
        assert machine.succeeded("a", 1, 1.0) == [
            Skip("notify", f"when {when.source!r} is false"),
            ALL_DONE,
        ]


def test_a_plan_of_finally_steps_only_runs_them_at_once() -> None:
    machine = RunMachine(Plan([NodeSpec("f", final=True)]))
    assert machine.start(0.0) == [Dispatch("f", 1)]
    assert machine.verdict == ALL_DONE
    assert machine.succeeded("f", 1, 1.0) == [ALL_DONE]


def test_a_plan_without_finally_steps_finishes_directly() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("b")])
    machine = RunMachine(plan)
    machine.start(0.0)
    reason = "step 'a' failed: boom"
    assert machine.failed("a", 1, "boom", 1.0) == [
        Fail("a", 1, "boom"),
        Cancel("b", reason, was_running=True),
        Finish(RunOutcome.FAILED, reason, "a"),
    ]
    assert machine.finished
    assert machine.outcome == machine.verdict


# -- snapshot and restore ---------------------------------------------------------------


def test_restore_while_a_check_is_unanswered_asks_it_again() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("b", ("a",), when=Condition("inputs.go"))])
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.succeeded("a", 1, 1.0) == [Check("b", ("go",))]
    copy = restored(machine, plan)
    assert copy.refresh(2.0) == [Check("b", ("go",))]
    assert copy.refresh(2.5) == []  # asked once
    assert copy.checked("b", {"go": True}, 3.0) == [Dispatch("b", 1)]
    assert copy.succeeded("b", 1, 4.0) == [ALL_DONE]


def test_restore_while_a_cleared_step_waits_for_room() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("b", when=Condition("inputs.go"))])
    machine = RunMachine(plan, max_in_flight=1)
    machine.start(0.0)
    assert machine.checked("b", {"go": True}, 1.0) == []
    copy = restored(machine, plan, max_in_flight=1)
    assert copy.refresh(2.0) == []  # no room, and no second Check
    assert copy.running == {"a"}
    assert copy.succeeded("a", 1, 3.0) == [Dispatch("b", 1)]
    assert copy.succeeded("b", 1, 4.0) == [ALL_DONE]


def test_restore_in_the_finally_phase_keeps_the_verdict() -> None:
    plan = Plan(
        [
            NodeSpec("a"),
            NodeSpec("b"),
            NodeSpec("f1", final=True, timeout=30.0),
            NodeSpec("f2", ("f1",), final=True),
        ]
    )
    machine = RunMachine(plan, timeout=100.0)
    machine.start(0.0)
    reason = "step 'a' failed: boom"
    assert machine.failed("a", 1, "boom", 1.0) == [
        Fail("a", 1, "boom"),
        Cancel("b", reason, was_running=True),
        Dispatch("f1", 1),
    ]
    copy = restored(machine, plan, timeout=100.0)
    verdict = Finish(RunOutcome.FAILED, reason, "a")
    assert copy.verdict == verdict
    assert copy.outcome is None
    assert copy.run_data() == machine.run_data()
    assert copy.running == {"f1"}
    assert copy.next_deadline() == 31.0  # f1's timer; the run timeout is spent
    assert copy.refresh(2.0) == []
    assert copy.cancel(2.0) == []
    assert copy.succeeded("f1", 1, 3.0) == [Dispatch("f2", 1)]
    assert copy.succeeded("f2", 1, 4.0) == [verdict]
