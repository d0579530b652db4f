"""``Dispatcher``: send a run's tasks by name and collect their results."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from taskiq import AsyncBroker
from taskiq.exceptions import SendTaskError
from taskiq.exceptions import UnknownTaskError as TaskiqUnknownTaskError
from taskiq.kicker import AsyncKicker

from taskiq_flow.completions import (
    LABEL_ATTEMPT,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_RUN,
    LABEL_STARTED,
    LABEL_STEP,
    Completion,
    CompletionChannel,
    channel_for,
)
from taskiq_flow.errors import UnknownTaskError
from taskiq_flow.middleware import ensure_middleware
from taskiq_flow.optimization.parallel import global_limit

__all__ = ["Dispatcher"]


class Dispatcher:
    """Kicks tasks for one run, with labels that tie them to it, and hears them finish.

    It is the only place that talks to the broker for a run, so the engine, map-reduce
    and the sequential pipeline share one channel per run.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        run_id: str,
        *,
        mode: str = "parallel",
        started_at: float | None = None,
    ) -> None:
        self.broker = broker
        self.run_id = run_id
        self.mode = mode
        self.started_at = time.time() if started_at is None else started_at
        self.outstanding: set[str] = set()
        self._channel: CompletionChannel | None = None
        self._labels_of: dict[str, dict[str, Any]] = {}

    async def __aenter__(self) -> Self:
        ensure_middleware(self.broker)
        self._channel = channel_for(self.broker, self.run_id)
        await self._channel.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening; forget what is still outstanding."""
        for _ in self.outstanding:
            global_limit.release()
        self.outstanding.clear()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    def _task_labels(self, task: Any, task_name: str) -> dict[str, Any]:
        labels = self._labels_of.get(task_name)
        if labels is None:
            source = task if task is not None else self.broker.find_task(task_name)
            labels = dict(getattr(source, "labels", None) or {})
            self._labels_of[task_name] = labels
        return labels

    async def kick(
        self,
        task_name: str,
        task_id: str,
        *,
        node: str,
        attempt: int,
        step_index: int,
        kwargs: Mapping[str, Any] | None = None,
        args: Sequence[Any] = (),
        task: Any = None,
        labels: Mapping[str, Any] | None = None,
    ) -> None:
        """Send ``task_name`` with a deterministic ``task_id``.

        Raises ``UnknownTaskError`` when the broker runs tasks in this process and has
        none of that name; other send failures propagate as ``SendTaskError``.
        """
        all_labels = {
            **self._task_labels(task, task_name),
            LABEL_RUN: self.run_id,
            LABEL_NODE: node,
            LABEL_STEP: step_index,
            LABEL_STARTED: self.started_at,
            **(labels or {}),
        }
        # taskiq encodes and parses every label of every message: the defaults stay off.
        if attempt != 1:
            all_labels[LABEL_ATTEMPT] = attempt
        if self.mode != "parallel":
            all_labels[LABEL_MODE] = self.mode
        kicker: AsyncKicker[Any, Any] = AsyncKicker(
            task_name=task_name, broker=self.broker, labels=all_labels
        ).with_task_id(task_id)
        # Registered before sending: an in-process broker may finish the task inside kiq().
        self.outstanding.add(task_id)
        global_limit.acquire()
        try:
            await kicker.kiq(*args, **dict(kwargs or {}))
        except SendTaskError as exc:
            self.outstanding.discard(task_id)
            global_limit.release()
            if isinstance(exc.__cause__, TaskiqUnknownTaskError):
                raise UnknownTaskError(task_name) from exc
            raise

    async def wait(self, timeout: float | None) -> list[Completion]:
        """Completions of outstanding tasks; waits up to ``timeout`` for the first."""
        assert self._channel is not None, "use the dispatcher as an async context manager"
        completions = await self._channel.get(timeout, self.outstanding)
        fresh = []
        for completion in completions:
            if completion.task_id in self.outstanding:
                self.outstanding.discard(completion.task_id)
                global_limit.release()
                fresh.append(completion)
        return fresh
