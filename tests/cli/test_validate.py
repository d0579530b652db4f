"""``taskiq-flow validate``: every problem, each with file, document and field path."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import EXAMPLES, ROOT, taskiq_flow

EXAMPLE_MANIFESTS = sorted(EXAMPLES.glob("*/*.yaml"))

BROKEN = """\
apiVersion: flow.taskiq.dev/v1alpha1
kind: Pipeline
metadata: {name: broken}
spec:
  worker: {modules: [tasks]}
  inputs: [{name: paths}]
  steps:
    - name: extract
      task: tasks:extract_audio
      output: audio_features
      inputs: [paths]
      retries: {limit: 2, delay: 1}
    - name: mir
      task: tasks:compute_mir
      output: audio_features
      inputs: [audio_features]
    - name: tags
      task: tasks:generate_tags
      inputs: [mir_features]
      dependsOn: [extrakt]
---
apiVersion: flow.taskiq.dev/v1alpha1
kind: PipelineRun
metadata: {name: run-1}
spec:
  pipelineRef: {name: audio-analysis}
  pipelineSpec: {worker: {modules: [tasks]}, steps: [{name: a, task: tasks:extract_audio}]}
"""


def test_the_examples_are_valid() -> None:
    assert len(EXAMPLE_MANIFESTS) >= 6
    result = taskiq_flow("validate", *EXAMPLE_MANIFESTS)
    assert result.code == 0, result.output
    assert result.stderr.startswith("valid: ")
    assert "Pipeline/audio-analysis, PipelineRun/audio-analysis-*" in result.stderr


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = taskiq_flow("validate", path, cwd=ROOT)
    assert result.code == 2
    lines = result.stdout.splitlines()
    assert lines == [
        f"{path}: Pipeline/broken: spec.steps[0].retries.delay: unknown field 'delay'; did you "
        "mean 'delaySeconds'? (line 12, column 27)",
        f"{path}: PipelineRun/run-1: spec: give exactly one of pipelineRef and pipelineSpec "
        "(line 25, column 1)",
    ]


def test_graph_problems_once_the_schema_is_right(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(BROKEN.split("---")[0].replace(", delay: 1", ""))
    # The task module is not importable from here: a warning, and the graph is checked.
    result = taskiq_flow("validate", path, cwd=tmp_path)
    assert result.code == 2
    assert result.stdout.splitlines() == [
        f"{path}: Pipeline/broken: spec.worker.modules[0]: warning: cannot import module "
        "'tasks': no such module; task names not checked (line 5, column 22)",
        f"{path}: Pipeline/broken: spec.steps[1].output: output 'audio_features' is produced by "
        "more than one task: extract, mir (line 15, column 7)",
        f"{path}: Pipeline/broken: spec.steps[2].inputs[0]: no step produces 'mir_features' "
        "(needed by step 'tags') and spec.inputs does not declare it (line 19, column 16)",
        f"{path}: Pipeline/broken: spec.steps[2].dependsOn[0]: step 'tags' depends on 'extrakt', "
        "which is not a step (line 20, column 19)",
    ]
    assert "1 problem" not in result.stderr
    assert "3 problem(s) in 1 file(s)" in result.stderr


def test_task_names_are_checked_when_the_modules_import(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    text = (EXAMPLES / "audio_analysis" / "pipeline.yaml").read_text()
    path.write_text(text.replace("tasks:generate_tags", "tasks:generate_tag"))
    (tmp_path / "tasks.py").write_text((EXAMPLES / "audio_analysis" / "tasks.py").read_text())
    result = taskiq_flow("validate", path)
    assert result.code == 2
    assert "spec.steps[2].task: unknown task 'tasks:generate_tag'" in result.stdout
    assert "did you mean 'tasks:generate_tags'?" in result.stdout
    # --no-import skips that check.
    assert taskiq_flow("validate", "--no-import", path).code == 0


def test_malformed_yaml_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nspec:\n  - a\n b: c\n")
    result = taskiq_flow("validate", path)
    assert result.code == 2
    assert result.stdout.startswith(f"{path}: malformed YAML: ")
    assert "(line 5, column 2)" in result.stdout


def test_run_inputs_are_checked_against_the_pipeline(tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: r}\n"
        "spec:\n  pipelineRef: {name: audio-analysis}\n  inputs: {pathz: []}\n"
    )
    result = taskiq_flow("validate", EXAMPLES / "audio_analysis" / "pipeline.yaml", run)
    assert result.code == 2
    assert (
        f"{run}: PipelineRun/r: spec.inputs: unknown input 'pathz'; the pipeline's inputs are: "
        "paths (line 6, column 3)"
    ) in result.stdout
