"""``MermaidGenerator``: the DAG as a Mermaid flowchart."""

from __future__ import annotations

import re
from collections.abc import Mapping

from taskiq_flow.dataflow.dag import DAG

__all__ = ["STATUS_COLOURS", "MermaidGenerator"]

# fill, stroke per step phase (the PipelineRun spellings; tracking's upper-case ones map here)
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "Pending": ("#eeeeee", "#999999"),
    "Queued": ("#e3f2fd", "#64b5f6"),
    "Running": ("#bbdefb", "#1e88e5"),
    "Retrying": ("#fff3e0", "#fb8c00"),
    "Succeeded": ("#c8e6c9", "#43a047"),
    "Failed": ("#ffcdd2", "#e53935"),
    "Skipped": ("#f5f5f5", "#bdbdbd"),
    "Cancelled": ("#e0e0e0", "#757575"),
}
_ALIASES = {"COMPLETED": "Succeeded", "ERROR": "Failed"}


def _id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _phase(status: str) -> str:
    upper = status.upper()
    if upper in _ALIASES:
        return _ALIASES[upper]
    return status.capitalize() if status.isupper() else status


class MermaidGenerator:
    """Mermaid ``flowchart`` text for a DAG, optionally coloured by step status."""

    def __init__(self, dag: DAG, direction: str = "TD") -> None:
        self.dag = dag
        self.direction = direction

    def to_mermaid(self) -> str:
        """Steps as boxes, data as labelled edges, external inputs as rounded nodes."""
        lines = [f"flowchart {self.direction}"]
        for node in self.dag.topological_sort():
            lines.append(f'    {_id(node.name)}["{node.name}"]')
        for name in self.dag.external_inputs:
            lines.append(f'    {_id("in_" + name)}(["{name}"])')
        for edge in self.dag.to_dict()["edges"]:
            label = ", ".join(edge["data"])
            arrow = f"-->|{label}|" if label else "-.->"
            lines.append(f"    {_id(edge['source'])} {arrow} {_id(edge['target'])}")
        for node in self.dag.topological_sort():
            for name in node.consumed:
                if name in self.dag.external_inputs:
                    lines.append(f"    {_id('in_' + name)} --> {_id(node.name)}")
        return "\n".join(lines)

    def to_mermaid_with_styling(self, statuses: Mapping[str, str] | None = None) -> str:
        """``to_mermaid()`` with a colour per step status (``Pending`` when unknown)."""
        lines = [self.to_mermaid()]
        for phase, (fill, stroke) in STATUS_COLOURS.items():
            lines.append(f"    classDef {phase.lower()} fill:{fill},stroke:{stroke}")
        given = dict(statuses or {})
        for node in self.dag.topological_sort():
            phase = _phase(given.get(node.name, "Pending"))
            if phase in STATUS_COLOURS:
                lines.append(f"    class {_id(node.name)} {phase.lower()}")
        return "\n".join(lines)
