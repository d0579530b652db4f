"""``DataflowRegistry``: register tasks with their inputs and outputs, build the DAG."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskiq_flow.dataflow.builder import DAGBuilder, node_for_task
from taskiq_flow.dataflow.dag import DAG, DAGNode

__all__ = ["DataflowRegistry"]


class DataflowRegistry:
    """Task metadata by name, and the graph it implies."""

    def __init__(self) -> None:
        self._nodes: dict[str, DAGNode] = {}

    def register_task(
        self,
        task: Any,
        output: str | Sequence[str] | None = None,
        inputs: Sequence[str] | None = None,
        **meta: Any,
    ) -> DAGNode:
        """Register ``task``; ``output``/``inputs`` override its ``@pipeline_task``.

        ``meta`` takes the options of ``node_for_task`` (``name``, ``depends_on``,
        ``retry``, ``timeout``, ``resources``, ``args``). Registering a name again
        replaces the earlier registration.
        """
        node = node_for_task(task, output, inputs, **meta)
        self._nodes[node.name] = node
        return node

    def unregister(self, name: str) -> None:
        """Forget the task registered as ``name``."""
        self._nodes.pop(name, None)

    def get_tasks(self) -> list[DAGNode]:
        """Every registered task, in registration order."""
        return list(self._nodes.values())

    def get_outputs(self) -> list[str]:
        """Every data name a registered task produces."""
        return [output for node in self._nodes.values() for output in node.outputs]

    def get_external_inputs(self) -> list[str]:
        """Required inputs that no registered task produces."""
        produced = set(self.get_outputs())
        seen: dict[str, None] = {}
        for node in self._nodes.values():
            for name in node.consumed:
                if name not in produced:
                    seen.setdefault(name)
        return list(seen)

    def get_producer(self, data_name: str) -> DAGNode | None:
        """The task that produces ``data_name``."""
        for node in self._nodes.values():
            if data_name in node.outputs:
                return node
        return None

    def get_consumers(self, data_name: str) -> list[DAGNode]:
        """The tasks that consume ``data_name``."""
        return [
            node
            for node in self._nodes.values()
            if data_name in node.consumed or data_name in node.optional_inputs
        ]

    def build_dag(self) -> DAG:
        """Build and validate the graph."""
        builder = DAGBuilder()
        for node in self._nodes.values():
            builder.add_node(node)
        return builder.build()

    def __len__(self) -> int:
        return len(self._nodes)
