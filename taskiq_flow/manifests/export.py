"""Python pipeline objects → Pipeline manifests (``taskiq-flow export``).

``pipeline_manifest`` dispatches on the object's type (``functools.singledispatch``):
a ``DataflowPipeline`` is supported here; other pipeline classes plug in with
``@pipeline_manifest.register(TheClass)`` and return the manifest dict — that is the
hook for the sequential ``Pipeline``: register its exporter beside this one.
"""

from __future__ import annotations

import re
from functools import singledispatch
from typing import Any

from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.dataflow.dag import DAGNode
from taskiq_flow.errors import TaskDefinitionError
from taskiq_flow.execution_engine import SPREAD_ITEM
from taskiq_flow.manifests.models import API_VERSION, ErrorMode, is_step_name
from taskiq_flow.pipeline import DataflowPipeline

__all__ = ["ExportError", "manifest_name", "pipeline_manifest", "step_name"]

_ERROR_MODE_NAMES = {
    "FAIL_FAST": ErrorMode.FAIL_FAST.value,
    "CONTINUE_ON_ERROR": ErrorMode.CONTINUE_ON_ERROR.value,
    "SKIP_FAILED": ErrorMode.SKIP_FAILED.value,
}


class ExportError(TaskDefinitionError):
    """The object cannot be expressed as a manifest."""


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
        "DataflowPipeline (or a pipeline class registered with pipeline_manifest.register)"
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
        step["dependsOn"] = [names[dep] for dep in node.depends_on]
    retries = _retries(node.retry)
    if retries is not None:
        step["retries"] = retries
    timeout = node.timeout if node.timeout is not None else task_timeout
    if timeout is not None:
        step["timeoutSeconds"] = timeout
    return step


@pipeline_manifest.register
def _dataflow_manifest(obj: DataflowPipeline, *, name: str | None = None) -> dict[str, Any]:
    dag = obj.build_dag()
    nodes = dag.topological_sort()
    names = {node.name: step_name(node.name) for node in nodes}
    clashes = {v for v in names.values() if list(names.values()).count(v) > 1}
    if clashes:
        raise ExportError(f"step names collide once made DNS-1123 labels: {sorted(clashes)}")
    produced = set(dag.outputs)
    steps = [_step(node, names, produced, obj.task_timeout) for node in nodes]
    modules = sorted({m for m in (_module_of(n) for n in nodes) if m is not None})
    if not modules:
        modules = sorted({n.task_name.split(":")[0] for n in nodes if ":" in n.task_name})
    spec: dict[str, Any] = {
        "mode": "dataflow",
        "worker": {"modules": modules},
        "parallelism": obj.max_parallel or 10,
        "errorMode": _ERROR_MODE_NAMES[obj.error_mode.value],
    }
    if obj.timeout is not None:
        spec["timeoutSeconds"] = obj.timeout
    inputs = [{"name": ext} for ext in dag.external_inputs]
    if inputs:
        spec["inputs"] = inputs
    spec["steps"] = steps
    return {
        "apiVersion": API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": manifest_name(name or obj.name or "pipeline")},
        "spec": spec,
    }
