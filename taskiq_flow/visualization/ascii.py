"""A plain-text drawing of a DAG that stays readable in an 80-column terminal."""

from __future__ import annotations

import textwrap

from taskiq_flow.core.conditions import RUN_DATA
from taskiq_flow.dataflow.dag import DAG, DAGNode
from taskiq_flow.dataflow.drawing import (
    CONTINUE_TAG,
    condition_text,
    edge_notes,
    node_kind,
    outcome_text,
)

__all__ = ["render_ascii"]

_GUTTER = 9  # "level 10 " fits
_BLANK = " " * _GUTTER


def _wrap(prefix: str, text: str, width: int) -> list[str]:
    indent = " " * len(prefix)
    lines = textwrap.wrap(text, width=max(width - len(prefix), 20)) or [""]
    return [prefix + lines[0], *(indent + line for line in lines[1:])]


def _inputs(dag: DAG, node: DAGNode) -> str:
    """What ``node`` reads and from whom, then the steps it waits for without data.

    An edge's outcomes (``on Failed``...) and condition data (``when: score``) are noted
    once: on ``after STEP`` when the step is there, else on the data it passes.
    """
    after = sorted(set(node.depends_on))
    parts = []
    for name in (*node.consumed, *node.optional_inputs):
        data = dag.data.get(name)
        if data is None:
            continue
        if data.producer is None:
            source = "run outcome" if name == RUN_DATA and node.final else "input"
        else:
            source = data.producer
            on = dag.edge(data.producer, node.name).get("on")
            if on and data.producer not in after:
                source += f", on {outcome_text(on)}"
        parts.append(f"{name} ({source})")
    for dep in after:
        notes = edge_notes(dag.edge(dep, node.name))
        parts.append(f"after {dep} ({'; '.join(notes)})" if notes else f"after {dep}")
    return ", ".join(parts)


def _step(dag: DAG, node: DAGNode, gutter: str, width: int) -> list[str]:
    """One step: ``┌`` name, tags and outputs; its condition; what it reads; what it feeds."""
    tags: list[str] = [] if node.kind == "task" else [node_kind(node)]
    if node.continue_on_failure:
        tags.append(CONTINUE_TAG)
    tag = f" [{', '.join(tags)}]" if tags else ""
    lines = _wrap(gutter, f"┌ {node.name}{tag} → {', '.join(node.outputs)}", width)
    condition = condition_text(node)
    if condition is not None:
        lines.extend(_wrap(_BLANK + "│ when: ", condition, width))
    reads = _inputs(dag, node)
    if reads:
        lines.extend(_wrap(_BLANK + "│ ← ", reads, width))
    feeds = sorted(node.dependents, key=dag.plan.index.__getitem__)
    lines.extend(_wrap(_BLANK + "└─▶ ", ", ".join(feeds) or "(end)", width))
    return lines


def render_ascii(dag: DAG, width: int = 80) -> str:
    """Levels top to bottom; each step with what it reads (and from whom) and feeds.

    ``finally`` steps come last, in a section of their own (in the order they can run).
    """
    lines: list[str] = []
    if dag.external_inputs:
        lines.extend(_wrap("inputs   ", ", ".join(dag.external_inputs), width))
    for index, level in enumerate(dag.levels):
        regular = [node for node in level if not node.final]
        label = f"level {index}".ljust(_GUTTER)
        for position, node in enumerate(regular):
            lines.extend(_step(dag, node, label if position == 0 else _BLANK, width))
    finals = [node for node in dag.topological_sort() if node.final]
    for position, node in enumerate(finals):
        lines.extend(
            _step(dag, node, "finally:".ljust(_GUTTER) if position == 0 else _BLANK, width)
        )
    return "\n".join(lines)
