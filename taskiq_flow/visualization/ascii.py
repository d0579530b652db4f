"""A plain-text drawing of a DAG that stays readable in an 80-column terminal."""

from __future__ import annotations

import textwrap

from taskiq_flow.dataflow.dag import DAG, DAGNode

__all__ = ["render_ascii"]

_GUTTER = 9  # "level 10 " fits


def _wrap(prefix: str, text: str, width: int) -> list[str]:
    indent = " " * len(prefix)
    lines = textwrap.wrap(text, width=max(width - len(prefix), 20)) or [""]
    return [prefix + lines[0], *(indent + line for line in lines[1:])]


def _inputs(dag: DAG, node: DAGNode) -> str:
    parts = []
    for name in (*node.consumed, *node.optional_inputs):
        data = dag.data.get(name)
        if data is None:
            continue
        source = "input" if data.producer is None else data.producer
        parts.append(f"{name} ({source})")
    extra = sorted(set(node.depends_on))
    parts.extend(f"after {dep}" for dep in extra)
    return ", ".join(parts)


def render_ascii(dag: DAG, width: int = 80) -> str:
    """Levels top to bottom; each step with what it reads (and from whom) and feeds."""
    lines: list[str] = []
    if dag.external_inputs:
        lines.extend(_wrap("inputs   ", ", ".join(dag.external_inputs), width))
    for index, level in enumerate(dag.levels):
        label = f"level {index}".ljust(_GUTTER)
        for position, node in enumerate(level):
            gutter = label if position == 0 else " " * _GUTTER
            kind = "" if node.kind == "task" else f" [{node.kind}]"
            head = f"┌ {node.name}{kind} → {', '.join(node.outputs)}"
            lines.extend(_wrap(gutter, head, width))
            reads = _inputs(dag, node)
            if reads:
                lines.extend(_wrap(" " * _GUTTER + "│ ← ", reads, width))
            feeds = sorted(node.dependents, key=dag.plan.index.__getitem__)
            lines.extend(_wrap(" " * _GUTTER + "└─▶ ", ", ".join(feeds) or "(end)", width))
    return "\n".join(lines)
