"""Python pipeline objects → Pipeline manifests (``taskiq-flow export``).

``pipeline_manifest`` dispatches on the object's type (``functools.singledispatch``):
a ``DataflowPipeline`` and a sequential ``Pipeline`` are supported here; other pipeline
classes plug in with ``@pipeline_manifest.register(TheClass)`` returning the manifest dict.

A sequential ``Pipeline`` receives its data as the first step's first argument; in the
manifest that argument becomes the pipeline's one input (``items`` when the first step is
a map or filter). ``on_error("continue")`` becomes ``SkipFailed``.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Mapping
from functools import singledispatch
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask

from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.core.states import Phase
from taskiq_flow.dataflow.dag import DAGNode
from taskiq_flow.errors import TaskDefinitionError
from taskiq_flow.execution_engine import SPREAD_ITEM
from taskiq_flow.manifests.compiler import broker_task_message
from taskiq_flow.manifests.models import API_VERSION, ErrorMode, is_step_name
from taskiq_flow.pipeline import DataflowPipeline
from taskiq_flow.sequential.pipeline import Pipeline

__all__ = [
    "BrokerTaskError",
    "ExportError",
    "manifest_name",
    "pipeline_manifest",
    "require_shared_tasks",
    "step_name",
]

_ERROR_MODE_NAMES = {
    "FAIL_FAST": ErrorMode.FAIL_FAST.value,
    "CONTINUE_ON_ERROR": ErrorMode.CONTINUE_ON_ERROR.value,
    "SKIP_FAILED": ErrorMode.SKIP_FAILED.value,
}


class ExportError(TaskDefinitionError):
    """The object cannot be expressed as a manifest."""


class BrokerTaskError(ExportError):
    """Tasks declared with a broker's own ``@broker.task``: a manifest names its tasks, and
    only shared tasks (``@taskiq_flow.task``) are found by name on every broker, so the
    manifest would fail when it runs. The message has one line per task."""


def _module_task(name: str) -> Any:
    """The object the task's module (already imported) defines under the task's name."""
    module = sys.modules.get(name.partition(":")[0])
    for value in vars(module).values() if module is not None else ():
        if getattr(value, "task_name", None) == name:
            return value
    return None


def require_shared_tasks(manifest: Mapping[str, Any], obj: Any = None) -> None:
    """Raise ``BrokerTaskError`` when a task of ``manifest`` (exported from ``obj``) is
    declared on a broker of its own rather than with ``@taskiq_flow.task``, with the
    advice ``taskiq-flow run`` gives for it."""
    local = getattr(getattr(obj, "broker", None), "local_task_registry", None) or {}
    spec = manifest.get("spec") or {}
    steps = [*(spec.get("steps") or []), *(spec.get("finally") or [])]
    names = dict.fromkeys(step["task"] for step in steps if isinstance(step.get("task"), str))
    refused = [
        broker_task_message(name)
        for name in names
        if name not in AsyncBroker.global_task_registry
        and (name in local or isinstance(_module_task(name), AsyncTaskiqDecoratedTask))
    ]
    if refused:
        raise BrokerTaskError("\n".join(refused))


def manifest_name(text: str) -> str:
    """``text`` as a DNS-1123 label: lower case, ``_`` and other symbols as ``-``."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "pipeline"


def step_name(node_name: str) -> str:
    """A node's name as a manifest step name."""
    return node_name if is_step_name(node_name) else manifest_name(node_name)


@singledispatch
def pipeline_manifest(obj: Any, *, name: str | None = None) -> dict[str, Any]:
    """A ``Pipeline`` manifest (a dict) for a Python pipeline object."""
    raise ExportError(
        f"cannot export {type(obj).__module__}.{type(obj).__qualname__}: expected a "
        "DataflowPipeline or a Pipeline (or a class registered with pipeline_manifest.register)"
    )


def _retries(policy: RetryPolicy) -> dict[str, Any] | None:
    if policy.retries == 0:
        return None
    retries: dict[str, Any] = {
        "limit": policy.retries,
        "delaySeconds": policy.delay,
        "backoff": policy.backoff,
    }
    if policy.max_delay is not None:
        retries["maxDelaySeconds"] = policy.max_delay
    if not policy.jitter:
        retries["jitter"] = False
    if policy.max_retry_time is not None:
        retries["maxDurationSeconds"] = policy.max_retry_time
    return retries


def _module_of(node: DAGNode) -> str | None:
    func = getattr(node.task, "original_func", node.task)
    module = getattr(func, "__module__", None)
    return module if isinstance(module, str) else None


def _step(
    node: DAGNode, names: dict[str, str], produced: set[str], task_timeout: float | None
) -> dict[str, Any]:
    where = f"step {node.name!r}"
    if node.multi_output or len(node.outputs) != 1:
        raise ExportError(f"{where} has several outputs; a manifest step has one")
    if node.kind == "reduce" or any(p != d for p, d in node.bindings.items()):
        raise ExportError(
            f"{where} passes data to a parameter of another name ({node.bindings}); in a "
            "manifest a step's inputs are passed under their own names"
        )
    if node.kind == "map" and node.map_over is None:
        raise ExportError(f"{where} maps over a fixed list; make the list a pipeline input")
    if node.map_param == SPREAD_ITEM:
        raise ExportError(f"{where} spreads each item as keyword arguments")
    step: dict[str, Any] = {"name": names[node.name], "task": node.task_name}
    if node.output != step["name"].replace("-", "_"):
        step["output"] = node.output
    if node.kind == "map":
        each: dict[str, Any] = {"over": node.map_over, "as": node.map_param}
        if node.max_parallel is not None:
            each["maxParallel"] = node.max_parallel
        step["filter" if node.filter_items else "map"] = each
    inputs = [*node.inputs, *(name for name in node.optional_inputs if name in produced)]
    step["inputs"] = inputs
    if node.args:
        step["args"] = dict(node.args)
    if node.depends_on:
        step["dependsOn"] = [_dependency(node, dep, names) for dep in node.depends_on]
    if node.when is not None:
        renamed = [n for n in node.when.steps if names.get(n, n) != n]
        if renamed:
            raise ExportError(
                f"{where}: its condition reads steps {renamed}, whose names change in a "
                "manifest (DNS-1123 labels); name those steps with dashes"
            )
        step["when"] = node.when.source
    retries = _retries(node.retry)
    if retries is not None:
        step["retries"] = retries
    timeout = node.timeout if node.timeout is not None else task_timeout
    if timeout is not None:
        step["timeoutSeconds"] = timeout
    if node.continue_on_failure:
        step["continueOnFailure"] = True
    return step


