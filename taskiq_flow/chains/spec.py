"""What a sequential pipeline is made of, as plain data that travels to workers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from taskiq_flow.core.plan import NodeSpec, Plan
from taskiq_flow.core.retry import NO_RETRY, RetryPolicy
from taskiq_flow.errors import ErrorHandlingMode

__all__ = ["ErrorPolicy", "SequenceSpec", "StepKind", "StepSpec"]

StepKind = Literal["call", "map", "filter", "group"]
ErrorPolicy = Literal["stop", "continue", "retry"]

_MODES: dict[str, ErrorHandlingMode] = {
    "stop": ErrorHandlingMode.FAIL_FAST,
    "retry": ErrorHandlingMode.FAIL_FAST,
    "continue": ErrorHandlingMode.SKIP_FAILED,
}


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: ``call`` one task, ``map``/``filter`` one task per item, ``group`` several.

    ``param`` names the parameter that receives the previous output (default: the first
    positional one); ``kwargs`` are static keyword arguments.
    """

    kind: StepKind
    tasks: tuple[str, ...]
    param: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_parallel: int | None = None

    @property
    def name(self) -> str:
        """A readable name: the function part of the task name(s)."""
        short = [t.rsplit(":", 1)[-1] for t in self.tasks]
        return short[0] if self.kind != "group" else "group(" + ", ".join(short) + ")"

    @property
    def fans_out(self) -> bool:
        """Whether the step sends one message per item (or per task of a group)."""
        return self.kind != "call"


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    """A whole sequential pipeline: its steps and how it handles failures and time."""

    steps: tuple[StepSpec, ...]
    on_error: ErrorPolicy = "stop"
    retry: RetryPolicy | None = None
    timeout: float | None = None
    context: bool = True
    # Tracking storage that workers record into (``RedisPipelineStorage.config()``:
    # kind, key_prefix, ttl_seconds), or None when the run is not tracked across processes.
    tracking: dict[str, Any] | None = None

    @property
    def error_mode(self) -> ErrorHandlingMode:
        """The core's error mode for ``on_error``."""
        return _MODES[self.on_error]

    @property
    def retry_policy(self) -> RetryPolicy:
        """Retries for every step (and every item of a map)."""
        if self.retry is not None:
            return self.retry
        if self.on_error == "retry":
            return RetryPolicy(retries=2, delay=1.0, backoff=2.0, jitter=False)
        return NO_RETRY

    def plan(self) -> Plan:
        """The chain as a plan for the scheduling core: step *i* waits for step *i - 1*."""
        policy = self.retry_policy
        return Plan(
            NodeSpec(str(i), (str(i - 1),) if i else (), policy) for i in range(len(self.steps))
        )

    def to_json(self) -> str:
        """The spec as JSON (what workers load)."""
        data = asdict(self)
        return json.dumps(data, separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> SequenceSpec:
        """The inverse of ``to_json``."""
        data = json.loads(text)
        retry = data.get("retry")
        return cls(
            steps=tuple(
                StepSpec(
                    kind=s["kind"],
                    tasks=tuple(s["tasks"]),
                    param=s.get("param"),
                    kwargs=dict(s.get("kwargs") or {}),
                    max_parallel=s.get("max_parallel"),
                )
                for s in data["steps"]
            ),
            on_error=data.get("on_error", "stop"),
            retry=None if retry is None else RetryPolicy(**retry),
            timeout=data.get("timeout"),
            context=data.get("context", True),
            tracking=data.get("tracking"),
        )
