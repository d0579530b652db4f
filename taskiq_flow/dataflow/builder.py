"""``DAGBuilder``: turn taskiq tasks and their declarations into ``DAGNode``s."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

from taskiq_flow.core.conditions import Condition, ConditionError
from taskiq_flow.core.plan import ANY_OUTCOME
from taskiq_flow.core.retry import NO_RETRY, RetryPolicy
from taskiq_flow.core.states import Phase
from taskiq_flow.dataflow.dag import DAG, NOTHING, DAGNode
from taskiq_flow.decorators import get_task_spec, inferred_inputs
from taskiq_flow.errors import TaskDefinitionError

__all__ = ["DAGBuilder", "default_node_name", "node_for_task", "task_name_of"]


def task_name_of(task: Any) -> str:
    """The taskiq name of a decorated task (or a plain string)."""
    if isinstance(task, str):
        return task
    name = getattr(task, "task_name", None)
    if not isinstance(name, str):
        raise TaskDefinitionError(
            f"{getattr(task, '__name__', task)!r} is not a taskiq task: decorate it with "
            "@broker.task (every function in a pipeline must be a taskiq task)"
        )
    return name


def default_node_name(task_name: str) -> str:
    """A step's name when none is given: the function part of ``module:function``."""
    return task_name.rsplit(":", 1)[-1]


def node_for_task(
    task: Any,
    output: str | Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    *,
    name: str | None = None,
    depends_on: Sequence[str | Mapping[str, Any]] = (),
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    resources: Mapping[str, Any] | None = None,
    args: Mapping[str, Any] | None = None,
    continue_on_failure: bool | None = None,
    when: str | None = None,
    final: bool = False,
) -> DAGNode:
    """A ``DAGNode`` for ``task``: explicit arguments win over its ``@pipeline_task`` spec.

    ``continue_on_failure``: the step's failure (after its retries) does not fail the run;
    its consumers are skipped. ``when``: a CEL condition over ``inputs``, ``outputs`` and
    ``steps``; false skips the step. ``depends_on`` names steps to run after (once they
    succeeded), or maps ``{"step": name, "on": ["Failed", ...]}`` for other outcomes.
    ``final``: a ``finally`` step, run once every other step is over."""
    task_name = task_name_of(task)
    spec = get_task_spec(task)
    if output is None:
        if spec is None:
            raise TaskDefinitionError(
                f"task {task_name!r} declares no output: decorate it with "
                "@pipeline_task(output=...) or pass output= when registering it"
            )
        outputs = spec.outputs
    else:
        outputs = (output,) if isinstance(output, str) else tuple(output)
    optional: Mapping[str, Any] = NOTHING
    if inputs is None and spec is not None and spec.inputs is not None:
        inputs = spec.inputs
    if isinstance(task, str):
        required: tuple[str, ...] = tuple(inputs or ())
    else:
        inferred, optional = inferred_inputs(task)
        required = tuple(inputs) if inputs is not None else inferred
    static = dict(args) if args else NOTHING
    if static:
        required = tuple(i for i in required if i not in static)
    if any(key in static or key in required for key in optional):
        optional = {k: v for k, v in optional.items() if k not in static and k not in required}
    resources = resources or (spec.resources if spec else None)
    return DAGNode(
        name=name or default_node_name(task_name),
        task_name=task_name,
        outputs=outputs,
        inputs=required,
        optional_inputs=optional,
        depends_on=tuple(e if isinstance(e, str) else str(e["step"]) for e in depends_on),
        task=None if isinstance(task, str) else task,
        retry=retry or (spec.retry if spec else NO_RETRY),
        timeout=timeout if timeout is not None else (spec.timeout if spec else None),
        resources=dict(resources) if resources else NOTHING,
        multi_output=spec.multi_output if spec and output is None else len(outputs) > 1,
        args=static,
        continue_on_failure=(
            continue_on_failure
            if continue_on_failure is not None
            else bool(spec and spec.continue_on_failure)
        ),
        when=_condition(when if when is not None else (spec.when if spec else None)),
        accepts=_accepts(depends_on),
        final=final,
    )


