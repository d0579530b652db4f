"""``DAG`` and ``DAGNode``: steps connected by the data they produce and consume."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

from taskiq_flow.core.conditions import RUN_DATA, Condition
from taskiq_flow.core.plan import ANY_OUTCOME, Plan
from taskiq_flow.core.retry import NO_RETRY, RetryPolicy
from taskiq_flow.core.states import Phase
from taskiq_flow.dataflow import drawing
from taskiq_flow.dataflow.memory import paused_gc
from taskiq_flow.dataflow.node import DataNode
from taskiq_flow.errors import (
    CycleError,
    DuplicateNodeError,
    DuplicateOutputError,
    EmptyPipelineError,
    MissingInputsError,
    UnknownDependencyError,
)

__all__ = ["DAG", "NOTHING", "POSITIONAL_ITEM", "DAGNode", "NodeKind"]

NodeKind = Literal["task", "map", "reduce"]

POSITIONAL_ITEM = "*"
"""A map step's ``map_param`` that passes each item as the first positional argument."""

# What a node holds when it has no args, optional inputs, resources or bindings: one shared
# read-only mapping instead of an empty dict per node (64 bytes each, four per node).
NOTHING: Mapping[str, Any] = MappingProxyType({})


def _nothing() -> Mapping[str, Any]:
    return NOTHING


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
    optional_inputs: Mapping[str, Any] = field(default_factory=_nothing)
    depends_on: tuple[str, ...] = ()
    task: Any = None
    retry: RetryPolicy = NO_RETRY
    timeout: float | None = None
    resources: Mapping[str, Any] = field(default_factory=_nothing)
    multi_output: bool = False
    args: Mapping[str, Any] = field(default_factory=_nothing)
    bindings: Mapping[str, str] = field(default_factory=_nothing)
    kind: NodeKind = "task"
    map_over: str | None = None
    map_items: Sequence[Any] | None = None
    map_param: str | None = None
    max_parallel: int | None = None
    reduce_initial: Any = None
    has_initial: bool = False
    chunk_size: int | None = None
    filter_items: bool = False
    # Its failure does not fail the run (its consumers are skipped): the step's own
    # override of the run's error mode.
    continue_on_failure: bool = False
    # Control flow (see ``core.plan.NodeSpec``): a condition, the outcomes it waits for
    # per dependency (only those not ``Succeeded`` alone), a ``finally`` step.
    when: Condition | None = None
    accepts: Mapping[str, frozenset[Phase]] = field(default_factory=_nothing)
    final: bool = False
    level: int = 0
    # Set by the DAG: tuples, not sets (a set costs 216 bytes even when it holds one name).
    deps: tuple[str, ...] = field(default=(), repr=False)
    downstream: tuple[str, ...] = field(default=(), repr=False)
    # The data name passed as the first positional argument (a sequential pipeline's
    # previous output), so no driver needs to know the task's parameter names.
    first_arg: str | None = None

    @property
    def dependencies(self) -> frozenset[str]:
        """The steps this node waits for (set by the DAG)."""
        return frozenset(self.deps)

    @property
    def dependents(self) -> frozenset[str]:
        """The steps that wait for this node (set by the DAG)."""
        return frozenset(self.downstream)

    @property
    def fan_out(self) -> bool:
        """Whether the step runs one task per item (a map or filter step)."""
        return self.kind == "map"

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
        if self.map_over is None or self.map_over in self.inputs:
            return self.inputs
        return (*self.inputs, self.map_over)

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
        # Producers by number (position in node_list): the plan works on numbers, and
        # resolving each input once here saves resolving names again there.
        self._producers: dict[str, int] = {}
        for number, node in enumerate(node_list):
            if node.name in self.nodes:
                raise DuplicateNodeError(node.name)
            self.nodes[node.name] = node
            for output in node.outputs:
                known = self._producers.setdefault(output, number)
                if known != number:
                    raise DuplicateOutputError(output, [node_list[known].name, node.name])
        # Required data nothing produces, and the steps that need it (for validate()).
        self._needed: dict[str, list[str]] = {}
        self._numbers: dict[str, int] | None = None  # steps by name, for depends_on
        names = list(self.nodes)
        upstream = [self._link(number, node, names) for number, node in enumerate(node_list)]
        # The nodes are the plan's steps. Raises CycleError naming the steps on a cycle.
        self.plan = Plan.numbered(self.nodes, upstream)
        for node, dependents in zip(node_list, self.plan.dependents.values(), strict=True):
            node.downstream = dependents
        self.levels: list[list[DAGNode]] = []
        self.compute_levels()

    def _link(self, number: int, node: DAGNode, names: list[str]) -> list[int]:
        """The steps ``node`` waits for, by number: the producers of what it reads, then
        ``depends_on``. Sets ``node.deps`` (the same steps by name)."""
        found: list[int] = []
        for name in node.consumed:
            producer = self._producers.get(name)
            if producer is None:
                # A finally step's ``run`` comes from the core, not from a step.
                if not (node.final and name == RUN_DATA):
                    self._needed.setdefault(name, []).append(node.name)
            elif producer == number:
                raise CycleError([node.name])  # a step cannot wait for its own output
            elif producer not in found:
                found.append(producer)
        for name in node.optional_inputs:
            producer = self._producers.get(name)
            if producer is not None and producer != number and producer not in found:
                found.append(producer)
        for name in node.depends_on:
            step = self._step_number(node, name, number, names)
            if step not in found:
                found.append(step)
        if node.when is not None:
            self._link_condition(number, node, names, found)
        node.deps = tuple(map(names.__getitem__, found))
        return found

    def _step_number(self, node: DAGNode, name: str, number: int, names: list[str]) -> int:
        """The number of step ``name``, which ``node`` (number ``number``) waits for."""
        if self._numbers is None:
            self._numbers = {step: n for n, step in enumerate(names)}
        step = self._numbers.get(name)
        if step is None:
            raise UnknownDependencyError(node.name, name)
        if step == number:
            raise CycleError([node.name])
        return step

    def _link_condition(
        self, number: int, node: DAGNode, names: list[str], found: list[int]
    ) -> None:
        """A condition waits for the producers of the outputs it reads (as an input
        would) and for the steps whose phase it reads, whatever their outcome."""
        assert node.when is not None
        for name in node.when.outputs:
            producer = self._producers.get(name)
            if producer is not None and producer != number and producer not in found:
                found.append(producer)
        if not node.when.steps:
            return
        accepts = dict(node.accepts)
        for name in node.when.steps:
            step = self._step_number(node, name, number, names)
            if step not in found:
                found.append(step)
            if name not in node.depends_on:  # there, its outcomes are as depends_on says
                accepts.setdefault(name, ANY_OUTCOME)
        node.accepts = accepts

    # -- inspection --------------------------------------------------------------------

    @cached_property
    def data(self) -> dict[str, DataNode]:
        """Every data name: who produces it (``None``: an external input), who reads it.

        Built on first use: running and validating a graph never need it.
        """
        steps = list(self.nodes)
        data = {name: DataNode(name, steps[n]) for name, n in self._producers.items()}
        for node in self.nodes.values():
            for name in (*node.consumed, *node.optional_inputs):
                found = data.get(name)
                if found is None:
                    if name in node.optional_inputs:
                        continue  # its default will be used
                    found = data[name] = DataNode(name)
                found.consumers.append(node.name)
        return data

    @property
    def external_inputs(self) -> list[str]:
        """Data names no step produces: the caller passes them."""
        return list(self._needed)

    @property
    def outputs(self) -> list[str]:
        """Every data name some step produces."""
        return list(self._producers)

    def topological_sort(self) -> list[DAGNode]:
        """The nodes in an order where each comes after everything it depends on."""
        return [self.nodes[name] for name in self.plan.order]

    def compute_levels(self) -> list[list[DAGNode]]:
        """Group nodes by depth: level *n* depends only on levels below it."""
        steps = list(self.nodes.values())
        for node, level in zip(steps, self.plan.level.values(), strict=True):
            node.level = level
        self.levels = [[] for _ in self.plan.levels]
        for number in self.plan.positions:
            self.levels[steps[number].level].append(steps[number])
        return self.levels

    def get_ready_tasks(self, completed: Iterable[DAGNode | str] = ()) -> list[DAGNode]:
        """Nodes not in ``completed`` whose dependencies all are."""
        done = {n.name if isinstance(n, DAGNode) else n for n in completed}
        return [
            node
            for node in self.topological_sort()
            if node.name not in done and all(dep in done for dep in node.deps)
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
        missing = {name: users for name, users in self._needed.items() if name not in given}
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

    # -- drawing (``taskiq_flow.dataflow.drawing``) -------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Nodes, edges and levels as JSON-ready data (see ``drawing.graph_dict``)."""
        return drawing.graph_dict(self)

    def edge(self, source: str, target: str) -> dict[str, Any]:
        """The edge from step ``source`` to step ``target``, as in ``to_dict()``."""
        return drawing.graph_edge(self, source, target)

    def run_readers(self) -> list[str]:
        """The ``finally`` steps that consume the reserved data ``run`` (the run's outcome,
        which no step produces), in plan order."""
        run = self.data.get(RUN_DATA)
        if run is None or run.producer is not None or RUN_DATA in self._needed:
            return []
        return sorted(run.consumers, key=self.plan.index.__getitem__)

    def to_dot(self, name: str = "pipeline") -> str:
        """The graph in Graphviz DOT (see ``drawing.graph_dot``)."""
        return drawing.graph_dot(self, name)

    def format(self) -> str:
        """A plain-text listing of the levels and each step's inputs and outputs."""
        return drawing.graph_text(self)

    def print(self) -> None:
        """Print ``format()``."""
        print(self.format())
