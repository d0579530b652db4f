"""``MermaidGenerator``: the DAG as a Mermaid flowchart."""

from __future__ import annotations

import re
from collections.abc import Mapping

from taskiq_flow.core.conditions import RUN_DATA
from taskiq_flow.dataflow.dag import DAG, DAGNode
from taskiq_flow.dataflow.drawing import CONTINUE_TAG, condition_text, edge_label

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

# The subgraph of the finally steps: capitalised, so no step of a manifest (a DNS label)
# has the same id.
_FINALLY = "Finally"

# What would end a quoted label, start an entity code, or open an HTML tag or entity
# (labels are rendered as HTML); ``>`` alone is harmless and stays readable.
_SPECIAL = re.compile(r'[#"<]|&(?=[#\w])')
_ENTITIES = {"#": "#35;", '"': "#quot;", "<": "#lt;", "&": "#amp;"}


def _id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _text(text: str) -> str:
    """``text`` inside a quoted Mermaid label, with entity codes for what needs them."""
    return _SPECIAL.sub(lambda match: _ENTITIES[match.group()], text)


def _label(node: DAGNode) -> str:
    """A step's quoted label: its name (tagged when it continues on failure), then its
    condition on a second line."""
    lines = [f"{node.name} [{CONTINUE_TAG}]" if node.continue_on_failure else node.name]
    condition = condition_text(node)
    if condition is not None:
        lines.append(f"when: {condition}")
    return '"' + "<br/>".join(map(_text, lines)) + '"'


def _edge_text(label: str) -> str:
    """An edge label between pipes: bare when plain words, else quoted."""
    return label if re.fullmatch(r"[\w ,]+", label) else f'"{_text(label)}"'


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
        """Steps as boxes, data as labelled edges, external inputs as rounded nodes.

        ``finally`` steps are in a subgraph titled ``finally``; a step's condition is the
        second line of its label; edges that pass no data are dotted; edge labels are
        ``edge_label()``.
        """
        lines = [f"flowchart {self.direction}"]
        ordered = self.dag.topological_sort()
        for node in ordered:
            if not node.final:
                lines.append(f"    {_id(node.name)}[{_label(node)}]")
        finals = [node for node in ordered if node.final]
        if finals:
            lines.append(f'    subgraph {_FINALLY}["finally"]')
            lines.extend(f"        {_id(node.name)}[{_label(node)}]" for node in finals)
            lines.append("    end")
        for name in self.dag.external_inputs:
            lines.append(f'    {_id("in_" + name)}(["{name}"])')
        readers = self.dag.run_readers()
        if readers:
            lines.append(f'    {_id("in_" + RUN_DATA)}(["{RUN_DATA}"])')
        for edge in self.dag.to_dict()["edges"]:
            label = edge_label(edge)
            arrow = "-->" if edge["data"] else "-.->"
            text = f"|{_edge_text(label)}|" if label else ""
            lines.append(f"    {_id(edge['source'])} {arrow}{text} {_id(edge['target'])}")
        for node in ordered:
            for name in node.consumed:
                if name in self.dag.external_inputs or (name == RUN_DATA and node.name in readers):
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
