"""What the state machine asks its driver to do."""

from __future__ import annotations

from dataclasses import dataclass

from taskiq_flow.core.states import RunOutcome

__all__ = [
    "Action",
    "Cancel",
    "Check",
    "Dispatch",
    "DispatchItem",
    "Expand",
    "Fail",
    "Finish",
    "Gather",
    "Retry",
    "Skip",
]


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Start attempt ``attempt`` (1-based) of ``node`` now."""

    node: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Check:
    """``node``'s dependencies are done and its ``when`` condition reads ``data``.

    The driver loads those data names (leaving out an output whose producer did not
    produce it) and answers with ``RunMachine.checked(node, values, now)``; the core
    evaluates the condition and starts, skips or fails the step.
    """

    node: str
    data: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Expand:
    """Attempt ``attempt`` of the fan-out (map or filter) ``node`` begins.

    The driver finds how many items it maps over and answers with
    ``RunMachine.expand(node, attempt, total, now)``, or with ``failed(...,
    retryable=False)`` when its source is not a list.
    """

    node: str
    attempt: int


@dataclass(frozen=True, slots=True)
class DispatchItem:
    """Start attempt ``item_attempt`` of item ``item`` of fan-out step ``node`` now."""

    node: str
    attempt: int
    item: int
    item_attempt: int


@dataclass(frozen=True, slots=True)
class Gather:
    """Every item of fan-out step ``node`` has its outcome: its output is the list of the
    results of ``items`` (or, with ``of_source``, of the source items themselves: a
    filter's output), in that order.

    Comes before the step's ``Dispatch``es of consumers and before a ``Fail`` that keeps
    partial results (``ContinueOnError``).
    """

    node: str
    attempt: int
    items: tuple[int, ...]
    of_source: bool


@dataclass(frozen=True, slots=True)
class Retry:
    """Attempt ``attempt - 1`` of ``node`` (or of its item ``item``) failed; attempt
    ``attempt`` will start at ``at``.

    The machine dispatches it itself from ``tick(now)`` once ``now >= at``; the driver only
    has to wake up by then (``next_deadline()``) and may report the retry to the user.
    """

    node: str
    attempt: int
    at: float
    error: str
    item: int | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    """``node`` (or its item ``item``) failed for good after ``attempt`` attempts."""

    node: str
    attempt: int
    error: str
    item: int | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """``node`` will not run: a dependency ended in an outcome it does not wait for, or
    its ``when`` condition is false (``reason`` says which)."""

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


Action = Dispatch | Check | Expand | DispatchItem | Gather | Retry | Fail | Skip | Cancel | Finish