_OUTCOME_ORDER = (Phase.SUCCEEDED, Phase.FAILED, Phase.SKIPPED)


def _dependency(node: DAGNode, dep: str, names: dict[str, str]) -> str | dict[str, Any]:
    """A ``dependsOn`` entry: the step's name, or ``{step, on}`` for other outcomes."""
    outcomes = node.accepts.get(dep)
    if outcomes is None or outcomes == {Phase.SUCCEEDED}:
        return names[dep]
    return {"step": names[dep], "on": [o.value for o in _OUTCOME_ORDER if o in outcomes]}


@pipeline_manifest.register
def _dataflow_manifest(obj: DataflowPipeline, *, name: str | None = None) -> dict[str, Any]:
    dag = obj.build_dag()
    nodes = dag.topological_sort()
    names = {node.name: step_name(node.name) for node in nodes}
    clashes = {v for v in names.values() if list(names.values()).count(v) > 1}
    if clashes:
        raise ExportError(f"step names collide once made DNS-1123 labels: {sorted(clashes)}")
    produced = set(dag.outputs)
    steps = [_step(node, names, produced, obj.task_timeout) for node in nodes if not node.final]
    finals = [_step(node, names, produced, obj.task_timeout) for node in nodes if node.final]
    modules = sorted({m for m in (_module_of(n) for n in nodes) if m is not None})
    if not modules:
        modules = sorted({n.task_name.split(":")[0] for n in nodes if ":" in n.task_name})
    spec: dict[str, Any] = {
        "mode": "dataflow",
        "worker": {"modules": modules},
        "errorMode": _ERROR_MODE_NAMES[obj.error_mode.value],
    }
    if obj.max_parallel is not None:
        spec["parallelism"] = obj.max_parallel
    if obj.timeout is not None:
        spec["timeoutSeconds"] = obj.timeout
    inputs = [{"name": ext} for ext in dag.external_inputs]
    if inputs:
        spec["inputs"] = inputs
    spec["steps"] = steps
    if finals:
        spec["finally"] = finals
    return {
        "apiVersion": API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": manifest_name(name or obj.name or "pipeline")},
        "spec": spec,
    }


_SEQUENTIAL_ERROR_MODES = {"stop": "FailFast", "retry": "FailFast", "continue": "SkipFailed"}


def _first_parameter(task_name: str) -> str:
    """The parameter that receives a step's input: the task function's first one."""
    from taskiq import AsyncBroker

    task = AsyncBroker.global_task_registry.get(task_name)
    func = getattr(task, "original_func", None)
    if func is None:
        return "data"
    params = [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]
    return params[0] if params else "data"


@pipeline_manifest.register
def _sequential_manifest(obj: Pipeline, *, name: str | None = None) -> dict[str, Any]:
    """A sequential ``Pipeline``: its data becomes the input the first step receives."""
    spec_data = obj.spec
    if not spec_data.steps:
        raise ExportError("the pipeline has no steps")
    policy = spec_data.retry_policy
    names: list[str] = []
    steps: list[dict[str, Any]] = []
    first_input = "data"
    for index, step in enumerate(spec_data.steps):
        where = f"step {index} ({step.name})"
        if step.kind == "group":
            raise ExportError(f"{where} is a group; a manifest step runs one task")
        if step.param is not None:
            raise ExportError(
                f"{where} passes the previous output as {step.param!r}; in a manifest it is "
                "the task's first argument"
            )
        base = step_name(step.name)
        label = base if base not in names else f"{base}-{index}"
        names.append(label)
        entry: dict[str, Any] = {"name": label, "task": step.tasks[0]}
        if index == 0:
            first_input = _first_parameter(step.tasks[0])
            if step.kind == "call":
                entry["inputs"] = [first_input]
        if step.kind in ("map", "filter"):
            each: dict[str, Any] = {}
            if index == 0:
                first_input = "items"
                each["over"] = first_input
            if step.max_parallel is not None:
                each["maxParallel"] = step.max_parallel
            entry[step.kind] = each
        if step.kwargs:
            entry["args"] = dict(step.kwargs)
        retries = _retries(policy)
        if retries is not None:
            entry["retries"] = retries
        steps.append(entry)
    modules = sorted({t.split(":")[0] for s in spec_data.steps for t in s.tasks if ":" in t})
    spec: dict[str, Any] = {
        "mode": "sequential",
        "worker": {"modules": modules},
        "errorMode": _SEQUENTIAL_ERROR_MODES[spec_data.on_error],
        "inputs": [{"name": first_input}],
    }
    if spec_data.timeout is not None:
        spec["timeoutSeconds"] = spec_data.timeout
    spec["steps"] = steps
    return {
        "apiVersion": API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": manifest_name(name or "pipeline")},
        "spec": spec,
    }
