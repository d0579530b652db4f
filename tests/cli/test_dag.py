"""``taskiq-flow dag``: the DAG as ASCII, Mermaid, DOT and JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import EXAMPLES, taskiq_flow

AUDIO = EXAMPLES / "audio_analysis" / "pipeline.yaml"


def test_ascii_shows_levels_inputs_and_dependents() -> None:
    result = taskiq_flow("dag", AUDIO)
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines()[:4] == [
        "inputs   paths",
        "level 0  ┌ extract → audio_features",
        "         │ ← paths (input)",
        "         └─▶ mir",
    ]
    assert "level 3  ┌ embedding → embedding" in result.stdout


def test_a_four_level_diamond_fits_80_columns(tmp_path: Path) -> None:
    steps = [
        "{name: source, task: 'm:a', output: raw, inputs: [seed]}",
        "{name: left-branch-with-a-long-name, task: 'm:b', output: left_values, inputs: [raw]}",
        "{name: right-branch-with-a-long-name, task: 'm:c', output: right_values, inputs: [raw]}",
        "{name: join, task: 'm:d', output: joined, inputs: [left_values, right_values]}",
    ]
    path = tmp_path / "diamond.yaml"
    path.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: diamond}\n"
        "spec:\n  worker: {modules: [m]}\n  inputs: [{name: seed}]\n  steps:\n"
        + "".join(f"    - {s}\n" for s in steps)
    )
    result = taskiq_flow("dag", path, "--width", "80")
    assert result.code == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "level 2  ┌ join → joined" in result.stdout


def test_mermaid() -> None:
    result = taskiq_flow("dag", AUDIO, "--format", "mermaid")
    assert result.code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert "    extract -->|audio_features| mir" in lines
    assert "    in_paths --> extract" in lines


def test_dot() -> None:
    result = taskiq_flow("dag", AUDIO, "-f", "dot")
    assert result.code == 0
    assert result.stdout.startswith('digraph "audio-analysis" {')
    assert '"mir" -> "tags" [label="mir_features"];' in result.stdout


def test_json() -> None:
    result = taskiq_flow("dag", AUDIO, "-f", "json")
    data = json.loads(result.stdout)
    assert data["levels"] == [["extract"], ["mir"], ["tags"], ["embedding"]]
    assert data["external_inputs"] == ["paths"]


def test_a_sequential_pipeline_draws_as_a_chain_its_filter_step_as_a_filter() -> None:
    result = taskiq_flow("dag", EXAMPLES / "wordcount" / "pipeline.yaml")
    assert result.code == 0, result.stderr
    tagged = [line for line in result.stdout.splitlines() if "┌" in line]
    assert tagged == [
        "level 0  ┌ nonempty [filter] → nonempty",
        "level 1  ┌ counts [map] → counts",
        "level 2  ┌ totals → totals",
        "level 3  ┌ top → top",
    ]


def test_json_gives_each_step_its_kind() -> None:
    result = taskiq_flow("dag", EXAMPLES / "wordcount" / "pipeline.yaml", "-f", "json")
    assert result.code == 0, result.stderr
    kinds = {node["id"]: node["kind"] for node in json.loads(result.stdout)["nodes"]}
    assert kinds == {"nonempty": "filter", "counts": "map", "totals": "task", "top": "task"}


def test_an_invalid_pipeline_is_not_drawn(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        "spec:\n  worker: {modules: [m]}\n  steps:\n"
        "    - {name: a, task: 'm:a', output: x, inputs: [y]}\n"
        "    - {name: b, task: 'm:b', output: y, inputs: [x]}\n"
    )
    result = taskiq_flow("dag", path)
    assert result.code == 2
    assert "Deadlock detected" in result.stderr
    assert result.stdout == ""
