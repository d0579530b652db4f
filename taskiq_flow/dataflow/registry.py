"""``DataflowRegistry``: register tasks with their inputs and outputs, build the DAG."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from taskiq_flow.core.retry import NO_RETRY
from taskiq_flow.dataflow.builder import DAGBuilder, node_for_task
from taskiq_flow.dataflow.dag import DAG, DAGNode
from taskiq_flow.decorators import get_task_spec
from taskiq_flow.errors import TaskDefinitionError

__all__ = ["DataflowRegistry"]

_UNSET: Any = object()  # max_retry_time=None means "no cap", so absence needs its own mark


class DataflowRegistry:
    """Task metadata by name, and the graph it implies."""

    def __init__(self) -> None:
        self._nodes: dict[str, DAGNode] = {}

    def register_task(
        self,
        task: Any,
        output: str | Sequence[str] | None = None,
        inputs: Sequence[str] | None = None,
        *,
        retries: int | None = None,
        retry_delay: float | None = None,
        retry_backoff: float | None = None,
        retry_jitter: bool | None = None,
        max_retry_time: float | object | None = _UNSET,
        **meta: Any,
    ) -> DAGNode:
        """Register ``task``; ``output``/``inputs`` override its ``@pipeline_task``.

        The retry options (``retries``, ``retry_delay``, ``retry_backoff``,
        ``retry_jitter``, ``max_retry_time``) and ``resources`` and ``timeout`` mean what
        they mean in ``@pipeline_task`` and override the task's own; the options not given
        keep the task's values. ``meta`` also takes ``name``, ``depends_on``, ``args``
        and a ready ``retry`` policy. Registering a name again replaces the earlier
        registration.
        """
        changes: dict[str, Any] = {
            "retries": retries,
            "delay": retry_delay,
            "backoff": retry_backoff,
            "jitter": retry_jitter,
        }
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        if max_retry_time is not _UNSET:
            given["max_retry_time"] = max_retry_time
        if given:
            if "retry" in meta:
                raise TypeError("pass either retry= or the retry_* options, not both")
            spec = get_task_spec(task) if not isinstance(task, str) else None
            base = spec.retry if spec is not None else NO_RETRY
            try:
                meta["retry"] = dataclasses.replace(base, **given)
            except ValueError as exc:
                raise TaskDefinitionError(f"invalid retry options: {exc}") from exc
        node = node_for_task(task, output, inputs, **meta)
        self._nodes[node.name] = node
        return node

    def unregister(self, name: str) -> None:
        """Forget the task registered as ``name``."""
        self._nodes.pop(name, None)

    def get_tasks(self) -> list[DAGNode]:
        """Every registered task, in registration order."""
        return list(self._nodes.values())

    def get_outputs(self) -> list[str]:
        """Every data name a registered task produces."""
        return [output for node in self._nodes.values() for output in node.outputs]

    def get_external_inputs(self) -> list[str]:
        """Required inputs that no registered task produces."""
        produced = set(self.get_outputs())
        seen: dict[str, None] = {}
        for node in self._nodes.values():
            for name in node.consumed:
                if name not in produced:
                    seen.setdefault(name)
        return list(seen)

    def get_producer(self, data_name: str) -> DAGNode | None:
        """The task that produces ``data_name``."""
        for node in self._nodes.values():
            if data_name in node.outputs:
                return node
        return None

    def get_consumers(self, data_name: str) -> list[DAGNode]:
        """The tasks that consume ``data_name``."""
        return [
            node
            for node in self._nodes.values()
            if data_name in node.consumed or data_name in node.optional_inputs
        ]

    def build_dag(self) -> DAG:
        """Build and validate the graph."""
        builder = DAGBuilder()
        for node in self._nodes.values():
            builder.add_node(node)
        return builder.build()

    def __len__(self) -> int:
        return len(self._nodes)