def _condition(source: str | None) -> Condition | None:
    if source is None:
        return None
    try:
        return Condition(source)
    except ConditionError as exc:
        raise TaskDefinitionError(f"invalid when condition {source!r}: {exc}") from None


def _accepts(depends_on: Sequence[str | Mapping[str, Any]]) -> Mapping[str, frozenset[Phase]]:
    """The outcomes waited for, per step, of the ``{"step", "on"}`` entries."""
    found: dict[str, frozenset[Phase]] = {}
    for entry in depends_on:
        if isinstance(entry, str):
            continue
        try:
            outcomes = frozenset(Phase(outcome) for outcome in entry.get("on", ["Succeeded"]))
        except ValueError as exc:
            raise TaskDefinitionError(f"dependsOn {dict(entry)!r}: {exc}") from None
        if not outcomes or not outcomes <= ANY_OUTCOME:
            raise TaskDefinitionError(
                f"dependsOn {dict(entry)!r}: on lists outcomes among Succeeded, Failed, Skipped"
            )
        if outcomes != {Phase.SUCCEEDED}:
            found[str(entry["step"])] = outcomes
    return found or NOTHING


class DAGBuilder:
    """Collects nodes, then builds a validated ``DAG``.

    >>> dag = DAGBuilder().add_task(load).add_task(clean).build()
    """

    def __init__(self) -> None:
        self._nodes: list[DAGNode] = []

    def add_task(
        self,
        task: Any,
        output: str | Sequence[str] | None = None,
        inputs: Sequence[str] | None = None,
        **options: Any,
    ) -> Self:
        """Add ``task`` (see ``node_for_task`` for the options)."""
        self._nodes.append(node_for_task(task, output, inputs, **options))
        return self

    def add_node(self, node: DAGNode) -> Self:
        """Add a ready-made node."""
        self._nodes.append(node)
        return self

    def add_tasks(self, tasks: Iterable[Any]) -> Self:
        """Add each of ``tasks`` with its ``@pipeline_task`` declaration."""
        for task in tasks:
            self.add_task(task)
        return self

    @property
    def nodes(self) -> list[DAGNode]:
        """The nodes added so far."""
        return list(self._nodes)

    def build(self) -> DAG:
        """The ``DAG``; raises a ``DAGError`` when the graph is invalid."""
        return DAG(self._nodes)


def map_node_for_task(
    task: Any,
    *,
    output: str,
    over: str | None = None,
    items: Sequence[Any] | None = None,
    name: str | None = None,
    item_param: str | None = None,
    max_parallel: int | None = None,
    args: Mapping[str, Any] | None = None,
    keep_if_true: bool = False,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    depends_on: Sequence[str] = (),
) -> DAGNode:
    """A node that calls ``task`` once per item of ``over`` (a data name) or ``items``.

    The item goes to ``item_param`` (default: the task's first required parameter); the
    other required parameters are inputs like any step's. The output is the list of
    results in item order — or, with ``keep_if_true``, the items whose result was true.
    """
    if (over is None) == (items is None):
        raise TaskDefinitionError("a map step needs exactly one of over= (a data name) or items=")
    base = node_for_task(
        task, output, name=name, retry=retry, timeout=timeout, args=args, depends_on=depends_on
    )
    required = list(base.inputs)
    if item_param is None:
        if not required:
            raise TaskDefinitionError(
                f"map task {base.task_name!r} has no parameter to receive the item"
            )
        item_param = required[0]
    if item_param == "**":  # each item is a dict of keyword arguments
        inputs: tuple[str, ...] = ()
        optional: dict[str, Any] = {}
    else:
        inputs = tuple(i for i in required if i != item_param)
        optional = {k: v for k, v in base.optional_inputs.items() if k != item_param}
    base.inputs = inputs
    base.optional_inputs = optional
    base.kind = "map"
    base.map_over = over
    base.map_items = None if items is None else list(items)
    base.map_param = item_param
    base.max_parallel = max_parallel
    base.filter_items = keep_if_true
    base.multi_output = False
    base.outputs = (output,)
    return base
