"""What the state machine asks its driver to do."""

from __future__ import annotations

from dataclasses import dataclass

from taskiq_flow.core.states import RunOutcome

__all__ = ["Action", "Cancel", "Dispatch", "Fail", "Finish", "Retry", "Skip"]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Start attempt ``attempt`` (1-based) of ``node`` now."""

    node: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Retry:
    """Attempt ``attempt - 1`` of ``node`` failed; attempt ``attempt`` will start at ``at``.

    The machine dispatches it itself from ``tick(now)`` once ``now >= at``; the driver only
    has to wake up by then (``next_deadline()``) and may report the retry to the user.
    """

    node: str
    attempt: int
    at: float
    error: str


@dataclass(frozen=True, slots=True)
class Fail:
    """``node`` failed for good after ``attempt`` attempts."""

    node: str
    attempt: int
    error: str


@dataclass(frozen=True, slots=True)
class Skip:
    """``node`` will not run because something it depends on failed."""

    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """``node`` will not run, or its attempt in flight is to be abandoned."""

    node: str
    reason: str
    was_running: bool


@dataclass(frozen=True, slots=True)
class Finish:
    """The run is over. Nothing else will be dispatched."""

    outcome: RunOutcome
    reason: str
    failed_node: str | None = None


Action = Dispatch | Retry | Fail | Skip | Cancel | Finish
