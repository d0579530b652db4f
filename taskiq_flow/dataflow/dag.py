"""``DAG`` and ``DAGNode``: steps connected by the data they produce and consume."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from taskiq_flow.core.plan import NodeSpec, Plan
from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.dataflow.memory import paused_gc
from taskiq_flow.dataflow.node import DataNode
from taskiq_flow.errors import (
    CycleError,
    DuplicateOutputError,
    EmptyPipelineError,
    MissingInputsError,
)

__all__ = ["DAG", "DAGNode", "NodeKind"]

NodeKind = Literal["task", "map", "reduce"]


# Slots: a graph of 10,000 nodes would otherwise carry 10,000 attribute dicts of ~30 keys.
@dataclass(eq=False, slots=True)
class DAGNode:
    """One step of a dataflow graph.

    ``inputs`` must be provided (by a producer or the caller); ``optional_inputs`` map
    names to the defaults used when nothing provides them; ``bindings`` maps a parameter
    to the data name it receives when the two differ. ``depends_on`` orders steps
    without passing data. A ``map`` node calls its task once per item of ``map_over``
    (a data name) or ``map_items`` (a fixed list), passing the item as ``map_param``; a
    ``reduce`` node folds the list ``inputs[0]`` with its task.
    """

    name: str
    task_name: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...] = ()
    optional_inputs: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    task: Any = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    multi_output: bool = False
    args: Mapping[str, Any] = field(default_factory=dict)
    bindings: Mapping[str, str] = field(default_factory=dict)
    kind: NodeKind = "task"
    map_over: str | None = None
    map_items: Sequence[Any] | None = None
    map_param: str | None = None
    max_parallel: int | None = None
    reduce_initial: Any = None
    has_initial: bool = False
    chunk_size: int | None = None
    filter_items: bool = False
    level: int = 0
    dependencies: set[str] = field(default_factory=set)
    dependents: set[str] = field(default_factory=set)

    @property
    def output(self) -> str:
        """The primary output."""
        return self.outputs[0]

    def parameter_for(self, data_name: str) -> str:
        """The task parameter that receives ``data_name``."""
        for param, data in self.bindings.items():
            if data == data_name:
                return param
        return data_name

    @property
    def consumed(self) -> tuple[str, ...]:
        """Every data name this node reads: inputs, then the map source."""
        extra = (self.map_over,) if self.map_over and self.map_over not in self.inputs else ()
        return (*self.inputs, *extra)

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DAGNode) and other.name == self.name

    def __repr__(self) -> str:
        return f"DAGNode({self.name!r}, outputs={list(self.outputs)}, level={self.level})"


class DAG:
    """A validated dataflow graph.

    Construction checks what can be checked without the caller's inputs: no two producers
    of one output, no cycles, no unknown ``depends_on``. ``validate(inputs)`` checks that
    every external input is given.
    """

    @paused_gc()
    def __init__(self, nodes: Iterable[DAGNode]) -> None:
        self.nodes: dict[str, DAGNode] = {}
        node_list = list(nodes)
        if not node_list:
            raise EmptyPipelineError()
        producers: dict[str, str] = {}
        for node in node_list:
            self.nodes.setdefault(node.name, node)
            for output in node.outputs:
                if output in producers and producers[output] != node.name:
                    raise DuplicateOutputError(output, [producers[output], node.name])
                producers[output] = node.name
        self.data: dict[str, DataNode] = {
            name: DataNode(name, producer) for name, producer in producers.items()
        }
        specs = []
        for node in node_list:
            consumed = [*node.consumed, *node.optional_inputs]
            deps: list[str] = []
            for name in consumed:
                data = self.data.get(name)
                if data is None:
                    if name in node.optional_inputs:
                        continue  # its default will be used
                    data = self.data[name] = DataNode(name)
                data.consumers.append(node.name)
                if data.producer == node.name and name in node.consumed:
                    raise CycleError([node.name])  # a step cannot wait for its own output
                if data.producer is not None and data.producer != node.name:
                    deps.append(data.producer)
            deps.extend(node.depends_on)
            node.dependencies = set(deps)
            specs.append(NodeSpec(node.name, tuple(dict.fromkeys(deps)), node.retry, node.timeout))
        # Builds the plan: raises DuplicateNodeError, UnknownDependencyError, CycleError.
        self.plan = Plan(specs)
        for name, dependents in self.plan.dependents.items():
            self.nodes[name].dependents = set(dependents)
        self.levels: list[list[DAGNode]] = []
        self.compute_levels()

    # -- inspection --------------------------------------------------------------------

    @property
    def external_inputs(self) -> list[str]:
        """Data names no step produces: the caller passes them."""
        return [name for name, data in self.data.items() if data.producer is None]

    @property
    def outputs(self) -> list[str]:
        """Every data name some step produces."""
        return [name for name, data in self.data.items() if data.producer is not None]

    def topological_sort(self) -> list[DAGNode]:
        """The nodes in an order where each comes after everything it depends on."""
        return [self.nodes[name] for name in self.plan.order]

    def compute_levels(self) -> list[list[DAGNode]]:
        """Group nodes by depth: level *n* depends only on levels below it."""
        for name, level in self.plan.level.items():
            self.nodes[name].level = level
        self.levels = [[self.nodes[n] for n in names] for names in self.plan.levels]
        return self.levels

    def get_ready_tasks(self, completed: Iterable[DAGNode | str] = ()) -> list[DAGNode]:
        """Nodes not in ``completed`` whose dependencies all are."""
        done = {n.name if isinstance(n, DAGNode) else n for n in completed}
        return [
            node
            for node in self.topological_sort()
            if node.name not in done and node.dependencies <= done
        ]

    def get_node(self, name: str) -> DAGNode:
        """The node named ``name``."""
        return self.nodes[name]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Any:
        return iter(self.topological_sort())

    def validate(self, provided: Iterable[str] = ()) -> None:
        """Raise ``MissingInputsError`` for required inputs nothing provides."""
        given = set(provided)
        missing: dict[str, list[str]] = {}
        for name, data in self.data.items():
            if data.producer is None and name not in given:
                users = [
                    consumer for consumer in data.consumers if name in self.nodes[consumer].consumed
                ]
                if users:
                    missing[name] = users
        if missing:
            raise MissingInputsError(missing)

    def critical_path(self, weights: Mapping[str, float] | None = None) -> list[str]:
        """The longest chain of steps, by ``weights`` (seconds) or by step count."""
        best: dict[str, float] = {}
        previous: dict[str, str | None] = {}
        for name in self.plan.order:
            node_weight = 1.0 if weights is None else float(weights.get(name, 1.0))
            deps = self.plan.deps(name)
            parent = max(deps, key=lambda d: best[d], default=None)
            best[name] = node_weight + (best[parent] if parent is not None else 0.0)
            previous[name] = parent
        end: str | None = max(best, key=lambda n: best[n])
        path: list[str] = []
        while end is not None:
            path.append(end)
            end = previous[end]
        path.reverse()
        return path

    # -- drawing -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Nodes, edges and levels as JSON-ready data."""
        return {
            "nodes": [
                {
                    "id": node.name,
                    "task": node.task_name,
                    "kind": node.kind,
                    "outputs": list(node.outputs),
                    "inputs": list(node.consumed),
                    "level": node.level,
                }
                for node in self.topological_sort()
            ],
            "edges": [
                {"source": dep, "target": node.name, "data": self._edge_data(dep, node)}
                for node in self.topological_sort()
                for dep in self.plan.deps(node.name)
            ],
            "levels": [[n.name for n in level] for level in self.levels],
            "external_inputs": self.external_inputs,
        }

    def _edge_data(self, producer: str, consumer: DAGNode) -> list[str]:
        produced = set(self.nodes[producer].outputs)
        return [d for d in (*consumer.consumed, *consumer.optional_inputs) if d in produced]

    def to_dot(self, name: str = "pipeline") -> str:
        """The graph in Graphviz DOT."""
        lines = [f'digraph "{name}" {{', "  rankdir=LR;", "  node [shape=box];"]
        for node in self.topological_sort():
            label = f"{node.name}\\n→ {', '.join(node.outputs)}"
            lines.append(f'  "{node.name}" [label="{label}"];')
        for ext in self.external_inputs:
            lines.append(f'  "input:{ext}" [label="{ext}", shape=ellipse, style=dashed];')
        for node in self.topological_sort():
            for dep in self.plan.deps(node.name):
                data = ", ".join(self._edge_data(dep, node))
                attr = f' [label="{data}"]' if data else " [style=dotted]"
                lines.append(f'  "{dep}" -> "{node.name}"{attr};')
            for inp in node.consumed:
                if inp in self.data and self.data[inp].producer is None:
                    lines.append(f'  "input:{inp}" -> "{node.name}" [style=dashed];')
        lines.append("}")
        return "\n".join(lines)

    def format(self) -> str:
        """A plain-text listing of the levels and each step's inputs and outputs."""
        lines = []
        if self.external_inputs:
            lines.append(f"External inputs: {', '.join(self.external_inputs)}")
        for index, level in enumerate(self.levels):
            lines.append(f"Level {index}:")
            for node in level:
                needs = ", ".join(node.consumed) or "-"
                after = (
                    f" (after {', '.join(sorted(node.dependencies))})" if node.dependencies else ""
                )
                lines.append(f"  {node.name}: {needs} → {', '.join(node.outputs)}{after}")
        return "\n".join(lines)

    def print(self) -> None:
        """Print ``format()``."""
        print(self.format())
