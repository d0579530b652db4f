"""The items of a map or filter step: which go next, their attempts, what they left.

A ``Fanout`` is bookkeeping only; ``RunMachine`` owns one per fan-out step and decides
with it (the window, per-item retries, what an item failure means under the run's error
mode). Memory is one byte per item plus entries for the items in flight or retried, so
a 10,000-item step costs about 10 KB.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from taskiq_flow.core.retry import RetryPolicy, retry_time
from taskiq_flow.errors import ErrorHandlingMode

__all__ = [
    "Fanout",
    "ItemPhase",
    "first_items",
    "ItemFailure",
    "item_failure_fails_step",
    "judge_item_failure",
    "items_error",
    "kept_items",
    "keeps",
    "released_item",
    "succeeded_item",
]


class ItemPhase(IntEnum):
    """The phase of one item (one byte each in ``Fanout.phases``)."""

    PENDING = 0
    RUNNING = 1
    RETRYING = 2
    SUCCEEDED = 3  # its result is part of the step's output
    DROPPED = 4  # a filter step's item its task did not keep
    FAILED = 5


_DONE = (ItemPhase.SUCCEEDED, ItemPhase.DROPPED, ItemPhase.FAILED)


def keeps(result: Any) -> bool:
    """The filter rule: an item stays when its task returned a truthy value."""
    return bool(result)


def item_failure_fails_step(mode: ErrorHandlingMode) -> bool:
    """Whether an item that failed for good fails its step at once (``FAIL_FAST``); in
    the other modes the step's other items still run."""
    return mode is ErrorHandlingMode.FAIL_FAST


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """What a failed attempt of an item means: a retry at ``retry_at``, or (``None``) a
    failure for good, which fails its step at once when ``fails_step``."""

    retry_at: float | None
    fails_step: bool


def judge_item_failure(
    policy: RetryPolicy,
    mode: ErrorHandlingMode,
    failed_attempt: int,
    first_started: float,
    now: float,
    rand: float,
    error: str,
    retryable: bool | None = None,
) -> ItemFailure:
    """The item rules for a failed attempt: per-item retries (``retry_time``, counted
    from the item's first attempt), then what the error mode makes of a failure."""
    retry_at = retry_time(policy, failed_attempt, first_started, now, rand, error, retryable)
    return ItemFailure(retry_at, retry_at is None and item_failure_fails_step(mode))


def succeeded_item(filter_items: bool, result: Any) -> ItemPhase:
    """What an item whose task returned ``result`` leaves: its result in the step's output
    (``SUCCEEDED``) or, for a filter whose task did not keep it, nothing (``DROPPED``)."""
    return ItemPhase.SUCCEEDED if not filter_items or keeps(result) else ItemPhase.DROPPED


def kept_items(phases: Sequence[int]) -> list[int]:
    """The items that make up a fan-out step's output, in item order: those that
    succeeded (a filter's dropped items and failed items are left out)."""
    wanted = ItemPhase.SUCCEEDED
    return [i for i, phase in enumerate(phases) if phase == wanted]


def items_error(failed: int, total: int, item: int, error: str) -> str:
    """A fan-out step's error: how many items failed, and the lowest one's error."""
    return f"{failed} of {total} items failed; item {item}: {error}"


def first_items(limit: int | None, total: int) -> range:
    """The items a fan-out step starts with: all of them, or the first ``limit``."""
    return range(total if limit is None else min(limit, total))


def released_item(item: int, limit: int | None, total: int) -> int | None:
    """The window for a driver with no shared view of a step's items (the worker-side
    sequential driver): when item ``item`` is done for good, item ``item + limit`` starts.

    Each held-back item has exactly one releaser, so at most ``limit`` items are in
    flight. ``RunMachine``, which sees every item, starts the lowest waiting one instead.
    """
    if limit is None or item + limit >= total:
        return None
    return item + limit


