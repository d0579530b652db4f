"""Invalid graphs fail before any task runs (dataflow guide §12, execution guide §12)."""

from __future__ import annotations

from typing import Any

import pytest
from taskiq import InMemoryBroker
from taskiq.exceptions import TaskiqError

from taskiq_flow import (
    CycleError,
    DAGError,
    DataflowPipeline,
    DataflowRegistry,
    DuplicateOutputError,
    EmptyPipelineError,
    ExecutionEngine,
    MissingInputsError,
    pipeline_task,
)
from taskiq_flow.errors import DuplicateNodeError, UnknownDependencyError


def counting_tasks(broker: InMemoryBroker, runs: list[str]) -> dict[str, Any]:
    """Tasks that record every execution in ``runs``."""

    @broker.task
    @pipeline_task(output="seed")
    async def independent() -> int:  # needs nothing: would run first if anything ran
        runs.append("independent")
        return 1

    @broker.task
    @pipeline_task(output="x")
    async def make_x(y: int) -> int:
        runs.append("make_x")
        return y

    @broker.task
    @pipeline_task(output="y")
    async def make_y(x: int) -> int:
        runs.append("make_y")
        return x

    @broker.task
    @pipeline_task(output="x")
    async def other_x(seed: int) -> int:
        runs.append("other_x")
        return seed

    @broker.task
    @pipeline_task(output="raw_data")
    async def load_data(source_url: str) -> str:
        runs.append("load_data")
        return source_url

    @broker.task
    @pipeline_task(output="merged")
    async def merge(raw_data: str, config: dict[str, Any], seed: int) -> str:
        runs.append("merge")
        return raw_data

    return {
        "independent": independent,
        "make_x": make_x,
        "make_y": make_y,
        "other_x": other_x,
        "load_data": load_data,
        "merge": merge,
    }


async def test_no_dag_built(broker: InMemoryBroker) -> None:
    pipeline = DataflowPipeline(broker)

    with pytest.raises(EmptyPipelineError, match="No DAG built") as caught:
        await pipeline.kiq_dataflow(paths=["song.mp3"])

    assert isinstance(caught.value, DAGError)
    assert isinstance(caught.value, TaskiqError)
    assert "add_dataflow_task" in str(caught.value)


async def test_no_dag_built_from_an_empty_task_list(broker: InMemoryBroker) -> None:
    pipeline = DataflowPipeline.from_tasks(broker, [])

    with pytest.raises(EmptyPipelineError, match="No DAG built"):
        await pipeline.kiq_dataflow()


async def test_cycle_is_a_deadlock_naming_the_nodes(broker: InMemoryBroker) -> None:
    runs: list[str] = []
    tasks = counting_tasks(broker, runs)
    pipeline = DataflowPipeline.from_tasks(
        broker, [tasks["independent"], tasks["make_x"], tasks["make_y"]]
    )

    with pytest.raises(CycleError, match="Deadlock detected") as caught:
        await pipeline.kiq_dataflow()

    assert sorted(caught.value.cycle) == ["make_x", "make_y"]
    assert "make_x" in str(caught.value)
    assert "make_y" in str(caught.value)
    assert runs == []


def test_registry_cycle_fails_when_building(broker: InMemoryBroker) -> None:
    runs: list[str] = []
    tasks = counting_tasks(broker, runs)
    registry = DataflowRegistry()
    registry.register_task(tasks["make_x"])
    registry.register_task(tasks["make_y"])

    with pytest.raises(CycleError) as caught:
        registry.build_dag()

    assert sorted(caught.value.cycle) == ["make_x", "make_y"]


async def test_a_step_consuming_its_own_output_is_a_cycle(broker: InMemoryBroker) -> None:
    runs: list[str] = []

    @broker.task
    @pipeline_task(output="counter")
    async def increment(counter: int) -> int:
        runs.append("increment")
        return counter + 1

    pipeline = DataflowPipeline.from_tasks(broker, [increment])

    with pytest.raises(CycleError, match="Deadlock detected") as caught:
        await pipeline.kiq_dataflow(counter=1)

    assert caught.value.cycle == ["increment"]
    assert runs == []


