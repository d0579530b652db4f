"""A validated graph of steps: what the state machine schedules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from taskiq_flow.core.conditions import Condition
from taskiq_flow.core.retry import NO_RETRY, RetryPolicy
from taskiq_flow.core.states import Phase
from taskiq_flow.errors import (
    CycleError,
    DuplicateNodeError,
    FinallyDependencyError,
    UnknownDependencyError,
)

__all__ = ["ANY_OUTCOME", "NodeSpec", "Plan", "Step"]

ANY_OUTCOME = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.SKIPPED})
"""The outcomes a step may wait for (``dependsOn: [{step, on: [...]}]``)."""


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One schedulable step: its name, the steps it waits for, retries and timeout.

    A ``fan_out`` step runs one task per item (at most ``max_parallel`` at once); with
    ``filter_items`` its output is the items whose task returned a truthy value.
    ``retry`` and ``timeout`` then apply to each item. A ``continue_on_failure`` step's
    failure is handled as under ``CONTINUE_ON_ERROR`` and never fails the run.

    A step runs once each of its ``deps`` ended in an outcome it accepts: ``accepts``
    names the outcomes per dependency, ``Succeeded`` alone for one it does not name (a
    dependency ending otherwise skips the step). Then ``when``, if given, decides. A
    ``final`` step (``finally``) runs once every other step is over, whatever they did.
    """

    name: str
    deps: tuple[str, ...] = ()
    retry: RetryPolicy = NO_RETRY
    timeout: float | None = None
    fan_out: bool = False
    max_parallel: int | None = None
    filter_items: bool = False
    continue_on_failure: bool = False
    when: Condition | None = None
    accepts: Mapping[str, frozenset[Phase]] = field(default_factory=dict)
    final: bool = False


class Step(Protocol):
    """What a plan needs of a step (a ``NodeSpec``, or a dataflow graph's own node)."""

    @property
    def name(self) -> str: ...

    @property
    def deps(self) -> tuple[str, ...]: ...

    @property
    def retry(self) -> RetryPolicy: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def fan_out(self) -> bool: ...

    @property
    def max_parallel(self) -> int | None: ...

    @property
    def filter_items(self) -> bool: ...

    @property
    def continue_on_failure(self) -> bool: ...

    @property
    def when(self) -> Condition | None: ...

    @property
    def accepts(self) -> Mapping[str, frozenset[Phase]]: ...

    @property
    def final(self) -> bool: ...


class Plan:
    """Steps in a fixed topological order, with levels and reverse edges precomputed.

    Building a plan is linear in steps plus edges; it raises a named ``DAGError`` for
    duplicate names, unknown dependencies and cycles (naming the steps on the cycle).
    ``order`` names the steps in that order, ``positions`` gives the same order as
    positions in ``nodes``, ``index`` each step's place in it, ``level`` its depth.
    """

    __slots__ = ("dependents", "index", "level", "levels", "nodes", "order", "positions")

    def __init__(self, nodes: Iterable[Step]) -> None:
        steps: dict[str, Step] = {}
        position: dict[str, int] = {}
        for node in nodes:
            if node.name in position:
                raise DuplicateNodeError(node.name)
            position[node.name] = len(position)
            steps[node.name] = node
        self.nodes: Mapping[str, Step] = steps
        upstream: list[list[int]] = []
        for number, node in enumerate(self.nodes.values()):
            found: list[int] = []
            for dep in node.deps:
                if dep not in position:
                    raise UnknownDependencyError(node.name, dep)
                if position[dep] == number:
                    raise CycleError([node.name])
                if position[dep] not in found:
                    found.append(position[dep])
            upstream.append(found)
        self._arrange(upstream)

    @classmethod
    def numbered(cls, nodes: Mapping[str, Step], upstream: Sequence[Sequence[int]]) -> Plan:
        """A plan whose dependencies are already resolved: ``upstream[i]`` are the positions
        in ``nodes`` of the steps the ``i``-th waits for, without repeats or ``i`` itself,
        and each step's ``deps`` names the same steps.

        For a caller that resolved the names anyway (the dataflow DAG does, from outputs);
        ``nodes`` is kept, not copied.
        """
        plan = cls.__new__(cls)
        plan.nodes = nodes
        plan._arrange(upstream)
        return plan

    def _arrange(self, upstream: Sequence[Sequence[int]]) -> None:
        # The graph walk works on step numbers: indexing lists touches far less memory
        # than looking names up in dicts, which on a large graph costs a cache miss each.
        names = list(self.nodes)
        _check_finally(list(self.nodes.values()), upstream)
        downstream: list[list[int]] = [[] for _ in names]
        for number, found in enumerate(upstream):
            for dep in found:
                downstream[dep].append(number)
        waiting = [len(found) for found in upstream]
        order, depth = _walk(waiting, downstream)
        if len(order) != len(names):
            stuck = {names[n] for n, count in enumerate(waiting) if count > 0}
            raise CycleError(self._find_cycle(stuck))
        self.positions: tuple[int, ...] = tuple(order)
        self.order: tuple[str, ...] = tuple(map(names.__getitem__, order))
        # Both dicts in declaration order: inserting the names in the order they were
        # created touches memory in sequence, not at random.
        rank = [0] * len(order)
        for index, number in enumerate(order):
            rank[number] = index
        self.index: dict[str, int] = dict(zip(names, rank, strict=True))
        self.level: dict[str, int] = dict(zip(names, depth, strict=True))
        self.levels: list[list[str]] = [[] for _ in range(1 + max(depth, default=-1))]
        for n in order:
            self.levels[depth[n]].append(names[n])
        self.dependents: dict[str, tuple[str, ...]] = {
            name: tuple(map(names.__getitem__, after))
            for name, after in zip(names, downstream, strict=True)
        }

    def __len__(self) -> int:
        return len(self.nodes)

    def deps(self, name: str) -> tuple[str, ...]:
        """The steps ``name`` waits for."""
        return self.nodes[name].deps

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
        policy = retry or NO_RETRY
        return cls(NodeSpec(name, tuple(d), policy) for name, d in deps.items())


def _check_finally(steps: Sequence[Step], upstream: Sequence[Sequence[int]]) -> None:
    final = [step.final for step in steps]
    if not any(final):
        return
    for number, found in enumerate(upstream):
        if final[number]:
            continue
        for dep in found:
            if final[dep]:
                raise FinallyDependencyError(steps[number].name, steps[dep].name)


def _walk(waiting: list[int], downstream: list[list[int]]) -> tuple[list[int], list[int]]:
    """Kahn's algorithm over step numbers, stable (among ready steps the earlier declared
    goes first), and each step's depth; ``waiting`` is left with the steps never reached.
    """
    depth = [0] * len(waiting)
    order = [number for number, count in enumerate(waiting) if count == 0]
    head = 0
    while head < len(order):
        number = order[head]
        head += 1
        below = depth[number] + 1
        for after in downstream[number]:
            if depth[after] < below:
                depth[after] = below
            waiting[after] -= 1
            if waiting[after] == 0:
                order.append(after)
    return order, depth
