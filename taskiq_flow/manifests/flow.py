"""The control flow of a compiled pipeline: ``when``, ``dependsOn`` outcomes, ``finally``.

``control_flow`` completes the nodes the compiler built from the steps: it compiles each
``when`` condition (once per pipeline), turns what a condition reads into dependencies,
records which outcomes of each dependency a step waits for, and marks the ``finally``
steps. What it cannot accept it reports with the field path, like the compiler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from taskiq_flow.core.conditions import RUN_DATA, Condition, ConditionError
from taskiq_flow.core.plan import ANY_OUTCOME
from taskiq_flow.core.states import Phase
from taskiq_flow.dataflow.dag import NOTHING, DAGNode
from taskiq_flow.errors import FinallyDependencyError
from taskiq_flow.manifests.models import Outcome, PipelineSpec, StepSpec

__all__ = ["RUN_DATA", "consumed_at", "control_flow", "step_path"]

Report = Callable[[int | None, str, str], None]
"""``report(step index, field path under the step, message)``."""


def step_path(spec: PipelineSpec, index: int | None, prefix: str = "spec") -> str:
    """The field path of step ``index`` of ``spec.all_steps``: a finally step's says so."""
    if index is None:
        return f"{prefix}.steps"
    regular = len(spec.steps)
    if index < regular:
        return f"{prefix}.steps[{index}]"
    return f"{prefix}.finally[{index - regular}]"


def control_flow(
    spec: PipelineSpec, steps: Sequence[StepSpec], nodes: Sequence[DAGNode], report: Report
) -> bool:
    """Set ``when``, ``accepts`` and ``final`` on ``nodes`` (one per step of ``steps``,
    the finally steps last); False if a problem was reported."""
    checker = _Checker(spec, steps, report)
    for index, (step, node) in enumerate(zip(steps, nodes, strict=True)):
        checker.complete(index, step, node)
    return checker.ok


class _Checker:
    def __init__(self, spec: PipelineSpec, steps: Sequence[StepSpec], report: Report) -> None:
        self.regular = len(spec.steps)
        self.finals = {step.name for step in steps[self.regular :]}
        self.step_names = [step.name for step in steps]
        self.names = set(self.step_names)
        self.producers = {step.output_name: step.name for step in steps}
        self.inputs = {spec_input.name for spec_input in spec.inputs or ()}
        self._report = report
        self.ok = True

    def report(self, index: int, where: str, message: str) -> None:
        self._report(index, where, message)
        self.ok = False

    def complete(self, index: int, step: StepSpec, node: DAGNode) -> None:
        final = index >= self.regular
        node.final = final
        accepts = {
            dep.step: frozenset(Phase(outcome) for outcome in dep.on)
            for dep in step.dependencies
            if list(dep.on) != [Outcome.SUCCEEDED]
        }
        after = list(node.depends_on)
        if step.when is not None:
            node.when = self.condition(index, step, after, accepts)
        node.depends_on = tuple(dict.fromkeys(after))
        node.accepts = accepts or NOTHING
        if final:
            self.check_final(index, step)
        else:
            self.check_regular(index, step, node)

    def condition(
        self, index: int, step: StepSpec, after: list[str], accepts: dict[str, frozenset[Phase]]
    ) -> Condition | None:
        assert step.when is not None
        try:
            condition = Condition(step.when)
        except ConditionError as exc:
            self.report(index, ".when", f"invalid CEL expression: {exc}{self.hint(exc.unknown)}")
            return None
        final = index >= self.regular
        for name in condition.inputs:
            if name not in self.inputs:
                self.report(index, ".when", f"inputs.{name}: spec.inputs declares no {name!r}")
        for name in condition.outputs:
            producer = self.producers.get(name)
            if producer is None:
                self.report(index, ".when", f"outputs.{name}: no step produces {name!r}")
            elif producer == step.name:
                self.report(index, ".when", f"outputs.{name} is this step's own output")
            elif self.reachable(producer, final, index, ".when"):
                after.append(producer)  # waited for like an input: Succeeded, unless told
        for name in condition.steps:
            if name not in self.names:
                self.report(index, ".when", f"steps[{name!r}]: there is no step {name!r}")
            elif name == step.name:
                self.report(index, ".when", f"steps[{name!r}] is this step itself")
            elif self.reachable(name, final, index, ".when"):
                # Reading a step's phase is waiting for it whatever its outcome, unless
                # dependsOn names the step (then it says which outcomes).
                if name not in after:
                    accepts.setdefault(name, ANY_OUTCOME)
                after.append(name)
        return condition

    def hint(self, name: str | None) -> str:
        """How to write ``name``, a data or step name used bare in a condition."""
        if name in self.inputs:
            return f"; did you mean inputs.{name}?"
        if name in self.producers:
            return f"; did you mean outputs.{name}?"
        if name in self.names:
            return f"; did you mean steps[{name!r}]?"
        return ""

    def reachable(self, name: str, final: bool, index: int, where: str) -> bool:
        """Whether a step may wait for ``name``; reports it when not."""
        if name in self.finals and not final:
            error = FinallyDependencyError(self.step_names[index], name)
            self.report(index, where, error.message)
            return False
        return True

    def check_regular(self, index: int, step: StepSpec, node: DAGNode) -> None:
        for position, dep in enumerate(step.dependencies):
            self.reachable(dep.step, False, index, f".dependsOn[{position}]")
        for name in node.consumed:
            if name == RUN_DATA:
                self.report(
                    index,
                    consumed_at(step, name),
                    f"only finally steps may consume {RUN_DATA!r} (the run's outcome)",
                )
                continue
            producer = self.producers.get(name)
            if producer is not None:
                self.reachable(producer, False, index, consumed_at(step, name))

    def check_final(self, index: int, step: StepSpec) -> None:
        for position, dep in enumerate(step.dependencies):
            if dep.step in self.names and dep.step not in self.finals:
                self.report(
                    index,
                    f".dependsOn[{position}]",
                    f"a finally step runs after every other step: dependsOn may only name "
                    f"other finally steps, not {dep.step!r}",
                )


def consumed_at(step: StepSpec, name: str) -> str:
    """The field of ``step`` that consumes ``name`` (as the compiler names it)."""
    if step.inputs and name in step.inputs:
        return f".inputs[{step.inputs.index(name)}]"
    each = step.each
    if each is not None and each.over == name:
        return f".{'map' if step.map is not None else 'filter'}.over"
    return ""
