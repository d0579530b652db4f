"""Drawing a ``DAG``: its nodes and edges as JSON-ready data, Graphviz DOT, plain text,
and the labels every drawing shares (``taskiq_flow.visualization`` builds on them).

Control flow shows only where a pipeline uses it, the same way in every format: a step's
``when`` and ``continueOnFailure``, the outcomes an edge waits for (``on Failed``, ``on
any``), the data only a condition reads (``when: score``), and ``finally`` steps apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from taskiq_flow.core.conditions import RUN_DATA
from taskiq_flow.core.states import Phase

if TYPE_CHECKING:
    from taskiq_flow.dataflow.dag import DAG, DAGNode

__all__ = [
    "CONTINUE_TAG",
    "DRAWN_OUTCOMES",
    "condition_text",
    "edge_label",
    "edge_notes",
    "graph_dict",
    "graph_dot",
    "graph_edge",
    "graph_text",
    "node_dict",
    "node_kind",
    "outcome_text",
]


def graph_dict(dag: DAG) -> dict[str, Any]:
    """Nodes, edges and levels as JSON-ready data.

    Control flow shows only where a pipeline uses it: a node's ``when`` (the CEL
    text), ``continueOnFailure`` and ``final`` (a ``finally`` step); an edge's ``on``
    (the outcomes of the source its target waits for, when not ``Succeeded`` alone)
    and ``condition`` (the source's data that only the target's ``when`` reads).
    """
    return {
        "nodes": [node_dict(node) for node in dag.topological_sort()],
        "edges": [
            graph_edge(dag, dep, node.name)
            for node in dag.topological_sort()
            for dep in dag.plan.deps(node.name)
        ],
        "levels": [[n.name for n in level] for level in dag.levels],
        "external_inputs": dag.external_inputs,
    }


def node_dict(node: DAGNode) -> dict[str, Any]:
    """A node as in ``graph_dict()``."""
    found: dict[str, Any] = {
        "id": node.name,
        "task": node.task_name,
        "kind": node_kind(node),
        "outputs": list(node.outputs),
        "inputs": list(node.consumed),
        "level": node.level,
    }
    if node.when is not None:
        found["when"] = node.when.source
    if node.continue_on_failure:
        found["continueOnFailure"] = True
    if node.final:
        found["final"] = True
    return found


def node_kind(node: DAGNode) -> str:
    """A node's kind as drawn: ``task``, ``map``, ``filter`` (a map that keeps the items
    its task returns true for) or ``reduce``."""
    return "filter" if node.kind == "map" and node.filter_items else node.kind


def graph_edge(dag: DAG, source: str, target: str) -> dict[str, Any]:
    """The edge from step ``source`` to step ``target`` (one of its dependencies), as
    in ``graph_dict()``: ``source``, ``target``, ``data``, and ``condition`` and ``on``
    when they say something."""
    node = dag.nodes[target]
    edge: dict[str, Any] = {
        "source": source,
        "target": target,
        "data": _edge_data(dag, source, node),
    }
    if node.when is not None:
        passed = {*node.consumed, *node.optional_inputs}
        produced = dag.nodes[source].outputs
        read = [d for d in node.when.outputs if d in produced and d not in passed]
        if read:
            edge["condition"] = read
    if node.final and not dag.nodes[source].final:
        # A finally step starts once every regular step is over, whatever they did.
        wanted: Iterable[Phase] = DRAWN_OUTCOMES
    else:
        wanted = node.accepts.get(source, ())
    outcomes = [phase.value for phase in DRAWN_OUTCOMES if phase in wanted]
    if outcomes and outcomes != [Phase.SUCCEEDED.value]:
        edge["on"] = outcomes
    return edge


def _edge_data(dag: DAG, producer: str, consumer: DAGNode) -> list[str]:
    produced = set(dag.nodes[producer].outputs)
    return [d for d in (*consumer.consumed, *consumer.optional_inputs) if d in produced]


def graph_dot(dag: DAG, name: str = "pipeline") -> str:
    """The graph in Graphviz DOT.

    ``finally`` steps are drawn in a dashed cluster labelled ``finally``; a step's
    ``when`` and ``continueOnFailure`` are lines of its label; an edge's label is
    ``edge_label()`` (dotted when it carries no data to the task).
    """
    lines = [f'digraph "{_dot(name)}" {{', "  rankdir=LR;", "  node [shape=box];"]
    ordered = dag.topological_sort()
    lines.extend(f"  {_dot_node(node)}" for node in ordered if not node.final)
    finals = [node for node in ordered if node.final]
    if finals:
        lines.extend(["  subgraph cluster_finally {", '    label="finally";', "    style=dashed;"])
        lines.extend(f"    {_dot_node(node)}" for node in finals)
        lines.append("  }")
    for ext in dag.external_inputs:
        lines.append(f'  "input:{ext}" [label="{ext}", shape=ellipse, style=dashed];')
    if dag.run_readers():
        lines.append(f'  "input:{RUN_DATA}" [label="{RUN_DATA}", shape=ellipse, style=dashed];')
    for node in ordered:
        for dep in dag.plan.deps(node.name):
            edge = graph_edge(dag, dep, node.name)
            label = edge_label(edge)
            attrs = [f'label="{_dot(label)}"'] if label else []
            if not edge["data"]:
                attrs.append("style=dotted")
            lines.append(f'  "{_dot(dep)}" -> "{_dot(node.name)}" [{", ".join(attrs)}];')
        for inp in node.consumed:
            if inp in dag.data and dag.data[inp].producer is None:
                lines.append(f'  "input:{inp}" -> "{_dot(node.name)}" [style=dashed];')
    lines.append("}")
    return "\n".join(lines)


def graph_text(dag: DAG) -> str:
    """A plain-text listing of the levels and each step's inputs and outputs."""
    lines = []
    if dag.external_inputs:
        lines.append(f"External inputs: {', '.join(dag.external_inputs)}")
    for index, level in enumerate(dag.levels):
        lines.append(f"Level {index}:")
        for node in level:
            needs = ", ".join(node.consumed) or "-"
            after = f" (after {', '.join(sorted(node.dependencies))})" if node.dependencies else ""
            lines.append(f"  {node.name}: {needs} → {', '.join(node.outputs)}{after}")
    return "\n".join(lines)


