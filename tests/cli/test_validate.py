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
    # The task module is not importable from here: a problem, and the graph is checked.
    result = taskiq_flow("validate", path, cwd=tmp_path)
    assert result.code == 2
    assert result.stdout.splitlines() == [
        f"{path}: Pipeline/broken: spec.worker.modules[0]: cannot import module 'tasks': no "
        "such module (line 5, column 22)",
        f"{path}: Pipeline/broken: spec.steps[1].output: output 'audio_features' is produced by "
        "more than one task: extract, mir (line 15, column 7)",
        f"{path}: Pipeline/broken: spec.steps[2].inputs[0]: no step produces 'mir_features' "
        "(needed by step 'tags') and spec.inputs does not declare it (line 19, column 16)",
        f"{path}: Pipeline/broken: spec.steps[2].dependsOn[0]: step 'tags' depends on 'extrakt', "
        "which is not a step (line 20, column 19)",
    ]
    assert "4 problem(s) in 1 file(s)" in result.stderr
    # --no-import checks the graph alone.
    result = taskiq_flow("validate", "--no-import", path, cwd=tmp_path)
    assert "worker.modules" not in result.stdout
    assert "3 problem(s) in 1 file(s)" in result.stderr


def test_a_module_that_cannot_be_imported_is_a_problem_as_for_run(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    text = (EXAMPLES / "audio_analysis" / "pipeline.yaml").read_text()
    path.write_text(text.replace("modules: [tasks]", "modules: [taks]"))
    message = (
        f"{path}: Pipeline/audio-analysis: spec.worker.modules[0]: cannot import module "
        "'taks': no such module (line 16, column 15)"
    )
    result = taskiq_flow("validate", path, cwd=tmp_path)
    assert result.code == 2
    assert result.stdout.splitlines() == [message]
    assert result.stderr == "1 problem(s) in 1 file(s)\n"
    ran = taskiq_flow("run", path, cwd=tmp_path)
    assert ran.code == 2
    assert message in ran.stderr.splitlines()
    # The rest is checked all the same: here, a run's inputs.
    run = tmp_path / "run.yaml"
    run.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: r}\n"
        "spec:\n  pipelineRef: {name: audio-analysis}\n  inputs: {pathz: []}\n"
    )
    result = taskiq_flow("validate", path, run, cwd=tmp_path)
    assert result.stdout.splitlines() == [
        message,
        f"{run}: PipelineRun/r: spec.inputs: unknown input 'pathz'; the pipeline's inputs "
        "are: paths (line 6, column 3)",
    ]
    # A module that imports something missing says which.
    (tmp_path / "taks.py").write_text("import numpyy\n")
    result = taskiq_flow("validate", path, cwd=tmp_path)
    assert result.code == 2
    assert "cannot import module 'taks': it imports 'numpyy', which is not installed" in (
        result.stdout
    )
    # --no-import: the task code may live only in the worker image.
    result = taskiq_flow("validate", "--no-import", path, cwd=tmp_path)
    assert result.code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "valid: Pipeline/audio-analysis\n"


def _named(kind: str, metadata: str) -> str:
    spec = (
        "spec: {worker: {modules: [m]}, steps: [{name: a, task: 'm:a'}]}"
        if kind == "Pipeline"
        else "spec: {pipelineSpec: {worker: {modules: [m]}, steps: [{name: a, task: 'm:a'}]}}"
    )
    return f"apiVersion: flow.taskiq.dev/v1alpha1\nkind: {kind}\nmetadata: {metadata}\n{spec}\n"


RULE = (
    "use lower-case letters, digits, '-' and '.', starting and ending with a letter or "
    "digit, at most 253 characters (a DNS-1123 subdomain, as Kubernetes requires)"
)


def test_names_are_what_kubernetes_accepts(tmp_path: Path) -> None:
    path = tmp_path / "names.yaml"
    documents = [
        _named("Pipeline", "{name: My_Pipeline}"),
        _named("Pipeline", f"{{name: {'a' * 254}}}"),
        _named("Pipeline", "{name: -leading}"),
        _named("PipelineRun", "{name: run.}"),
        _named("PipelineRun", "{generateName: Nightly-}"),
        _named("PipelineRun", "{generateName: nightly_}"),
    ]
    path.write_text("---\n".join(documents))
    result = taskiq_flow("validate", "--no-import", path)
    assert result.code == 2
    lines = result.stdout.splitlines()
    assert lines == [
        f"{path}: Pipeline/My_Pipeline: metadata.name: 'My_Pipeline' is not a valid name: "
        f"{RULE} (line 3, column 12)",
        f"{path}: Pipeline/{'a' * 254}: metadata.name: '{'a' * 254}' is not a valid name: "
        f"{RULE} (line 8, column 12)",
        f"{path}: Pipeline/-leading: metadata.name: '-leading' is not a valid name: {RULE} "
        "(line 13, column 12)",
        f"{path}: PipelineRun/run.: metadata.name: 'run.' is not a valid name: {RULE} "
        "(line 18, column 12)",
        f"{path}: PipelineRun/Nightly-*: metadata.generateName: 'Nightly-' is not a valid "
        f"generateName: {RULE}; it may end with '-' (line 23, column 12)",
        f"{path}: PipelineRun/nightly_*: metadata.generateName: 'nightly_' is not a valid "
        f"generateName: {RULE}; it may end with '-' (line 28, column 12)",
    ]
    assert "6 problem(s) in 1 file(s)" in result.stderr
    # taskiq-flow run refuses them alike.
    ran = taskiq_flow("run", path)
    assert ran.code == 2
    assert lines[0] in ran.stderr.splitlines()


def test_dotted_names_and_a_prefix_ending_in_a_dash_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "names.yaml"
    documents = [
        _named("Pipeline", "{name: team.etl-2}"),
        _named("Pipeline", f"{{name: {'a' * 253}}}"),
        _named("PipelineRun", "{generateName: nightly-}"),
        _named("PipelineRun", "{generateName: nightly.run}"),
    ]
    path.write_text("---\n".join(documents))
    result = taskiq_flow("validate", "--no-import", path)
    assert result.code == 0, result.output
    assert result.stderr.startswith("valid: Pipeline/team.etl-2, ")


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
