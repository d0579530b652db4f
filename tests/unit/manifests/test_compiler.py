"""Compiling a Pipeline spec into the library's DAG, in both modes, and running it."""

from __future__ import annotations

from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import ExecutionEngine
from taskiq_flow.dataflow.dag import POSITIONAL_ITEM
from taskiq_flow.errors import ErrorHandlingMode
from taskiq_flow.manifests.compiler import (
    CompiledPipeline,
    TaskResolver,
    compile_pipeline,
    retry_policy,
)
from taskiq_flow.manifests.models import Pipeline, PipelineRunSpec, RetrySpec
from taskiq_flow.manifests.problems import ManifestError
from tests.unit.manifests.conftest import pipeline_doc, task_name
from tests.unit.manifests.manifest_tasks import PREFIX


def _compile(steps: list[dict[str, Any]], *, resolve: bool = True, **spec: Any) -> CompiledPipeline:
    pipeline = Pipeline.model_validate(pipeline_doc(steps, **spec), by_name=False)
    resolver = TaskResolver(pipeline.spec.worker.modules) if resolve else None
    return compile_pipeline(pipeline.spec, name="test", resolver=resolver)


def _problems(steps: list[dict[str, Any]], **kwargs: Any) -> dict[str, str]:
    """``{path: message}``; several problems at one path are joined by newlines."""
    with pytest.raises(ManifestError) as exc:
        _compile(steps, **kwargs)
    found: dict[str, str] = {}
    for problem in exc.value.problems:
        found[problem.path] = "\n".join(filter(None, [found.get(problem.path), problem.message]))
    return found


async def _run(compiled: CompiledPipeline, **inputs: Any) -> dict[str, Any]:
    broker = InMemoryBroker()
    await broker.startup()
    try:
        engine = ExecutionEngine(broker, compiled.dag, max_parallel=4)
        return await engine.execute(compiled.run_inputs(inputs))
    finally:
        await broker.shutdown()


class TestDataflow:
    def test_steps_become_nodes_with_every_setting(self) -> None:
        compiled = _compile(
            [
                {
                    "name": "load",
                    "task": task_name("load"),
                    "output": "numbers",
                    "inputs": ["path"],
                    "retries": {"limit": 2, "delaySeconds": 0.5},
                    "timeoutSeconds": 9,
                },
                {
                    "name": "sum",
                    "task": task_name("total"),
                    "inputs": ["numbers"],
                    "args": {"offset": 10},
                    "dependsOn": ["load"],
                },
            ],
            inputs=[{"name": "path"}],
        )
        load, total = compiled.dag.nodes["load"], compiled.dag.nodes["sum"]
        assert load.outputs == ("numbers",)
        assert load.inputs == ("path",)
        assert load.retry.retries == 2
        assert load.retry.delay == 0.5
        assert load.timeout == 9
        assert load.task is not None
        assert total.outputs == ("sum",)
        assert total.args == {"offset": 10}
        assert total.depends_on == ("load",)
        assert [[n.name for n in level] for level in compiled.dag.levels] == [["load"], ["sum"]]
        assert compiled.dag.external_inputs == ["path"]

    def test_inputs_default_to_the_required_parameters(self) -> None:
        compiled = _compile(
            [
                {"name": "load", "task": task_name("load"), "output": "numbers"},
                {"name": "sum", "task": task_name("total")},
            ],
            inputs=[{"name": "path"}],
        )
        assert compiled.dag.nodes["load"].inputs == ("path",)
        assert compiled.dag.nodes["sum"].inputs == ("numbers",)
        assert dict(compiled.dag.nodes["sum"].optional_inputs) == {"offset": 0}

    async def test_map_and_filter_run_per_item(self) -> None:
        compiled = _compile(
            [
                {
                    "name": "load",
                    "task": task_name("load"),
                    "output": "numbers",
                    "inputs": ["path"],
                },
                {
                    "name": "doubled",
                    "task": task_name("double"),
                    "map": {"over": "numbers", "maxParallel": 2},
                },
                {
                    "name": "evens",
                    "task": task_name("is_even"),
                    "filter": {"over": "numbers", "as": "number"},
                },
                {"name": "sum", "task": task_name("total"), "inputs": ["numbers"]},
            ],
            inputs=[{"name": "path", "default": "abcd"}],
        )
        node = compiled.dag.nodes["doubled"]
        # Without map.as the item is the first positional argument, on every driver.
        assert (node.kind, node.map_over, node.map_param, node.max_parallel) == (
            "map",
            "numbers",
            POSITIONAL_ITEM,
            2,
        )
        assert compiled.dag.nodes["evens"].map_param == "number"
        assert compiled.dag.nodes["evens"].filter_items
        outputs = await _run(compiled)
        assert outputs == {"numbers": [4, 2, 3], "doubled": [8, 4, 6], "evens": [4, 2], "sum": 9}

    def test_a_map_needs_over_in_dataflow_mode(self) -> None:
        problems = _problems([{"name": "d", "task": task_name("double"), "map": {}}])
        assert "map.over must name the list" in problems["spec.steps[0].map"]

    def test_a_custom_task_name_resolves(self) -> None:
        compiled = _compile(
            [{"name": "r", "task": "custom-name", "inputs": ["value"]}], inputs=[{"name": "value"}]
        )
        assert compiled.tasks["r"] is not None


