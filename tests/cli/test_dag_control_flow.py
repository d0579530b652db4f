"""``taskiq-flow dag`` on a pipeline with control flow: conditions, outcome edges,
``continueOnFailure`` and ``finally`` steps, in each format."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import EXAMPLES, taskiq_flow

RELEASE = """\
apiVersion: flow.taskiq.dev/v1alpha1
kind: Pipeline
metadata: {name: release}
spec:
  worker: {modules: [m]}
  inputs: [{name: data}, {name: mode, default: full}]
  steps:
    - {name: train, task: 'm:train', inputs: [data], output: model}
    - {name: evaluate, task: 'm:evaluate', inputs: [model], output: score, continueOnFailure: true}
    - name: deploy
      task: m:deploy
      inputs: [model]
      output: release
      when: 'outputs.score > 0.8 && inputs.mode == "full"'
    - name: rollback
      task: m:rollback
      inputs: [release]
      output: rolled
      dependsOn: [{step: deploy, on: [Failed, Skipped]}]
    - name: audit
      task: m:audit
      inputs: [data]
      output: audited
      when: "steps['evaluate'].phase != 'Succeeded'"
  finally:
    - {name: notify, task: 'm:notify', inputs: [run, release], output: notice}
    - name: cleanup
      task: m:cleanup
      inputs: [data]
      dependsOn: [{step: notify, on: [Succeeded, Failed]}]
"""

DEPLOY_WHEN = 'outputs.score > 0.8 && inputs.mode == "full"'
AUDIT_WHEN = "steps['evaluate'].phase != 'Succeeded'"

# A condition with everything a drawing must escape: quotes, a backslash, a '#', what
# HTML reads as an entity ('&lt;') or a tag ('<o'), and a line break.
ODD = r"""apiVersion: flow.taskiq.dev/v1alpha1
kind: Pipeline
metadata: {name: odd}
spec:
  worker: {modules: [m]}
  inputs: [{name: mode}]
  steps:
    - {name: score, task: 'm:score', inputs: [mode], output: score}
    - name: gate
      task: m:gate
      inputs: [mode]
      output: gated
      when: |
        inputs.mode == "a\"b\\c #x; &lt;"
          && 1<outputs.score
"""
ODD_WHEN = r'inputs.mode == "a\"b\\c #x; &lt;" && 1<outputs.score'  # whitespace runs as one


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The release pipeline in every format (one run of the command each)."""
    path = tmp_path_factory.mktemp("control-flow") / "release.yaml"
    path.write_text(RELEASE)
    found = {}
    for fmt in ("ascii", "mermaid", "dot", "json"):
        result = taskiq_flow("dag", path, "--format", fmt, "--width", "100")
        assert result.code == 0, result.stderr
        found[fmt] = result.stdout
    return found


def _odd(tmp_path: Path, fmt: str) -> str:
    path = tmp_path / "odd.yaml"
    path.write_text(ODD)
    result = taskiq_flow("dag", path, "--format", fmt)
    assert result.code == 0, result.stderr
    return result.stdout


# -- ascii --------------------------------------------------------------------------------


def test_ascii(drawn: dict[str, str]) -> None:
    assert drawn["ascii"].splitlines() == [
        "inputs   data",
        "level 0  ┌ train → model",
        "         │ ← data (input)",
        "         └─▶ evaluate, deploy",
        "level 1  ┌ evaluate [continueOnFailure] → score",
        "         │ ← model (train)",
        "         └─▶ deploy, audit",
        "level 2  ┌ deploy → release",
        f"         │ when: {DEPLOY_WHEN}",
        "         │ ← model (train), after evaluate (when: score)",
        "         └─▶ rollback, notify",
        "         ┌ audit → audited",
        f"         │ when: {AUDIT_WHEN}",
        "         │ ← data (input), after evaluate (on any)",
        "         └─▶ (end)",
        "level 3  ┌ rollback → rolled",
        "         │ ← release (deploy), after deploy (on Failed|Skipped)",
        "         └─▶ (end)",
        "finally: ┌ notify → notice",
        "         │ ← run (run outcome), release (deploy, on any)",
        "         └─▶ cleanup",
        "         ┌ cleanup → cleanup",
        "         │ ← data (input), after notify (on Succeeded|Failed)",
        "         └─▶ (end)",
    ]


