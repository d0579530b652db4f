"""Drawing a DAG: ASCII at 80 columns, DOT, Mermaid, Cytoscape, critical path."""

import json

import pytest

from taskiq_flow import DAG, DAGBuilder
from taskiq_flow.visualization import DAGVisualizer, MermaidGenerator


@pytest.fixture
def diamond() -> DAG:
    # Four levels: a → (b ∥ c) → d → e, with an external input and a parallel pair.
    return (
        DAGBuilder()
        .add_task("t:a", output="raw", inputs=["source"], name="a")
        .add_task("t:b", output="left", inputs=["raw"], name="b")
        .add_task("t:c", output="right", inputs=["raw"], name="c")
        .add_task("t:d", output="joined", inputs=["left", "right"], name="d")
        .add_task("t:e", output="report", inputs=["joined"], name="e")
        .build()
    )


def test_ascii_fits_80_columns_and_shows_every_edge(diamond: DAG) -> None:
    text = DAGVisualizer(diamond).visualize_ascii()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.splitlines()[0] == "inputs   source"
    assert "level 1  ┌ b → left" in text
    assert "         ┌ c → right" in text
    assert "│ ← left (b), right (c)" in text
    assert text.count("└─▶ d") == 2
    assert text.rstrip().endswith("└─▶ (end)")


def test_critical_path_follows_measured_durations(diamond: DAG) -> None:
    assert DAGVisualizer(diamond).detect_critical_path() == ["a", "b", "d", "e"]
    slow_c = DAGVisualizer(diamond, durations={"b": 1.0, "c": 5.0})
    assert slow_c.detect_critical_path() == ["a", "c", "d", "e"]
    by_profile = DAGVisualizer(diamond, resource_profiles={"c": {"estimated_duration_s": 9}})
    assert by_profile.detect_critical_path() == ["a", "c", "d", "e"]


def test_parallel_groups_are_levels_with_several_steps(diamond: DAG) -> None:
    assert DAGVisualizer(diamond).find_parallelizable_groups() == [["b", "c"]]


def test_json_and_cytoscape_exports(diamond: DAG) -> None:
    viz = DAGVisualizer(diamond)
    data = json.loads(viz.to_json())
    assert [n["id"] for n in data["nodes"]] == ["a", "b", "c", "d", "e"]
    assert {"source": "b", "target": "d", "data": ["left"]} in data["edges"]
    assert data["levels"] == [["a"], ["b", "c"], ["d"], ["e"]]
    assert data["external_inputs"] == ["source"]
    cyto = viz.to_cytoscape_json()["elements"]
    assert len(cyto["nodes"]) == 5
    assert len(cyto["edges"]) == 5
    assert cyto["edges"][0]["data"]["source"] == "a"


def test_dot_keeps_inputs_apart_from_steps(diamond: DAG) -> None:
    dot = DAGVisualizer(diamond).to_graphviz()
    assert dot.startswith('digraph "pipeline" {')
    assert '"input:source" -> "a" [style=dashed];' in dot
    assert '"b" -> "d" [label="left"];' in dot


def test_mermaid_colours_steps_by_status(diamond: DAG) -> None:
    generator = MermaidGenerator(diamond)
    plain = generator.to_mermaid()
    assert plain.splitlines()[0] == "flowchart TD"
    assert "    a -->|raw| b" in plain
    styled = generator.to_mermaid_with_styling({"a": "COMPLETED", "b": "Running", "c": "FAILED"})
    assert "class a succeeded" in styled
    assert "class b running" in styled
    assert "class c failed" in styled
    assert "class e pending" in styled
    assert "classDef failed fill:#ffcdd2" in styled
