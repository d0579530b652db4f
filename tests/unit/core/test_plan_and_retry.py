"""Plans (validation, order, levels) and retry policies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskiq_flow.core import Dispatch, NodeSpec, Plan, RetryPolicy, RunMachine, RunOutcome
from taskiq_flow.errors import CycleError, DAGError, DuplicateNodeError, UnknownDependencyError

# -- plans -----------------------------------------------------------------------------


def assert_is_cycle(plan_deps: dict[str, tuple[str, ...]], cycle: list[str]) -> None:
    """Each step on ``cycle`` feeds the next one, and the last feeds the first."""
    assert cycle
    assert len(set(cycle)) == len(cycle)
    for producer, consumer in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        assert producer in plan_deps[consumer], f"{consumer} does not depend on {producer}"


def test_cycle_error_names_the_steps_on_the_cycle() -> None:
    deps = {"x": (), "a": ("c", "x"), "b": ("a",), "c": ("b",), "d": ("c",)}
    with pytest.raises(CycleError) as caught:
        Plan(NodeSpec(name, d) for name, d in deps.items())
    error = caught.value
    assert isinstance(error, DAGError)
    assert sorted(error.cycle) == ["a", "b", "c"]  # not d, which only hangs off the cycle
    assert_is_cycle(deps, error.cycle)
    path = " → ".join([*error.cycle, error.cycle[0]])
    assert str(error) == f"Deadlock detected: circular dependency {path}"


def test_a_two_step_cycle() -> None:
    with pytest.raises(CycleError) as caught:
        Plan.from_mapping({"a": ["b"], "b": ["a"]})
    assert sorted(caught.value.cycle) == ["a", "b"]
    assert "a → b → a" in str(caught.value) or "b → a → b" in str(caught.value)


def test_a_step_depending_on_itself_is_a_cycle() -> None:
    with pytest.raises(CycleError) as caught:
        Plan.from_mapping({"a": [], "b": ["a", "b"]})
    assert caught.value.cycle == ["b"]
    assert str(caught.value) == "Deadlock detected: circular dependency b → b"


def test_duplicate_step_names_are_refused() -> None:
    with pytest.raises(DuplicateNodeError) as caught:
        Plan([NodeSpec("a"), NodeSpec("b"), NodeSpec("a", ("b",))])
    assert caught.value.name == "a"
    assert "'a'" in str(caught.value)


def test_unknown_dependencies_are_refused() -> None:
    with pytest.raises(UnknownDependencyError) as caught:
        Plan.from_mapping({"a": [], "b": ["a", "ghost"]})
    assert caught.value.node == "b"
    assert caught.value.missing_dependency == "ghost"
    assert str(caught.value) == "step 'b' depends on 'ghost', which is not a step"


def test_diamond_levels_and_order() -> None:
    plan = Plan.from_mapping({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]})
    assert plan.order == ("a", "b", "c", "d")
    assert plan.levels == [["a"], ["b", "c"], ["d"]]
    assert plan.level == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert plan.deps("d") == ("b", "c")
    assert plan.dependents["a"] == ("b", "c")
    assert plan.descendants("a") == ["b", "c", "d"]
    assert plan.descendants("d") == []
    assert len(plan) == 4


def test_order_is_topological_when_declared_backwards() -> None:
    plan = Plan.from_mapping({"d": ["b", "c"], "c": ["a"], "b": ["a"], "a": []})
    position = {name: i for i, name in enumerate(plan.order)}
    assert plan.order[0] == "a"
    assert plan.order[-1] == "d"
    for name in "bcd":
        assert all(position[dep] < position[name] for dep in plan.deps(name))
    assert plan.levels == [["a"], ["c", "b"], ["d"]]  # within a level, plan order


def test_independent_steps_keep_declaration_order() -> None:
    plan = Plan.from_mapping({"z": [], "m": [], "a": []})
    assert plan.order == ("z", "m", "a")
    assert plan.levels == [["z", "m", "a"]]


def test_an_empty_plan() -> None:
    plan = Plan([])
    assert plan.order == ()
    assert plan.levels == []
    assert len(plan) == 0


def test_a_dependency_listed_twice_counts_once() -> None:
    plan = Plan([NodeSpec("a"), NodeSpec("b", ("a", "a"))])
    assert plan.dependents["a"] == ("b",)
    machine = RunMachine(plan)
    machine.start(0.0)
    assert machine.succeeded("a", 1, 1.0) == [Dispatch("b", 1)]
    assert machine.succeeded("b", 1, 2.0)[-1].outcome is RunOutcome.SUCCEEDED  # type: ignore[union-attr]


N = 10_000


def test_a_10000_step_chain_builds_and_runs_without_recursion() -> None:
    deps = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(N)}
    plan = Plan.from_mapping(deps)
    assert plan.order == tuple(f"n{i}" for i in range(N))
    assert len(plan.levels) == N
    assert plan.level[f"n{N - 1}"] == N - 1
    assert len(plan.descendants("n0")) == N - 1
    machine = RunMachine(plan)
    actions = machine.start(0.0)
    for i in range(N):
        assert actions[0] == Dispatch(f"n{i}", 1)
        actions = machine.succeeded(f"n{i}", 1, float(i))
    assert actions[-1].outcome is RunOutcome.SUCCEEDED  # type: ignore[union-attr]


def test_a_10000_step_cycle_is_reported_without_recursion() -> None:
    deps = {f"n{i}": [f"n{(i - 1) % N}"] for i in range(N)}
    with pytest.raises(CycleError) as caught:
        Plan.from_mapping(deps)
    assert len(caught.value.cycle) == N
    assert_is_cycle({k: tuple(v) for k, v in deps.items()}, caught.value.cycle)


def test_a_10000_step_wide_graph_builds() -> None:
    deps: dict[str, list[str]] = {"root": []}
    deps.update({f"w{i}": ["root"] for i in range(N)})
    deps["sink"] = [f"w{i}" for i in range(N)]
    plan = Plan.from_mapping(deps)
    assert [len(level) for level in plan.levels] == [1, N, 1]
    assert plan.order[0] == "root"
    assert plan.order[-1] == "sink"
    machine = RunMachine(plan, max_in_flight=100)
    machine.start(0.0)
    assert len(machine.succeeded("root", 1, 1.0)) == 100


# -- retry policies --------------------------------------------------------------------


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.retries == 0
    assert policy.max_attempts == 1
    assert policy.jitter is True
    assert policy.max_retry_time == 300.0
    assert policy.next_retry_at(1, 0.0, 0.0, 0.5) is None


def test_delay_without_jitter_is_exponential() -> None:
    policy = RetryPolicy(retries=5, delay=1.5, backoff=2.0, jitter=False)
    assert [policy.delay_before(n, 0.9) for n in range(1, 5)] == [1.5, 3.0, 6.0, 12.0]
    constant = RetryPolicy(retries=5, delay=2.0, backoff=1.0, jitter=False)
    assert [constant.delay_before(n, 0.0) for n in range(1, 4)] == [2.0, 2.0, 2.0]


def test_jitter_scales_the_delay_by_half_to_one() -> None:
    policy = RetryPolicy(retries=3, delay=4.0, backoff=2.0, jitter=True)
    assert policy.delay_before(1, 0.0) == 2.0
    assert policy.delay_before(1, 0.5) == 3.0
    assert policy.delay_before(2, 0.0) == 4.0
    assert 7.99 < policy.delay_before(2, 0.9999) < 8.0


@settings(max_examples=200)
@given(
    retry=st.integers(1, 20),
    rand=st.floats(0.0, 1.0, exclude_max=True),
    delay=st.floats(0.0, 100.0),
    backoff=st.floats(1.0, 4.0),
    max_delay=st.none() | st.floats(0.0, 1000.0),
)
def test_jittered_delay_never_exceeds_the_nominal_one(
    retry: int, rand: float, delay: float, backoff: float, max_delay: float | None
) -> None:
    jittered = RetryPolicy(delay=delay, backoff=backoff, max_delay=max_delay, jitter=True)
    plain = RetryPolicy(delay=delay, backoff=backoff, max_delay=max_delay, jitter=False)
    nominal = plain.delay_before(retry, rand)
    assert nominal / 2 <= jittered.delay_before(retry, rand) <= nominal
    if max_delay is not None:
        assert nominal <= max_delay


def test_max_delay_caps_the_wait() -> None:
    policy = RetryPolicy(retries=5, delay=1.0, backoff=10.0, max_delay=5.0, jitter=False)
    assert [policy.delay_before(n, 0.0) for n in range(1, 5)] == [1.0, 5.0, 5.0, 5.0]
    jittered = RetryPolicy(retries=5, delay=1.0, backoff=10.0, max_delay=5.0, jitter=True)
    assert jittered.delay_before(3, 0.0) == 2.5


def test_next_retry_at_until_the_retries_run_out() -> None:
    policy = RetryPolicy(retries=2, delay=1.0, backoff=2.0, jitter=False, max_retry_time=None)
    assert policy.max_attempts == 3
    assert policy.next_retry_at(1, 0.0, 10.0, 0.3) == 11.0
    assert policy.next_retry_at(2, 0.0, 20.0, 0.3) == 22.0
    assert policy.next_retry_at(3, 0.0, 30.0, 0.3) is None
    assert RetryPolicy(retries=0).next_retry_at(1, 0.0, 0.0, 0.0) is None


def test_next_retry_at_respects_max_retry_time() -> None:
    policy = RetryPolicy(retries=9, delay=10.0, backoff=1.0, jitter=False, max_retry_time=30.0)
    assert policy.next_retry_at(1, 0.0, 20.0, 0.0) == 30.0  # exactly at the limit is allowed
    assert policy.next_retry_at(1, 0.0, 20.5, 0.0) is None
    assert policy.next_retry_at(1, 100.0, 120.0, 0.0) == 130.0  # measured from first start
    unlimited = RetryPolicy(retries=9, delay=10.0, jitter=False, max_retry_time=None)
    assert unlimited.next_retry_at(1, 0.0, 1e6, 0.0) == 1e6 + 10.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retries": -1}, "retries must be >= 0"),
        ({"delay": -0.5}, "retry delay must be >= 0"),
        ({"backoff": 0.5}, "retry backoff must be >= 1"),
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=25).flatmap(
        lambda size: st.tuples(
            st.just(size),
            st.lists(st.lists(st.integers(0, size - 1), max_size=4), min_size=size, max_size=size),
        )
    )
)
def test_a_plan_from_positions_is_the_plan_from_names(graph: tuple[int, list[list[int]]]) -> None:
    """``Plan.numbered`` (what the dataflow DAG uses) gives exactly the plan ``Plan(specs)``
    builds from names: same order, indices, levels and dependents."""
    size, raw = graph
    # Only edges to earlier steps (acyclic), in the given order, without repeats.
    upstream = [list(dict.fromkeys(d for d in deps if d < i)) for i, deps in enumerate(raw)]
    specs = [NodeSpec(f"s{i}", tuple(f"s{d}" for d in deps)) for i, deps in enumerate(upstream)]
    by_name = Plan(specs)
    by_number = Plan.numbered({spec.name: spec for spec in specs}, upstream)
    assert by_number.order == by_name.order
    assert by_number.positions == tuple(int(name[1:]) for name in by_name.order)
    assert by_number.index == by_name.index
    assert by_number.level == by_name.level
    assert by_number.levels == by_name.levels
    assert by_number.dependents == by_name.dependents
    assert [by_number.index[name] for name in by_number.order] == list(range(size))


def test_a_plan_from_positions_still_names_a_cycle() -> None:
    specs = {
        name: NodeSpec(name, deps) for name, deps in [("a", ("c",)), ("b", ("a",)), ("c", ("b",))]
    }
    with pytest.raises(CycleError) as caught:
        Plan.numbered(specs, [[2], [0], [1]])
    assert sorted(caught.value.cycle) == ["a", "b", "c"]