def test_ascii_condition_wraps_within_the_width(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    long_when = " && ".join(f"inputs.mode != 'value number {n}'" for n in range(6))
    path.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: long}\n"
        "spec:\n  worker: {modules: [m]}\n  inputs: [{name: mode}]\n  steps:\n"
        f"    - {{name: a, task: 'm:a', inputs: [mode], output: x, when: \"{long_when}\"}}\n"
    )
    result = taskiq_flow("dag", path, "--width", "60")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 60
    assert lines[2].startswith("         │ when: inputs.mode != 'value number 0'")
    assert lines[3].startswith(" " * len("         │ when: ") + "inputs.mode")


# -- mermaid ------------------------------------------------------------------------------


def _mermaid_text(label: str) -> str:
    """What Mermaid shows for a quoted label: an entity code ``#quot;`` or ``#35;`` is
    the HTML ``&quot;`` or ``&#35;``, and ``<br/>`` a line break."""

    def entity(match: re.Match[str]) -> str:
        code = match.group(1)
        return html.unescape(f"&#{code};" if code.isdigit() else f"&{code};")

    return re.sub(r"#(\w+);", entity, label).replace("<br/>", "\n")


def test_mermaid_nodes_subgraph_and_edges(drawn: dict[str, str]) -> None:
    lines = drawn["mermaid"].splitlines()
    assert lines[0] == "flowchart TD"
    assert '    evaluate["evaluate [continueOnFailure]"]' in lines
    assert (
        '    deploy["deploy<br/>when: outputs.score > 0.8 && inputs.mode == #quot;full#quot;"]'
        in lines
    )
    assert f'    audit["audit<br/>when: {AUDIT_WHEN}"]' in lines
    start = lines.index('    subgraph Finally["finally"]')
    assert lines[start : start + 4] == [
        '    subgraph Finally["finally"]',
        '        notify["notify"]',
        '        cleanup["cleanup"]',
        "    end",
    ]
    # Regular steps are declared before it, none inside it.
    assert lines.index('    rollback["rollback"]') < start
    assert '    in_run(["run"])' in lines
    assert "    in_run --> notify" in lines
    edges = [line.strip() for line in lines if "->" in line]
    for edge in [
        "train -->|model| evaluate",
        'evaluate -.->|"when: score"| deploy',
        "evaluate -.->|on any| audit",
        'deploy -->|"release; on Failed|Skipped"| rollback',
        'deploy -->|"release; on any"| notify',
        'notify -.->|"on Succeeded|Failed"| cleanup',
    ]:
        assert edge in edges


def test_mermaid_labels_escape_what_mermaid_and_html_would_read(tmp_path: Path) -> None:
    lines = _odd(tmp_path, "mermaid").splitlines()
    gate = next(line for line in lines if line.startswith("    gate["))
    label = re.fullmatch(r'    gate\["(.*)"\]', gate)
    assert label is not None
    assert '"' not in label.group(1)  # nothing ends the quoted label early
    assert "<" not in label.group(1).replace("<br/>", "")  # nor opens an HTML tag
    assert "&lt;" not in label.group(1)  # nor an entity
    assert _mermaid_text(label.group(1)) == f"gate\nwhen: {ODD_WHEN}"


# -- dot ----------------------------------------------------------------------------------

_STRING = r'"((?:[^"\\]|\\.)*)"'
_STATEMENT = re.compile(rf"{_STRING}(?:\s*->\s*{_STRING})?\s*\[(.*)\];")
_ATTRIBUTE = re.compile(rf"(\w+)=(?:{_STRING}|(\w+))")


def _dot_text(quoted: str) -> str:
    """What Graphviz shows for a quoted DOT label: escapes and entities decoded."""
    escapes = {"n": "\n", '"': '"', "\\": "\\"}
    unescaped = re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group()), quoted)
    return html.unescape(unescaped)


def _parse_dot(text: str) -> dict[str, Any]:
    """Nodes and edges with their attributes (labels decoded), and each cluster's nodes."""
    nodes: dict[str, dict[str, str]] = {}
    edges: dict[tuple[str, str], dict[str, str]] = {}
    clusters: dict[str, list[str]] = {}
    cluster: str | None = None
    for raw in text.splitlines()[1:-1]:
        line = raw.strip()
        if line.startswith("subgraph "):
            cluster = line.split()[1]
            clusters[cluster] = []
            continue
        if line == "}":
            cluster = None
            continue
        statement = _STATEMENT.fullmatch(line)
        if statement is None:
            continue  # a graph attribute
        source, target, attributes = statement.groups()
        found = {
            m.group(1): _dot_text(m.group(2)) if m.group(2) is not None else m.group(3)
            for m in _ATTRIBUTE.finditer(attributes)
        }
        if target is None:
            nodes[_dot_text(source)] = found
            if cluster is not None:
                clusters[cluster].append(_dot_text(source))
        else:
            edges[_dot_text(source), _dot_text(target)] = found
    return {"nodes": nodes, "edges": edges, "clusters": clusters}


