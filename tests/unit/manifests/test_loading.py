"""Reading manifests: documents with file, kind/name and the position of every field."""

from __future__ import annotations

from pathlib import Path

from taskiq_flow.manifests.loading import load_file, load_files, load_text, parse_resource
from taskiq_flow.manifests.models import Pipeline, PipelineRun

GOOD = """\
apiVersion: flow.taskiq.dev/v1alpha1
kind: Pipeline
metadata: {name: p}
spec:
  worker: {modules: [m]}
  steps:
    - name: a
      task: m:f
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
---
apiVersion: flow.taskiq.dev/v1alpha1
kind: PipelineRun
metadata: {generateName: p-}
spec:
  pipelineRef: {name: p}
"""


def _write(tmp_path: Path, text: str, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_documents_are_parsed_and_foreign_ones_ignored(tmp_path: Path) -> None:
    documents, problems = load_files([_write(tmp_path, GOOD)])
    assert problems == []
    assert [d.label for d in documents] == ["Pipeline/p", "ConfigMap/other", "PipelineRun/p-*"]
    assert isinstance(documents[0].resource, Pipeline)
    assert documents[1].foreign
    assert documents[1].resource is None
    assert isinstance(documents[2].resource, PipelineRun)
    assert documents[2].line == 14


def test_malformed_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "kind: Pipeline\nspec:\n  steps: [\n    - a\n")
    documents, problems = load_file(path)
    (problem,) = problems
    assert documents == []
    assert problem.file == path
    assert (problem.line, problem.column) == (4, 5)
    assert problem.format().startswith(f"{path}: malformed YAML: ")
    assert problem.format().endswith("(line 4, column 5)")


def test_a_tab_indentation_error_is_located() -> None:
    _documents, problems = load_text("a: 1\n\tb: 2\n", "x.yaml")
    assert problems[0].line == 2


def test_field_problems_point_at_the_field(tmp_path: Path) -> None:
    text = GOOD.replace("      task: m:f", "      task: m:f\n      tsk: m:g")
    _documents, problems = load_files([_write(tmp_path, text)])
    (problem,) = problems
    assert problem.path == "spec.steps[0].tsk"
    assert problem.document == "Pipeline/p"
    assert (problem.line, problem.column) == (9, 7)
    assert problem.message == "unknown field 'tsk'; did you mean 'task'?"


def test_snake_case_spellings_are_unknown_fields(tmp_path: Path) -> None:
    text = GOOD.replace("pipelineRef: {name: p}", "pipeline_ref: {name: p}")
    _documents, problems = load_files([_write(tmp_path, text)])
    assert "spec.pipeline_ref" in [p.path for p in problems]


def test_duplicate_keys_are_problems() -> None:
    _documents, problems = load_text(
        GOOD.replace("      task: m:f", "      task: m:f\n      task: m:g")
    )
    assert [p.message for p in problems] == ["duplicate key 'task': the last one would win"]


def test_wrong_version_and_kind() -> None:
    text = (
        "apiVersion: flow.taskiq.dev/v1\nkind: Pipeline\n---\n"
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipe\n"
    )
    documents, _ = load_text(text, "f.yaml")

    messages = [parse_resource(d)[0].message for d in documents]
    assert messages[0] == "unsupported version 'flow.taskiq.dev/v1'; use flow.taskiq.dev/v1alpha1"
    assert messages[1] == "unknown kind 'Pipe'; expected one of Pipeline, PipelineRun"


def test_an_unreadable_file(tmp_path: Path) -> None:
    _documents, problems = load_file(tmp_path / "missing.yaml")
    assert problems[0].message.startswith("cannot read the file")


def test_an_empty_file(tmp_path: Path) -> None:
    _documents, problems = load_file(_write(tmp_path, "# nothing\n"))
    assert problems[0].message == "the file holds no manifest"


def test_scalars_anchors_and_merge_keys_load_as_yaml_says() -> None:
    text = (
        "a: &base {x: 1, y: true, z: null, f: 1.5, s: '2'}\nb:\n  <<: *base\n  x: 2\nc: [*base]\n"
    )
    (document,), problems = load_text(text)
    assert problems == []
    assert document.data["a"] == {"x": 1, "y": True, "z": None, "f": 1.5, "s": "2"}
    assert document.data["b"] == {"x": 2, "y": True, "z": None, "f": 1.5, "s": "2"}
    assert document.data["c"] == [document.data["a"]]
