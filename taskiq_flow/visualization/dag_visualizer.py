"""``DAGVisualizer``: export a DAG for other tools and find its critical path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from taskiq_flow.dataflow.dag import DAG
from taskiq_flow.dataflow.drawing import edge_label
from taskiq_flow.visualization.ascii import render_ascii

__all__ = ["DAGVisualizer"]

_DURATION_KEYS = ("estimated_duration_s", "estimated_seconds", "duration_s")


class DAGVisualizer:
    """Views of one DAG.

    ``durations`` (measured seconds per step) or ``resource_profiles`` (with an
    ``estimated_duration_s``) weight the critical path; without them every step
    weighs the same.
    """

    def __init__(
        self,
        dag: DAG,
        durations: Mapping[str, float] | None = None,
        resource_profiles: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.dag = dag
        self.durations = dict(durations or {})
        self.resource_profiles = dict(resource_profiles or {})

    def weights(self) -> dict[str, float] | None:
        """Seconds per step, from measurements first, then resource profiles."""
        weights: dict[str, float] = {}
        for name, node in self.dag.nodes.items():
            if name in self.durations:
                weights[name] = float(self.durations[name])
                continue
            profile = (
                self.resource_profiles.get(name)
                or self.resource_profiles.get(node.task_name)
                or node.resources
            )
            for key in _DURATION_KEYS:
                if key in profile:
                    weights[name] = float(profile[key])
                    break
        return weights or None

    def to_dict(self) -> dict[str, Any]:
        """Nodes, edges, levels and external inputs."""
        return self.dag.to_dict()

    def to_json(self, indent: int | None = 2) -> str:
        """``to_dict()`` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def to_cytoscape_json(self) -> dict[str, Any]:
        """Elements in the format Cytoscape.js loads (an edge's label as in the other
        drawings: its data, then ``when: ...`` and ``on ...`` when it has them)."""
        data = self.to_dict()
        nodes = [
            {
                "data": {
                    "id": n["id"],
                    "label": n["id"],
                    "task": n["task"],
                    "level": n["level"],
                    "outputs": n["outputs"],
                }
            }
            for n in data["nodes"]
        ]
        edges = [
            {
                "data": {
                    "id": f"{e['source']}->{e['target']}",
                    "source": e["source"],
                    "target": e["target"],
                    "label": edge_label(e),
                }
            }
            for e in data["edges"]
        ]
        return {"elements": {"nodes": nodes, "edges": edges}}

    def to_graphviz(self, name: str = "pipeline") -> str:
        """The DAG in Graphviz DOT (render with ``dot -Tpng``)."""
        return self.dag.to_dot(name)

    def visualize_ascii(self, width: int = 80) -> str:
        """A text drawing, one level after another, that fits ``width`` columns."""
        return render_ascii(self.dag, width)

    def detect_critical_path(self) -> list[str]:
        """The longest chain of steps by weight (see ``weights``), first to last."""
        return self.dag.critical_path(self.weights())

    def find_parallelizable_groups(self) -> list[list[str]]:
        """Sets of steps that can run at the same time: the levels with two or more."""
        return [[n.name for n in level] for level in self.dag.levels if len(level) > 1]