async def test_duplicate_output(broker: InMemoryBroker) -> None:
    runs: list[str] = []
    tasks = counting_tasks(broker, runs)
    pipeline = DataflowPipeline.from_tasks(
        broker, [tasks["independent"], tasks["make_x"], tasks["other_x"]]
    )

    with pytest.raises(DuplicateOutputError) as caught:
        await pipeline.kiq_dataflow(y=1)

    assert caught.value.output == "x"
    assert caught.value.producers == ["make_x", "other_x"]
    assert "'x'" in str(caught.value)
    assert runs == []


async def test_missing_inputs_lists_names_and_consumers(broker: InMemoryBroker) -> None:
    runs: list[str] = []
    tasks = counting_tasks(broker, runs)
    pipeline = DataflowPipeline.from_tasks(
        broker, [tasks["independent"], tasks["load_data"], tasks["merge"]]
    )

    with pytest.raises(MissingInputsError) as caught:
        await pipeline.kiq_dataflow()

    assert caught.value.missing == {"config": ["merge"], "source_url": ["load_data"]}
    message = str(caught.value)
    assert "'config' (needed by merge)" in message
    assert "'source_url' (needed by load_data)" in message
    assert runs == []


async def test_missing_input_partially_given(broker: InMemoryBroker) -> None:
    runs: list[str] = []
    tasks = counting_tasks(broker, runs)
    pipeline = DataflowPipeline.from_tasks(
        broker, [tasks["independent"], tasks["load_data"], tasks["merge"]]
    )

    with pytest.raises(MissingInputsError) as caught:
        await pipeline.kiq_dataflow(source_url="s3://bucket")

    assert caught.value.missing == {"config": ["merge"]}
    assert runs == []
    # Given everything, the same pipeline runs.
    results = await pipeline.kiq_dataflow(source_url="s3://bucket", config={})
    assert results == {"seed": 1, "raw_data": "s3://bucket", "merged": "s3://bucket"}
    assert sorted(runs) == ["independent", "load_data", "merge"]


async def test_engine_checks_inputs_before_sending(broker: InMemoryBroker) -> None:
    runs: list[str] = []
    tasks = counting_tasks(broker, runs)
    registry = DataflowRegistry()
    registry.register_task(tasks["independent"])
    registry.register_task(tasks["load_data"])
    engine = ExecutionEngine(broker, registry.build_dag())

    with pytest.raises(MissingInputsError) as caught:
        await engine.execute(inputs={})

    assert caught.value.missing == {"source_url": ["load_data"]}
    assert runs == []


def test_two_steps_with_one_name(broker: InMemoryBroker) -> None:
    tasks = counting_tasks(broker, [])
    pipeline = DataflowPipeline(broker)
    pipeline.add_dataflow_task(tasks["independent"])
    pipeline.add_dataflow_task(tasks["load_data"], name="independent")

    with pytest.raises(DuplicateNodeError, match="two steps are named 'independent'"):
        pipeline.build_dag()


def test_depends_on_a_step_that_does_not_exist(broker: InMemoryBroker) -> None:
    tasks = counting_tasks(broker, [])
    pipeline = DataflowPipeline(broker)
    pipeline.add_dataflow_task(tasks["independent"], depends_on=["warm_cache"])

    with pytest.raises(UnknownDependencyError) as caught:
        pipeline.build_dag()

    assert "step 'independent' depends on 'warm_cache', which is not a step" in str(caught.value)


def test_depends_on_orders_steps_and_on_itself_is_a_cycle(broker: InMemoryBroker) -> None:
    tasks = counting_tasks(broker, [])
    pipeline = DataflowPipeline(broker)
    pipeline.add_dataflow_task(tasks["load_data"], depends_on=["independent"])
    pipeline.add_dataflow_task(tasks["independent"])
    dag = pipeline.build_dag()
    assert [node.name for node in dag.topological_sort()] == ["independent", "load_data"]
    assert dag.nodes["load_data"].dependencies == {"independent"}
    assert dag.nodes["independent"].dependents == {"load_data"}

    looped = DataflowPipeline(broker)
    looped.add_dataflow_task(tasks["independent"], depends_on=["independent"])
    with pytest.raises(CycleError) as caught:
        looped.build_dag()
    assert caught.value.cycle == ["independent"]