DRAWN_OUTCOMES = (Phase.SUCCEEDED, Phase.FAILED, Phase.SKIPPED)
"""The outcomes an edge may wait for, in the order drawings list them."""

CONTINUE_TAG = "continueOnFailure"
"""How drawings mark a step whose failure does not fail the run."""


def outcome_text(outcomes: Iterable[str]) -> str:
    """Outcomes as drawn on an edge: ``Failed``, ``Succeeded|Failed``; ``any`` for all."""
    names = list(outcomes)
    if {phase.value for phase in DRAWN_OUTCOMES} <= set(names):
        return "any"
    return "|".join(names)


def edge_notes(edge: Mapping[str, Any]) -> list[str]:
    """What an edge of ``graph_dict()`` says besides its data: ``when: NAMES`` (data only
    the target's condition reads) and ``on OUTCOMES`` (not just ``Succeeded``)."""
    notes = []
    if edge.get("condition"):
        notes.append(f"when: {', '.join(edge['condition'])}")
    if edge.get("on"):
        notes.append(f"on {outcome_text(edge['on'])}")
    return notes


def edge_label(edge: Mapping[str, Any]) -> str:
    """An edge's label in a drawing: its data, then ``edge_notes()``, joined by ``; ``
    (``model``, ``value; on Failed``, ``when: score``, ``on any``); empty for an edge
    that only orders two steps."""
    data = ", ".join(edge["data"])
    return "; ".join([data, *edge_notes(edge)] if data else edge_notes(edge))


def condition_text(node: DAGNode) -> str | None:
    """A step's ``when`` on one line (each run of whitespace as one space)."""
    return None if node.when is None else " ".join(node.when.source.split())


def _dot(text: str) -> str:
    """``text`` inside a DOT double-quoted string, shown as written: backslashes and
    quotes escaped, and an ``&`` that Graphviz would read as an entity (``&lt;``) too."""
    first, *rest = text.replace("\\", "\\\\").replace('"', '\\"').split("&")
    return first + "".join(
        ("&amp;" if part[:1] == "#" or part[:1].isalnum() or part[:1] == "_" else "&") + part
        for part in rest
    )


def _dot_node(node: DAGNode) -> str:
    title = f"{node.name} [{CONTINUE_TAG}]" if node.continue_on_failure else node.name
    lines = [title, f"→ {', '.join(node.outputs)}"]
    condition = condition_text(node)
    if condition is not None:
        lines.append(f"when: {condition}")
    label = "\\n".join(map(_dot, lines))
    return f'"{_dot(node.name)}" [label="{label}"];'
