"""How many tasks may be in flight: globally, and by the resources they need.

Both limits are *admission* rules the scheduling core consults before it dispatches a
step. The core never refuses a run's first step in flight, so a run always progresses
even when other runs hold the global budget or the machine is busy.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import psutil

__all__ = [
    "GlobalTaskLimit",
    "ResourceAwareExecutor",
    "get_max_parallel_tasks",
    "global_limit",
    "set_max_parallel_tasks",
]


class GlobalTaskLimit:
    """A process-wide count of pipeline tasks in flight, with an optional cap."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self.in_flight = 0

    def acquire(self) -> None:
        """Count one more task in flight."""
        self.in_flight += 1

    def release(self) -> None:
        """Count one task fewer."""
        self.in_flight = max(0, self.in_flight - 1)


global_limit = GlobalTaskLimit()


def set_max_parallel_tasks(limit: int | None) -> None:
    """Never run more than ``limit`` pipeline tasks at once in this process (``None``: no cap)."""
    if limit is not None and limit < 1:
        raise ValueError("the limit must be >= 1 (or None for no limit)")
    global_limit.limit = limit


def get_max_parallel_tasks() -> int | None:
    """The process-wide cap set by ``set_max_parallel_tasks``."""
    return global_limit.limit


class ResourceAwareExecutor:
    """Admits a step only while the machine has room for it.

    Room is measured with psutil (CPU and memory use now) and estimated from the
    ``resource_profiles`` of the steps in flight (``estimated_cpu_cores``,
    ``estimated_memory_mb``): the sum of estimates must fit within ``max_cpu_percent`` of
    the cores and ``max_memory_percent`` of the memory available when the run started.
    When the machine is already over either threshold, only ``min_parallel`` steps run.
    """

    def __init__(
        self,
        max_cpu_percent: float = 80.0,
        max_memory_percent: float = 80.0,
        min_parallel: int = 1,
        max_parallel: int = 10,
        resource_profiles: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if not 1 <= min_parallel <= max_parallel:
            raise ValueError("need 1 <= min_parallel <= max_parallel")
        self.max_cpu_percent = max_cpu_percent
        self.max_memory_percent = max_memory_percent
        self.min_parallel = min_parallel
        self.max_parallel = max_parallel
        self.resource_profiles: dict[str, Mapping[str, Any]] = dict(resource_profiles or {})
        self.cpu_budget = (os.cpu_count() or 1) * max_cpu_percent / 100
        available_mb = psutil.virtual_memory().available / 2**20
        self.memory_budget_mb = available_mb * max_memory_percent / 100
        psutil.cpu_percent(interval=None)  # primes the counter: the next reading is a delta

    def profile(self, name: str) -> Mapping[str, Any]:
        """The resource profile of step ``name`` (empty when unknown)."""
        return self.resource_profiles.get(name, {})

    def overloaded(self) -> bool:
        """Whether the machine is over its CPU or memory threshold right now."""
        return (
            psutil.cpu_percent(interval=None) > self.max_cpu_percent
            or psutil.virtual_memory().percent > self.max_memory_percent
        )

    def admit(self, name: str, running: Collection[str]) -> bool:
        """May step ``name`` start while ``running`` are in flight?"""
        if len(running) >= self.max_parallel:
            return False
        if len(running) < self.min_parallel:
            return True
        if self.overloaded():
            return False
        cpu = sum(float(self.profile(n).get("estimated_cpu_cores", 0)) for n in running)
        mem = sum(float(self.profile(n).get("estimated_memory_mb", 0)) for n in running)
        own = self.profile(name)
        cpu += float(own.get("estimated_cpu_cores", 0))
        mem += float(own.get("estimated_memory_mb", 0))
        return cpu <= self.cpu_budget and mem <= self.memory_budget_mb
