"""A validated graph of steps: what the state machine schedules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.errors import CycleError, DuplicateNodeError, UnknownDependencyError

__all__ = ["NodeSpec", "Plan"]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One schedulable step: its name, the steps it waits for, retries and timeout."""

    name: str
    deps: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None


class Plan:
    """Steps in a fixed topological order, with levels and reverse edges precomputed.

    Building a plan is linear in steps plus edges; it raises a named ``DAGError`` for
    duplicate names, unknown dependencies and cycles (naming the steps on the cycle).
    """

    __slots__ = ("dependents", "index", "level", "levels", "nodes", "order")

    def __init__(self, nodes: Iterable[NodeSpec]) -> None:
        self.nodes: dict[str, NodeSpec] = {}
        for node in nodes:
            if node.name in self.nodes:
                raise DuplicateNodeError(node.name)
            self.nodes[node.name] = node
        self.dependents: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for dep in dict.fromkeys(node.deps):
                if dep not in self.nodes:
                    raise UnknownDependencyError(node.name, dep)
                if dep == node.name:
                    raise CycleError([node.name])
                self.dependents[dep].append(node.name)
        self.order: tuple[str, ...] = self._topological_order()
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.order)}
        self.level: dict[str, int] = {}
        for name in self.order:
            deps = self.nodes[name].deps
            self.level[name] = 1 + max((self.level[d] for d in deps), default=-1)
        depth = 1 + max(self.level.values(), default=-1)
        self.levels: list[list[str]] = [[] for _ in range(depth)]
        for name in self.order:
            self.levels[self.level[name]].append(name)

    def __len__(self) -> int:
        return len(self.nodes)

    def deps(self, name: str) -> tuple[str, ...]:
        """The steps ``name`` waits for."""
        return self.nodes[name].deps

    def _topological_order(self) -> tuple[str, ...]:
        # Kahn's algorithm, stable: among ready steps, declaration order wins.
        waiting = {name: len(set(node.deps)) for name, node in self.nodes.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        order: list[str] = []
        head = 0
        while head < len(ready):
            name = ready[head]
            head += 1
            order.append(name)
            for dependent in self.dependents[name]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    ready.append(dependent)
        if len(order) != len(self.nodes):
            raise CycleError(self._find_cycle({n for n, c in waiting.items() if c > 0}))
        return tuple(order)

    def _find_cycle(self, stuck: set[str]) -> list[str]:
        # Every stuck node has a stuck dependency, so walking deps must revisit a node.
        start = next(name for name in self.nodes if name in stuck)
        path: list[str] = []
        seen: dict[str, int] = {}
        node = start
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(d for d in self.nodes[node].deps if d in stuck)
        cycle = path[seen[node] :]
        cycle.reverse()  # report in data-flow direction: producer → consumer
        return cycle

    def descendants(self, name: str) -> list[str]:
        """Every step that depends on ``name``, directly or transitively, in plan order."""
        seen: set[str] = set()
        stack = [name]
        while stack:
            for dependent in self.dependents[stack.pop()]:
                if dependent not in seen:
                    seen.add(dependent)
                    stack.append(dependent)
        return sorted(seen, key=self.index.__getitem__)

    @classmethod
    def from_mapping(
        cls, deps: Mapping[str, Iterable[str]], retry: RetryPolicy | None = None
    ) -> Plan:
        """A plan from ``{step: [dependencies]}`` with one retry policy for all."""
        policy = retry or RetryPolicy()
        return cls(NodeSpec(name, tuple(d), policy) for name, d in deps.items())
