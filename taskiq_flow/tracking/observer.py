"""The one interface through which pipelines report to tracking: ``RunObserver``.

The engine (dataflow) and the sequential driver call it as steps start and finish. The
per-step calls are synchronous and must not block: an observer queues the work and
writes in the background; ``run_finished`` is awaited, so a run's record is complete
by the time its result is handed back.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "RunObserver",
    "forget_observer",
    "observer_for",
    "register_observer",
    "step_end_event",
    "step_start_event",
]

PipelineType = Literal["sequential", "dataflow"]


@runtime_checkable
class RunObserver(Protocol):
    """Receives the life of runs: start, each step's start and end, the end."""

    def run_started(self, run_id: str, pipeline_type: PipelineType, step_names: list[str]) -> None:
        """A run began; ``step_names`` are its steps in order (all PENDING)."""

    def step_started(self, run_id: str, index: int, name: str) -> None:
        """Step ``index`` was sent (its first attempt)."""

    def step_finished(
        self,
        run_id: str,
        index: int,
        name: str,
        *,
        result: Any = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """Step ``index`` ended for good: failed when ``error`` is set."""

    async def run_finished(
        self,
        run_id: str,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> None:
        """The run ended (COMPLETED, FAILED or CANCELLED); returns once it is recorded."""


# Sequential runs advance wherever their steps finish. In one process (InMemoryBroker,
# or a worker running in the client's process) the driver finds the client's observer
# here by run id; elsewhere it records straight into shared storage (see ``remote``).
_observers: dict[str, RunObserver] = {}


_MAX_OBSERVED = 10_000  # runs that finish in other processes are never forgotten here


def register_observer(run_id: str, observer: RunObserver) -> None:
    """Route the driver's reports for ``run_id`` to ``observer`` in this process."""
    _observers[run_id] = observer
    while len(_observers) > _MAX_OBSERVED:
        del _observers[next(iter(_observers))]  # the oldest registration


def observer_for(run_id: str) -> RunObserver | None:
    """The observer registered for ``run_id`` in this process."""
    return _observers.get(run_id)


def forget_observer(run_id: str) -> None:
    """Drop the registration (the run ended)."""
    _observers.pop(run_id, None)


def step_start_event(name: str, index: int) -> dict[str, Any]:
    """The event of step ``index`` starting (the same wherever the step ran)."""
    return {"type": "step_start", "status": "RUNNING", "step_name": name, "index": index}


def step_end_event(
    name: str, index: int, duration_ms: float | None, error: str | None
) -> dict[str, Any]:
    """The event of step ``index`` ending: ``step_error`` when ``error`` is set."""
    return {
        "type": "step_error" if error is not None else "step_complete",
        "status": "FAILED" if error is not None else "COMPLETED",
        "step_name": name,
        "index": index,
        "duration_ms": duration_ms,
        "error": error,
    }