@dataclass(slots=True)
class Fanout:
    """The items of one attempt of a fan-out step.

    ``limit`` bounds the items in flight (``map.maxParallel``; ``None``: all at once).
    Items start in index order; an item whose retry is due goes before new ones.
    """

    attempt: int
    total: int
    limit: int | None = None
    phases: bytearray = field(default_factory=bytearray)
    next: int = 0  # every item below this has started at least once
    running: int = 0
    succeeded: int = 0
    dropped: int = 0
    failed: int = 0
    due_retries: list[int] = field(default_factory=list)  # heap of items ready to retry
    attempts: dict[int, int] = field(default_factory=dict)  # only items tried more than once
    started: dict[int, float] = field(default_factory=dict)  # items in flight: since when
    first_started: dict[int, float] = field(default_factory=dict)  # retried items
    timers: dict[int, float] = field(default_factory=dict)  # the live deadline or retry time
    errors: dict[int, str] = field(default_factory=dict)  # items failed for good

    def __post_init__(self) -> None:
        if not self.phases:
            self.phases = bytearray(self.total)

    # -- queries -----------------------------------------------------------------------

    @property
    def done(self) -> int:
        """Items that will not run again."""
        return self.succeeded + self.dropped + self.failed

    @property
    def complete(self) -> bool:
        """Whether every item has its final outcome."""
        return self.done == self.total

    def counts(self) -> dict[str, int]:
        """Item counts as a run's status shows them (a filter's dropped items succeeded
        as tasks)."""
        return {
            "total": self.total,
            "succeeded": self.succeeded + self.dropped,
            "failed": self.failed,
            "running": self.running,
        }

    def startable(self) -> bool:
        """Whether an item may start now (one is waiting and the window has room)."""
        if self.limit is not None and self.running >= self.limit:
            return False
        return bool(self.due_retries) or self.next < self.total

    def attempt_of(self, item: int) -> int:
        """The number of the item's current (or last) attempt."""
        return self.attempts.get(item, 1)

    def phase(self, item: int) -> ItemPhase:
        """The item's phase."""
        return ItemPhase(self.phases[item])

    def kept(self) -> list[int]:
        """The items that make up the step's output, in order (``kept_items``)."""
        if self.succeeded == self.total:
            return list(range(self.total))
        return kept_items(self.phases)

    def first_error(self) -> tuple[int, str] | None:
        """The lowest failed item and its error."""
        if not self.errors:
            return None
        item = min(self.errors)
        return item, self.errors[item]

    def is_current(self, item: int, attempt: int) -> bool:
        """Whether a report about ``attempt`` of ``item`` is about its attempt in flight."""
        return (
            0 <= item < self.total
            and self.phases[item] == ItemPhase.RUNNING
            and self.attempt_of(item) == attempt
        )

    # -- changes -----------------------------------------------------------------------

    def take(self, now: float) -> tuple[int, int]:
        """Start the next item: ``(item, attempt)``; call only when ``startable()``."""
        if self.due_retries:
            item = heapq.heappop(self.due_retries)
            attempt = self.attempts[item] = self.attempt_of(item) + 1
        else:
            item = self.next
            self.next += 1
            attempt = 1
        self.phases[item] = ItemPhase.RUNNING
        self.started[item] = now
        self.running += 1
        return item, attempt

    def finish(self, item: int, phase: ItemPhase) -> None:
        """The item's attempt in flight ended with its final outcome."""
        self._leave_running(item)
        self.phases[item] = phase
        self.first_started.pop(item, None)
        if phase is ItemPhase.SUCCEEDED:
            self.succeeded += 1
        elif phase is ItemPhase.DROPPED:
            self.dropped += 1
        else:
            self.failed += 1

    def first_start(self, item: int) -> float:
        """When the item's first attempt started (what ``max_retry_time`` counts from)."""
        return self.first_started.get(item, self.started.get(item, 0.0))

    def wait_retry(self, item: int, at: float) -> None:
        """The item's attempt failed; it is retried at ``at``."""
        self.first_started.setdefault(item, self.started.get(item, at))
        self._leave_running(item)
        self.phases[item] = ItemPhase.RETRYING
        self.timers[item] = at

    def retry_due(self, item: int) -> None:
        """The item's retry time has come: it starts when the window lets it."""
        self.timers.pop(item, None)
        self.phases[item] = ItemPhase.PENDING
        heapq.heappush(self.due_retries, item)

    def _leave_running(self, item: int) -> None:
        self.running -= 1
        self.started.pop(item, None)
        self.timers.pop(item, None)

    # -- persistence -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain data; a complete fan-out keeps only what its status and output need."""
        data: dict[str, Any] = {
            "attempt": self.attempt,
            "total": self.total,
            "limit": self.limit,
            "succeeded": self.succeeded,
            "dropped": self.dropped,
            "failed": self.failed,
            "errors": {str(i): e for i, e in self.errors.items()},
        }
        if self.complete and self.dropped == 0 and self.failed == 0:
            return data
        # One digit per item: 10,000 items are 10 KB of JSON, not a list of numbers.
        data["phases"] = bytes(b + 48 for b in self.phases).decode("ascii")
        data.update(
            next=self.next,
            running=self.running,
            dueRetries=sorted(self.due_retries),
            attempts=_keys_to_str(self.attempts),
            started=_keys_to_str(self.started),
            firstStarted=_keys_to_str(self.first_started),
            timers=_keys_to_str(self.timers),
        )
        return data

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> Fanout:
        """A fan-out from ``snapshot()``."""
        fan = cls(attempt=data["attempt"], total=data["total"], limit=data.get("limit"))
        fan.succeeded = data["succeeded"]
        fan.dropped = data["dropped"]
        fan.failed = data["failed"]
        fan.errors = _keys_to_int(data.get("errors", {}))
        phases = data.get("phases")
        if phases is None:  # complete, every item succeeded
            fan.phases = bytearray([ItemPhase.SUCCEEDED]) * fan.total
            fan.next = fan.total
            return fan
        fan.phases = bytearray(ord(c) - 48 for c in phases)
        fan.next = data["next"]
        fan.running = data["running"]
        fan.due_retries = list(data.get("dueRetries", ()))
        heapq.heapify(fan.due_retries)
        fan.attempts = _keys_to_int(data.get("attempts", {}))
        fan.started = _keys_to_int(data.get("started", {}))
        fan.first_started = _keys_to_int(data.get("firstStarted", {}))
        fan.timers = _keys_to_int(data.get("timers", {}))
        return fan


def _keys_to_str(mapping: Mapping[int, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in mapping.items()}


def _keys_to_int(mapping: Mapping[str, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in mapping.items()}
