"""``QueueWatch``: what ``taskiq-flow run --broker`` says while its run waits on workers.

A run sent to Redis needs a ``taskiq-flow worker`` reading its queue. Without one
nothing happens until the run times out, so the watch looks at the queue's consumer
group shortly after the run starts and says when no worker reads it, with the exact
command that starts one. When progress is not a live table (plain output, a log, CI) it
also prints a line of status at a modest interval, so a quiet run never looks hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rich.console import Console

from taskiq_flow.completions import redis_pool_of, shared_client
from taskiq_flow.execution_engine import ExecutionEngine

__all__ = ["QueueWatch", "worker_command"]

FIRST_LOOK_SECONDS = 3.0
STATUS_EVERY_SECONDS = 15.0
# A worker blocks on the queue for a few seconds at a time; one silent far longer than
# that, with nothing pending, is gone (consumers stay listed after their process ended).
LIVE_CONSUMER_IDLE_MS = 60_000


def worker_command(
    modules: Sequence[str], manifests: Sequence[str], broker_url: str, queue: str
) -> str:
    """The ``taskiq-flow worker`` command for this run, to paste from the current
    directory: ``--path`` for each manifest directory the task modules may live in."""
    here = Path.cwd().resolve()
    words = ["taskiq-flow", "worker", *modules]
    for directory in dict.fromkeys(Path(m).resolve().parent for m in manifests):
        if directory != here:
            words += ["--path", _relative(directory, here)]
    words += ["--broker", broker_url, "--queue", queue]
    return shlex.join(words)


def _relative(directory: Path, here: Path) -> str:
    try:
        return str(directory.relative_to(here))
    except ValueError:
        return str(directory)


class QueueWatch:
    """Watches ``queue`` of ``broker`` while ``engine`` runs (an async context manager).

    ``status_lines``: also print a status line every ``every`` seconds.
    """

    def __init__(
        self,
        broker: Any,
        queue: str,
        engine: ExecutionEngine,
        command: str,
        console: Console,
        *,
        status_lines: bool,
        first_look: float = FIRST_LOOK_SECONDS,
        every: float = STATUS_EVERY_SECONDS,
    ) -> None:
        self.broker = broker
        self.queue = queue
        self.engine = engine
        self.command = command
        self.console = console
        self.status_lines = status_lines
        self.first_look = first_look
        self.every = every
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def has_worker(self) -> bool:
        """Whether a live consumer reads the queue (a Redis error counts as yes: the
        watch only ever adds a hint)."""
        pool = redis_pool_of(self.broker)
        if pool is None:
            return True
        redis = shared_client(pool)
        group = getattr(self.broker, "consumer_group_name", "taskiq")
        try:
            consumers = await redis.xinfo_consumers(self.queue, group)
        except Exception as exc:  # no stream or no group yet: no worker ever read it
            return "no such key" not in str(exc).lower() and "nogroup" not in str(exc).lower()
        return any(
            int(c.get("idle", 0)) < LIVE_CONSUMER_IDLE_MS or int(c.get("pending", 0)) > 0
            for c in consumers
        )

    async def _watch(self) -> None:
        # Pacing a message to the user, not waiting for something to happen.
        await asyncio.sleep(self.first_look)
        if not await self.has_worker():
            self.console.print(
                f"no worker reads queue {self.queue} yet; start one with:\n  {self.command}",
                highlight=False,
                soft_wrap=True,
            )
        while self.status_lines:
            self._status()
            await asyncio.sleep(self.every)

    def _status(self) -> None:
        report = self.engine.current_report()
        if report is None:
            return
        done = sum(step.status in ("Succeeded", "Skipped") for step in report.steps.values())
        waiting = sum(step.status in ("Running", "Retrying") for step in report.steps.values())
        elapsed = time.monotonic() - self.started
        self.console.print(
            f"run {report.pipeline_id}: {elapsed:.0f}s, {done}/{len(report.steps)} steps "
            f"done, {waiting} waiting for a worker or running",
            highlight=False,
        )
