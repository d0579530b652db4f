"""Building a sequential pipeline: what it accepts and what it refuses before any run."""

from __future__ import annotations

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import Pipeline, UnknownTaskError
from tests.sequential import seq_tasks as st


def test_steps_are_recorded_by_task_name_in_order() -> None:
    pipeline = (
        Pipeline(InMemoryBroker())
        .call_next(st.numbers)
        .map(st.double, max_parallel=4)
        .filter(st.is_even)
        .group(st.total, st.largest)
        .call_next(st.add_one, param_name="value")
    )

    assert [(s.kind, s.name) for s in pipeline.steps] == [
        ("call", "numbers"),
        ("map", "double"),
        ("filter", "is_even"),
        ("group", "group(total, largest)"),
        ("call", "add_one"),
    ]
    assert pipeline.steps[1].max_parallel == 4
    assert pipeline.steps[4].param == "value"


def test_the_spec_travels_as_json_unchanged() -> None:
    pipeline = (
        Pipeline(InMemoryBroker())
        .on_error("continue")
        .with_retry(max_attempts=4, delay=0.5, backoff=3)
        .with_timeout(12)
        .with_context(enable=False)
        .call_next(st.flaky, param_name="value", key="k", failures=1)
        .map(st.double, max_parallel=2)
    )
    spec = pipeline.spec

    assert type(spec).from_json(spec.to_json()) == spec
    assert spec.retry_policy.retries == 3
    assert spec.timeout == 12
    assert not spec.context


def test_a_pipeline_id_is_given_or_made() -> None:
    assert Pipeline(InMemoryBroker(), pipeline_id="nightly").pipeline_id == "nightly"
    assert len(Pipeline(InMemoryBroker()).pipeline_id) == 32


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: p.on_error("ignore"), "on_error takes one of"),
        (lambda p: p.with_retry(max_attempts=0), "max_attempts must be"),
        (lambda p: p.with_timeout(0), "timeout must be positive"),
        (lambda p: p.map(st.double, max_parallel=0), "max_parallel must be"),
        (lambda p: p.group(), "at least one task"),
    ],
    ids=["unknown-policy", "no-attempts", "zero-timeout", "zero-parallel", "empty-group"],
)
def test_bad_options_are_refused_at_once(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(Pipeline(InMemoryBroker()))  # type: ignore[operator]


async def test_an_empty_pipeline_cannot_start() -> None:
    with pytest.raises(ValueError, match="no steps"):
        await Pipeline(InMemoryBroker()).kiq(1)


async def test_an_in_process_broker_refuses_an_unknown_task_at_kiq() -> None:
    # A step may name its task; across processes the worker reports an unknown name
    # (test_across_processes), in one process kiq can tell at once.
    pipeline = Pipeline(InMemoryBroker()).call_next("tests.sequential:no_such_task")

    with pytest.raises(UnknownTaskError, match="no_such_task"):
        await pipeline.kiq(1)


def test_with_tracking_and_with_hooks_keep_what_they_are_given() -> None:
    tracking, hooks = object(), object()
    pipeline = Pipeline(InMemoryBroker()).with_tracking(tracking).with_hooks(hooks)

    assert pipeline.tracking is tracking
    assert pipeline.hooks is hooks
