"""``@pipeline_task`` and ``@pipeline_task_multi_output``: declare what a task produces.

The decorators only attach a ``TaskSpec`` to the function; they change nothing about how
it runs. Stack them under ``@broker.task`` (or over it: both orders work).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, get_type_hints

from taskiq_flow.context import PipelineContext
from taskiq_flow.core.retry import NO_RETRY, RetryPolicy
from taskiq_flow.errors import TaskDefinitionError

__all__ = [
    "TaskSpec",
    "get_task_spec",
    "infer_inputs",
    "pipeline_task",
    "pipeline_task_multi_output",
]

SPEC_ATTRIBUTE = "__taskiq_flow_spec__"
_SKIPPED_NAMES = frozenset({"self", "cls"})

_F = TypeVar("_F")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a pipeline task produces and consumes, and how it is retried."""

    outputs: tuple[str, ...]
    inputs: tuple[str, ...] | None = None
    retry: RetryPolicy = NO_RETRY
    resources: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    multi_output: bool = False
    output_types: Mapping[str, Any] = field(default_factory=dict)
    when: str | None = None  # a CEL condition (see ``core.conditions``)
    continue_on_failure: bool = False

    @property
    def output(self) -> str:
        """The primary output."""
        return self.outputs[0]


def _unwrap(obj: Any) -> Callable[..., Any]:
    """The user's function behind a taskiq decorated task (or the function itself)."""
    func = getattr(obj, "original_func", obj)
    if not callable(func):
        raise TaskDefinitionError(f"{obj!r} is not a function or a taskiq task")
    return func  # type: ignore[no-any-return]


def infer_inputs(func: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Split a function's parameters into required inputs and optional ones (with defaults).

    ``self``, ``cls``, ``*args``/``**kwargs`` and a parameter annotated with
    ``PipelineContext`` are not inputs.
    """
    required, optional = inferred_inputs(func)
    return required, dict(optional)


def inferred_inputs(func: Callable[..., Any]) -> tuple[tuple[str, ...], Mapping[str, Any]]:
    """``infer_inputs`` without the copy: the optional inputs are a read-only mapping that
    every node of the same function shares."""
    target = _unwrap(func)
    try:
        return _inferred[target]
    except (KeyError, TypeError):  # not seen yet, or not weakly referenceable
        required, optional = _infer(target)
        found = (required, MappingProxyType(optional))
        with contextlib.suppress(TypeError):
            _inferred[target] = found
        return found


# A graph of 10,000 steps of one task asks 10,000 times: resolving the type hints is most of
# a graph's build time, and a function's signature does not change.
_inferred: weakref.WeakKeyDictionary[Callable[..., Any], tuple[tuple[str, ...], Mapping[str, Any]]]
_inferred = weakref.WeakKeyDictionary()


def _infer(target: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    signature = inspect.signature(target)
    try:
        hints = get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        hints = {}
    required: list[str] = []
    optional: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if name in _SKIPPED_NAMES or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, param.annotation)
        if annotation is PipelineContext or annotation == "PipelineContext":
            continue
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            optional[name] = param.default
    return tuple(required), optional


def context_parameter(func: Callable[..., Any]) -> str | None:
    """The name of the parameter annotated with ``PipelineContext``, if any."""
    target = _unwrap(func)
    try:
        hints = get_type_hints(target)
    except Exception:
        hints = {}
    for name, param in inspect.signature(target).parameters.items():
        annotation = hints.get(name, param.annotation)
        if annotation is PipelineContext or annotation == "PipelineContext":
            return name
    return None


def _attach(obj: _F, spec: TaskSpec) -> _F:
    setattr(obj, SPEC_ATTRIBUTE, spec)
    inner = getattr(obj, "original_func", None)
    if inner is not None:  # decorator placed above @broker.task
        setattr(inner, SPEC_ATTRIBUTE, spec)
    return obj


def get_task_spec(task: Any) -> TaskSpec | None:
    """The ``TaskSpec`` attached to a task or its function, if any."""
    spec = getattr(task, SPEC_ATTRIBUTE, None)
    if spec is None:
        spec = getattr(getattr(task, "original_func", None), SPEC_ATTRIBUTE, None)
    return spec


def _retry_policy(
    retries: int,
    retry_delay: float,
    retry_backoff: float,
    retry_jitter: bool,
    max_retry_time: float | None,
) -> RetryPolicy:
    try:
        return RetryPolicy(
            retries=retries,
            delay=retry_delay,
            backoff=retry_backoff,
            jitter=retry_jitter,
            max_retry_time=max_retry_time,
        )
    except ValueError as exc:
        raise TaskDefinitionError(f"invalid retry settings: {exc}") from exc


def pipeline_task(
    output: str,
    inputs: Sequence[str] | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    retry_backoff: float = 2.0,
    retry_jitter: bool = True,
    max_retry_time: float | None = 300,
    resources: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    *,
    when: str | None = None,
    continue_on_failure: bool = False,
) -> Callable[[_F], _F]:
    """Declare the data a task produces (``output``) and consumes (``inputs``).

    Without ``inputs`` they are inferred from the signature: every parameter but
    ``self``, ``cls``, ``PipelineContext`` ones and those with defaults (a default is
    used when neither a producer nor the caller provides the value). ``when`` is a CEL
    condition that decides whether the step runs; with ``continue_on_failure`` its
    failure does not fail the run.
    """
    if not isinstance(output, str) or not output:
        raise TaskDefinitionError("pipeline_task needs output=<non-empty name>")
    spec = TaskSpec(
        outputs=(output,),
        inputs=None if inputs is None else tuple(inputs),
        retry=_retry_policy(retries, retry_delay, retry_backoff, retry_jitter, max_retry_time),
        resources=dict(resources or {}),
        timeout=timeout,
        when=when,
        continue_on_failure=continue_on_failure,
    )

    def decorate(obj: _F) -> _F:
        return _attach(obj, spec)

    return decorate


def pipeline_task_multi_output(
    outputs: Mapping[str, Any] | Sequence[str],
    inputs: Sequence[str] | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    retry_backoff: float = 2.0,
    retry_jitter: bool = True,
    max_retry_time: float | None = 300,
    resources: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Callable[[_F], _F]:
    """Declare a task that returns a dict whose keys are several named outputs.

    The first key is the primary output. A key missing from the returned dict fails the
    step with a clear message.
    """
    names = tuple(outputs)
    if not names:
        raise TaskDefinitionError("pipeline_task_multi_output needs at least one output")
    spec = TaskSpec(
        outputs=names,
        inputs=None if inputs is None else tuple(inputs),
        retry=_retry_policy(retries, retry_delay, retry_backoff, retry_jitter, max_retry_time),
        resources=dict(resources or {}),
        timeout=timeout,
        multi_output=True,
        output_types=dict(outputs) if isinstance(outputs, Mapping) else {},
    )

    def decorate(obj: _F) -> _F:
        return _attach(obj, spec)

    return decorate