class TestSequential:
    async def test_each_step_gets_the_previous_output_first(self) -> None:
        compiled = _compile(
            [
                {"name": "load", "task": task_name("load")},
                {"name": "evens", "task": task_name("is_even"), "filter": {}},
                {"name": "doubled", "task": task_name("double"), "map": {"maxParallel": 1}},
                {"name": "sum", "task": task_name("total"), "args": {"offset": 1}},
                {"name": "scaled", "task": task_name("scale"), "args": {"factor": 3}},
            ],
            mode="sequential",
            inputs=[{"name": "path"}],
        )
        nodes = compiled.dag.nodes
        assert nodes["load"].inputs == ("path",)
        # The previous output, and each item, go as the first positional argument: a
        # driver without the task code (the operator) passes them the same way.
        assert (nodes["evens"].map_over, nodes["evens"].map_param) == ("load", POSITIONAL_ITEM)
        assert nodes["doubled"].map_over == "evens"
        assert (nodes["sum"].first_arg, nodes["sum"].inputs) == ("doubled", ("doubled",))
        assert nodes["scaled"].first_arg == "sum"
        assert [len(level) for level in compiled.dag.levels] == [1, 1, 1, 1, 1]
        outputs = await _run(compiled, path="abcdef")
        assert outputs["evens"] == [6, 2]
        assert outputs["doubled"] == [12, 4]
        assert outputs["sum"] == 17
        assert outputs["scaled"] == 51
        assert compiled.final_output == "scaled"

    async def test_a_first_map_goes_over_the_only_input(self) -> None:
        compiled = _compile(
            [
                {"name": "doubled", "task": task_name("double"), "map": {}},
                {"name": "sum", "task": task_name("total")},
            ],
            mode="sequential",
            inputs=[{"name": "values"}],
        )
        assert (await _run(compiled, values=[1, 2]))["sum"] == 6

    def test_a_task_without_parameters_cannot_follow(self) -> None:
        problems = _problems(
            [
                {"name": "a", "task": task_name("load")},
                {"name": "b", "task": task_name("no_params")},
            ],
            mode="sequential",
            inputs=[{"name": "path"}],
        )
        assert (
            "takes no parameter to receive the previous step's output"
            in problems["spec.steps[1].task"]
        )

    def test_without_the_code_the_graph_is_still_checked(self) -> None:
        compiled = _compile(
            [{"name": "a", "task": "nowhere:a"}, {"name": "b", "task": "nowhere:b", "map": {}}],
            mode="sequential",
            resolve=False,
        )
        assert compiled.dag.nodes["b"].map_over == "a"


class TestGraphErrors:
    def test_every_problem_is_reported_with_its_path(self) -> None:
        problems = _problems(
            [
                {"name": "a", "task": task_name("double"), "output": "x", "inputs": ["value"]},
                {"name": "b", "task": task_name("double"), "output": "x", "inputs": ["value"]},
                {
                    "name": "c",
                    "task": task_name("double"),
                    "inputs": ["nothing"],
                    "dependsOn": ["zz"],
                },
                {"name": "d", "task": f"{PREFIX}:dobule", "inputs": ["value"]},
            ],
            inputs=[{"name": "value"}],
        )
        assert problems["spec.steps[1].output"] == (
            "output 'x' is produced by more than one task: a, b"
        )
        assert (
            problems["spec.steps[2].dependsOn[0]"]
            == "step 'c' depends on 'zz', which is not a step"
        )
        assert (
            "task 'tests.unit.manifests.manifest_tasks:double' has no parameter 'nothing'"
            in (problems["spec.steps[2].inputs[0]"])
        )
        assert problems["spec.steps[3].task"].endswith(f"did you mean '{PREFIX}:double'?")

    def test_an_input_nothing_produces(self) -> None:
        problems = _problems([{"name": "a", "task": task_name("double"), "inputs": ["value"]}])
        assert problems["spec.steps[0].inputs[0]"] == (
            "no step produces 'value' (needed by step 'a') and spec.inputs does not declare it"
        )

    def test_a_cycle(self) -> None:
        problems = _problems(
            [
                {"name": "a", "task": "m:f", "output": "x", "inputs": ["y"]},
                {"name": "b", "task": "m:g", "output": "y", "inputs": ["x"]},
            ],
            resolve=False,
        )
        (message,) = problems.values()
        assert message in (
            "Deadlock detected: circular dependency a → b → a",
            "Deadlock detected: circular dependency b → a → b",
        )

    def test_duplicate_step_names(self) -> None:
        problems = _problems(
            [{"name": "a", "task": "m:f"}, {"name": "a", "task": "m:g", "output": "z"}],
            resolve=False,
        )
        assert (
            problems["spec.steps[1].name"]
            == "two steps are named 'a'; give one of them another name"
        )

    def test_an_output_named_like_an_input(self) -> None:
        problems = _problems(
            [{"name": "a", "task": "m:f", "output": "x"}], resolve=False, inputs=[{"name": "x"}]
        )
        assert "has the name of a pipeline input" in problems["spec.steps[0].output"]

    def test_a_required_parameter_the_step_does_not_pass(self) -> None:
        problems = _problems(
            [{"name": "s", "task": task_name("scale"), "inputs": ["amount"]}],
            inputs=[{"name": "amount"}],
        )
        assert "needs 'factor', which step 's' does not pass" in problems["spec.steps[0]"]

    def test_a_module_that_does_not_exist(self) -> None:
        doc = pipeline_doc([{"name": "a", "task": "m:f"}])
        doc["spec"]["worker"]["modules"] = ["no_such_module_anywhere"]
        pipeline = Pipeline.model_validate(doc, by_name=False)
        with pytest.raises(ManifestError) as exc:
            compile_pipeline(pipeline.spec, resolver=TaskResolver(pipeline.spec.worker.modules))
        (problem,) = exc.value.problems
        assert problem.path == "spec.worker.modules[0]"
        assert "no such module" in problem.message


