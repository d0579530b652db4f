"""Control flow from Python: ``when`` and ``continue_on_failure`` on ``@pipeline_task``,
``depends_on`` outcomes, ``DataflowPipeline.finally_``, and their export to a manifest."""

from __future__ import annotations

import re
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import DataflowPipeline, pipeline_task
from taskiq_flow.errors import FinallyDependencyError, PipelineError, TaskDefinitionError
from taskiq_flow.manifests.compiler import compile_pipeline
from taskiq_flow.manifests.export import pipeline_manifest
from taskiq_flow.manifests.models import PipelineSpec


def review_pipeline(broker: InMemoryBroker) -> DataflowPipeline:
    """score → publish (when high) | warn (when low); fragile (continues on failure) →
    handle (on its failure); a finally step reporting the run."""

    @broker.task
    @pipeline_task(output="score")
    def score(number: int) -> float:
        return number / 10

    @broker.task
    @pipeline_task(output="published", when="outputs.score > 0.5")
    def publish(score: float) -> str:
        return f"published {score}"

    @broker.task
    @pipeline_task(output="warning", when="outputs.score <= 0.5")
    def warn(score: float) -> str:
        return "low score"

    @broker.task
    @pipeline_task(output="broke", continue_on_failure=True)
    def fragile(number: int) -> int:
        raise RuntimeError(f"fragile {number}")

    @broker.task
    @pipeline_task(output="handled")
    def handle(broke: int | None) -> str:
        return f"handled {broke}"

    @broker.task
    @pipeline_task(output="summary")
    def summary(run: dict[str, Any], published: str | None) -> dict[str, Any]:
        return {"phase": run["phase"], "failed": run["failedSteps"], "published": published}

    pipeline = DataflowPipeline(broker, name="review")
    for task in (score, publish, warn, fragile):
        pipeline.add_dataflow_task(task)
    pipeline.add_dataflow_task(handle, depends_on=[{"step": "fragile", "on": ["Failed"]}])
    pipeline.finally_(summary)
    return pipeline


async def test_a_run_takes_each_branch_its_conditions_choose(broker: InMemoryBroker) -> None:
    pipeline = review_pipeline(broker)
    outputs = await pipeline.kiq_dataflow(number=7)
    assert outputs == {
        "score": 0.7,
        "published": "published 0.7",
        "handled": "handled None",
        "summary": {"phase": "Succeeded", "failed": ["fragile"], "published": "published 0.7"},
    }
    steps = pipeline.get_execution_report().steps
    assert steps["warn"].status == "Skipped"
    assert steps["warn"].error == "when 'outputs.score <= 0.5' is false"
    assert steps["fragile"].status == "Failed"
    assert steps["summary"].status == "Succeeded"


async def test_the_other_branch_and_a_finally_step_seeing_a_missing_output(
    broker: InMemoryBroker,
) -> None:
    pipeline = review_pipeline(broker)
    outputs = await pipeline.kiq_dataflow(number=2)
    assert outputs["warning"] == "low score"
    assert "published" not in outputs
    assert outputs["summary"] == {"phase": "Succeeded", "failed": ["fragile"], "published": None}


async def test_a_failed_finally_step_fails_the_run(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="value")
    def work(number: int) -> int:
        return number

    @broker.task
    @pipeline_task(output="cleaned")
    def cleanup(value: int) -> int:
        raise OSError(f"cannot clean {value}")

    pipeline = DataflowPipeline(broker).add_dataflow_task(work).finally_(cleanup)
    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_dataflow(number=3)
    assert caught.value.failed_node == "cleanup"
    assert caught.value.partial_results == {"value": 3}


def test_an_invalid_condition_is_refused_when_the_task_is_added() -> None:
    broker = InMemoryBroker()

    @broker.task
    @pipeline_task(output="value", when="outputs.x >")
    def broken(number: int) -> int:
        return number

    refused = re.escape("invalid when condition 'outputs.x >'")
    with pytest.raises(TaskDefinitionError, match=refused):
        DataflowPipeline(broker).add_dataflow_task(broken)


def test_an_unknown_outcome_is_refused() -> None:
    broker = InMemoryBroker()

    @broker.task
    @pipeline_task(output="value")
    def step(number: int) -> int:
        return number

    with pytest.raises(TaskDefinitionError, match="'Done' is not a valid Phase"):
        DataflowPipeline(broker).add_dataflow_task(
            step, depends_on=[{"step": "other", "on": ["Done"]}]
        )


def test_a_regular_step_cannot_depend_on_a_finally_step() -> None:
    broker = InMemoryBroker()

    @broker.task
    @pipeline_task(output="cleaned")
    def cleanup(number: int) -> int:
        return number

    @broker.task
    @pipeline_task(output="after")
    def after(cleaned: int) -> int:
        return cleaned

    pipeline = DataflowPipeline(broker).finally_(cleanup).add_dataflow_task(after)
    with pytest.raises(FinallyDependencyError, match="'after' depends on 'cleanup'"):
        pipeline.build_dag()


def test_export_writes_the_control_flow_and_it_compiles_back() -> None:
    manifest = pipeline_manifest(review_pipeline(InMemoryBroker()))
    spec = manifest["spec"]
    steps = {step["name"]: step for step in spec["steps"]}
    assert steps["publish"]["when"] == "outputs.score > 0.5"
    assert steps["fragile"]["continueOnFailure"] is True
    assert steps["handle"]["dependsOn"] == [{"step": "fragile", "on": ["Failed"]}]
    assert [step["name"] for step in spec["finally"]] == ["summary"]
    assert spec["finally"][0]["inputs"] == ["run", "published"]
    compiled = compile_pipeline(PipelineSpec.model_validate(spec))
    nodes = compiled.dag.nodes
    assert nodes["summary"].final
    assert nodes["publish"].when is not None
    assert nodes["handle"].accepts == {"fragile": frozenset({"Failed"})}