def test_dot_labels_cluster_and_edges(drawn: dict[str, str]) -> None:
    text = drawn["dot"]
    assert text.startswith('digraph "release" {')
    graph = _parse_dot(text)
    nodes, edges = graph["nodes"], graph["edges"]
    assert nodes["train"] == {"label": "train\n→ model"}
    assert nodes["evaluate"]["label"] == "evaluate [continueOnFailure]\n→ score"
    assert nodes["deploy"]["label"] == f"deploy\n→ release\nwhen: {DEPLOY_WHEN}"
    assert nodes["audit"]["label"] == f"audit\n→ audited\nwhen: {AUDIT_WHEN}"
    assert graph["clusters"] == {"cluster_finally": ["notify", "cleanup"]}
    assert 'label="finally";' in text
    assert nodes["input:run"] == {"label": "run", "shape": "ellipse", "style": "dashed"}
    assert edges["input:run", "notify"] == {"style": "dashed"}
    assert edges["train", "evaluate"] == {"label": "model"}
    assert edges["evaluate", "deploy"] == {"label": "when: score", "style": "dotted"}
    assert edges["evaluate", "audit"] == {"label": "on any", "style": "dotted"}
    assert edges["deploy", "rollback"] == {"label": "release; on Failed|Skipped"}
    assert edges["deploy", "notify"] == {"label": "release; on any"}
    assert edges["notify", "cleanup"] == {"label": "on Succeeded|Failed", "style": "dotted"}


def test_dot_labels_escape_quotes_backslashes_and_entities(tmp_path: Path) -> None:
    graph = _parse_dot(_odd(tmp_path, "dot"))
    assert graph["nodes"]["gate"]["label"] == f"gate\n→ gated\nwhen: {ODD_WHEN}"
    assert graph["clusters"] == {}


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_the_dot(drawn: dict[str, str]) -> None:
    done = subprocess.run(
        ["dot", "-Tplain"], input=drawn["dot"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# -- json ---------------------------------------------------------------------------------


def test_json_fields(drawn: dict[str, str]) -> None:
    data = json.loads(drawn["json"])
    nodes = {node["id"]: node for node in data["nodes"]}
    assert nodes["evaluate"]["continueOnFailure"] is True
    assert nodes["deploy"]["when"] == DEPLOY_WHEN
    assert nodes["audit"]["when"] == AUDIT_WHEN
    assert [name for name, node in nodes.items() if node.get("final")] == ["notify", "cleanup"]
    # Keys that would say the default are left out.
    assert "when" not in nodes["train"]
    assert "continueOnFailure" not in nodes["deploy"]
    assert "final" not in nodes["rollback"]
    edges = {(edge["source"], edge["target"]): edge for edge in data["edges"]}
    assert edges["train", "evaluate"] == {
        "source": "train",
        "target": "evaluate",
        "data": ["model"],
    }
    assert edges["evaluate", "deploy"] == {
        "source": "evaluate",
        "target": "deploy",
        "data": [],
        "condition": ["score"],
    }
    assert edges["evaluate", "audit"]["on"] == ["Succeeded", "Failed", "Skipped"]
    assert edges["deploy", "rollback"] == {
        "source": "deploy",
        "target": "rollback",
        "data": ["release"],
        "on": ["Failed", "Skipped"],
    }
    assert edges["deploy", "notify"]["on"] == ["Succeeded", "Failed", "Skipped"]
    assert edges["notify", "cleanup"]["on"] == ["Succeeded", "Failed"]
    assert data["external_inputs"] == ["data"]


def test_a_pipeline_without_control_flow_has_no_control_flow_keys() -> None:
    result = taskiq_flow("dag", EXAMPLES / "audio_analysis" / "pipeline.yaml", "-f", "json")
    data = json.loads(result.stdout)
    assert all(
        set(node) == {"id", "task", "kind", "outputs", "inputs", "level"} for node in data["nodes"]
    )
    assert all(set(edge) == {"source", "target", "data"} for edge in data["edges"])