class TestRunSettings:
    def test_run_overrides_win(self) -> None:
        compiled = _compile(
            [{"name": "a", "task": "m:f"}],
            resolve=False,
            parallelism=3,
            errorMode="SkipFailed",
            timeoutSeconds=5,
        )
        assert compiled.settings().parallelism == 3
        assert compiled.settings().error_mode is ErrorHandlingMode.SKIP_FAILED
        run = PipelineRunSpec.model_validate(
            {
                "pipelineRef": {"name": "x"},
                "parallelism": 7,
                "errorMode": "ContinueOnError",
                "timeoutSeconds": 50,
            },
            by_name=False,
        )
        settings = compiled.settings(run)
        assert (settings.parallelism, settings.error_mode, settings.timeout) == (
            7,
            ErrorHandlingMode.CONTINUE_ON_ERROR,
            50,
        )

    def test_inputs_merge_defaults_run_and_command_line(self) -> None:
        compiled = _compile(
            [{"name": "a", "task": "m:f", "inputs": ["x", "y"]}],
            resolve=False,
            inputs=[{"name": "x"}, {"name": "y", "default": 1}],
        )
        assert compiled.run_inputs({"x": 1}, {"x": 2}) == {"x": 2, "y": 1}
        with pytest.raises(ManifestError) as exc:
            compiled.run_inputs({"z": 1})
        messages = [p.message for p in exc.value.problems]
        assert messages[0] == "unknown input 'z'; the pipeline's inputs are: x, y"
        assert messages[1].startswith("required input 'x' is not given")

    def test_retry_spec_becomes_a_policy_without_a_total_time_cap(self) -> None:
        policy = retry_policy(RetrySpec(limit=3, delay_seconds=1, backoff=2, max_delay_seconds=60))
        assert (policy.retries, policy.delay, policy.backoff, policy.max_delay) == (3, 1, 2, 60)
        assert policy.max_retry_time is None
        assert retry_policy(None).retries == 0
        assert policy.jitter  # on unless a manifest turns it off

    def test_retry_jitter_and_max_duration_reach_the_policy(self) -> None:
        spec = RetrySpec.model_validate(
            {"limit": 5, "delaySeconds": 2, "jitter": False, "maxDurationSeconds": 30}
        )
        policy = retry_policy(spec)
        assert (policy.jitter, policy.max_retry_time) == (False, 30)
        # Without jitter the wait is exactly the formula's, whatever the random draw.
        assert policy.delay_before(3, 0.0) == policy.delay_before(3, 0.99) == 8.0
        assert retry_policy(RetrySpec(limit=1)).delay_before(1, 0.0) == 0.5  # w/2 at worst


def test_an_item_that_would_not_reach_its_parameter_asks_for_map_as() -> None:
    # The item goes as the first positional argument: with `amount` set by args, it would
    # land on `amount` too.
    problems = _problems(
        [
            {
                "name": "scaled",
                "task": task_name("scale"),
                "map": {"over": "numbers"},
                "args": {"amount": 2},
            }
        ],
        inputs=[{"name": "numbers"}],
    )
    assert "set map.as" in problems["spec.steps[0].map"]


def test_a_previous_output_that_would_land_on_a_set_parameter_is_refused() -> None:
    problems = _problems(
        [
            {"name": "load", "task": task_name("load")},
            {"name": "scaled", "task": task_name("scale"), "args": {"amount": 2}},
        ],
        mode="sequential",
        inputs=[{"name": "path"}],
    )
    assert "first argument" in problems["spec.steps[1].task"]
