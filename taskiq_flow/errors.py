"""Errors raised by taskiq-flow, and the error-handling modes.

The hierarchy::

    TaskiqFlowError (taskiq.exceptions.TaskiqError)
    ├── DAGError                      the graph is invalid; raised before anything runs
    │   ├── EmptyPipelineError        "No DAG built": no tasks were added
    │   ├── CycleError                the data flow is circular (names the nodes on the cycle)
    │   ├── DuplicateOutputError      two tasks produce the same output
    │   ├── DuplicateNodeError        two nodes share a name
    │   ├── MissingInputsError        inputs that nothing produces and the caller did not pass
    │   ├── UnknownDependencyError    dependsOn names a node that does not exist
    │   └── FinallyDependencyError    a regular step depends on a finally step
    ├── TaskDefinitionError           a task's declaration is unusable (bad decorator use)
    ├── UnknownTaskError              a task name no broker or module defines
    └── PipelineError                 a run failed; carries partial_results and the failed node
        ├── StepTimeoutError          one step ran longer than its timeout
        └── PipelineTimeoutError      the whole run ran longer than its timeout
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from taskiq.exceptions import TaskiqError

__all__ = [
    "CycleError",
    "DAGError",
    "FinallyDependencyError",
    "DuplicateNodeError",
    "DuplicateOutputError",
    "EmptyPipelineError",
    "ErrorHandlingMode",
    "MissingInputsError",
    "PipelineError",
    "PipelineTimeoutError",
    "StepTimeoutError",
    "TaskDefinitionError",
    "TaskiqFlowError",
    "UnknownDependencyError",
    "UnknownTaskError",
    "format_error",
    "names_unknown_task",
]


def format_error(error: BaseException | None) -> str:
    """``Type: message``, the way step errors are shown everywhere."""
    if error is None:
        return "unknown error"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def names_unknown_task(error: str) -> bool:
    """Whether a ``format_error`` text is an ``UnknownTaskError``: never worth a retry."""
    return error.startswith(UnknownTaskError.__name__)


class ErrorHandlingMode(StrEnum):
    """What a run does when a step fails for good (after its retries).

    - ``FAIL_FAST``: stop dispatching, cancel what is queued or waiting to retry, ignore
      results of steps still in flight, and fail the run at once.
    - ``CONTINUE_ON_ERROR``: skip every step that depends (directly or transitively) on
      the failed one, finish every other branch, then fail the run.
    - ``SKIP_FAILED``: treat the failed step as skipped: its outputs are absent, and the
      steps that consume them still run (a missing input gets the parameter's default,
      or ``None``). The run succeeds; the failures are in the execution report.
    """

    FAIL_FAST = "FAIL_FAST"
    CONTINUE_ON_ERROR = "CONTINUE_ON_ERROR"
    SKIP_FAILED = "SKIP_FAILED"

    @classmethod
    def parse(cls, value: ErrorHandlingMode | str) -> ErrorHandlingMode:
        """Accept the enum, its value, or the manifest spelling (``FailFast``)."""
        if isinstance(value, ErrorHandlingMode):
            return value
        canonical = "".join(ch for ch in value if ch.isalnum()).upper()
        for mode in cls:
            if mode.value.replace("_", "") == canonical:
                return mode
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown error mode {value!r}; expected one of {allowed}")


class TaskiqFlowError(TaskiqError):
    """Base class of every taskiq-flow error."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        # ``args`` are what taskiq ships across processes and calls the class with again.
        self.args = (message,)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class DAGError(TaskiqFlowError):
    """The pipeline's graph is invalid. Raised before any task is sent."""


class EmptyPipelineError(DAGError):
    """The pipeline has no tasks."""

    def __init__(self) -> None:
        super().__init__(
            "No DAG built: the pipeline has no tasks; "
            "add some with from_tasks() or add_dataflow_task()"
        )
        self.args = ()


class CycleError(DAGError):
    """The data flow is circular."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        path = " → ".join([*self.cycle, self.cycle[0]]) if self.cycle else "?"
        super().__init__(f"Deadlock detected: circular dependency {path}")
        self.args = (self.cycle,)


class DuplicateOutputError(DAGError):
    """Two tasks declare the same output."""

    def __init__(self, output: str, producers: Sequence[str]) -> None:
        self.output = output
        self.producers = list(producers)
        super().__init__(
            f"output {output!r} is produced by more than one task: {', '.join(self.producers)}"
        )
        self.args = (output, self.producers)


class DuplicateNodeError(DAGError):
    """Two nodes share one name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"two steps are named {name!r}; give one of them another name")
        self.args = (name,)


class MissingInputsError(DAGError):
    """Inputs that no task produces and the caller did not pass."""

    def __init__(self, missing: Mapping[str, Iterable[str]]) -> None:
        self.missing = {name: sorted(users) for name, users in sorted(missing.items())}
        parts = [f"{name!r} (needed by {', '.join(users)})" for name, users in self.missing.items()]
        super().__init__(
            "missing inputs: nothing produces and the caller did not pass " + "; ".join(parts)
        )
        self.args = (self.missing,)


class UnknownDependencyError(DAGError):
    """An explicit ordering dependency names a node that does not exist."""

    def __init__(self, node: str, missing: str) -> None:
        self.node = node
        self.missing_dependency = missing
        super().__init__(f"step {node!r} depends on {missing!r}, which is not a step")
        self.args = (node, missing)


class FinallyDependencyError(DAGError):
    """A regular step depends on a ``finally`` step, which runs only after it."""

    def __init__(self, node: str, final: str) -> None:
        self.node = node
        self.final = final
        super().__init__(
            f"step {node!r} depends on {final!r}, a finally step: finally steps run after "
            "every other step, so only other finally steps may depend on them"
        )
        self.args = (node, final)


class TaskDefinitionError(TaskiqFlowError):
    """A task's declaration cannot be used in a pipeline."""


class UnknownTaskError(TaskiqFlowError):
    """A task name that the broker does not know."""

    def __init__(self, task_name: str, where: str = "the broker") -> None:
        self.task_name = task_name
        super().__init__(f"unknown task {task_name!r}: {where} defines no task of that name")
        self.args = (task_name, where)


class PipelineError(TaskiqFlowError):
    """A pipeline run failed.

    ``partial_results`` holds the outputs of the steps that succeeded before the failure,
    ``failed_node`` the step that failed (``None`` when the run as a whole timed out or
    was cancelled), ``errors`` every failed step's error message.
    """

    def __init__(
        self,
        message: str,
        *,
        failed_node: str | None = None,
        partial_results: Mapping[str, Any] | None = None,
        errors: Mapping[str, str] | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.failed_node = failed_node
        self.partial_results: dict[str, Any] = dict(partial_results or {})
        self.errors: dict[str, str] = dict(errors or {})
        self.cause = cause

    @property
    def failed_step(self) -> str | None:
        """The sequential pipelines' name for ``failed_node``."""
        return self.failed_node


class StepTimeoutError(PipelineError):
    """One step ran longer than its timeout (after its retries)."""


class PipelineTimeoutError(PipelineError):
    """The whole run ran longer than its timeout."""
