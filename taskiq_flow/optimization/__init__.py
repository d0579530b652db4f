"""Parallelism controls: a process-wide task limit and resource-aware admission."""

from taskiq_flow.optimization.parallel import (
    ResourceAwareExecutor,
    get_max_parallel_tasks,
    set_max_parallel_tasks,
)

__all__ = ["ResourceAwareExecutor", "get_max_parallel_tasks", "set_max_parallel_tasks"]
