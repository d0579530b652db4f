"""Recording a sequential run from a worker process, straight into Redis.

A sequential run advances on whichever worker finishes its step, usually not the
process that started it (and holds the ``PipelineTrackingManager``). Such a worker
records the run's steps and its end with a ``RedisRecorder``: field-level updates
(one step, or the run's own fields) batched in the background into one round trip,
which the storage's forward-only writes make safe to apply in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from taskiq_flow.tracking.observer import PipelineType, step_end_event, step_start_event
from taskiq_flow.tracking.storage import (
    DEFAULT_KEY_PREFIX,
    DEFAULT_TTL_SECONDS,
    RedisPipelineStorage,
)

__all__ = ["RedisRecorder", "recorder_for"]

logger = logging.getLogger("taskiq_flow.tracking")

_FLUSH_DELAY = 0.02
_WRITE_TIMEOUT = 2.0  # a worker's step is not held up longer by unavailable tracking


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


class RedisRecorder:
    """A ``RunObserver`` that writes field-level updates into ``RedisPipelineStorage``."""

    def __init__(self, storage: RedisPipelineStorage) -> None:
        self.storage = storage
        # (run, step index or -1 for the run itself) -> fields; later writes win
        self._pending: dict[tuple[str, int], dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._down = False

    def _put(self, run_id: str, index: int, fields: dict[str, Any], event: dict[str, Any]) -> None:
        self._pending[(run_id, index)] = fields
        # "origin" tells the starting process's manager that these events are news to it.
        event.update(pipeline_id=run_id, timestamp=datetime.now(UTC).isoformat(), origin="worker")
        self._events.append(event)
        if self._task is None or self._task.done():
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(_FLUSH_DELAY)
        await self.flush()

    async def flush(self) -> None:
        """Write what is pending in one round trip."""
        while self._pending or self._events:
            pending, self._pending = self._pending, {}
            events, self._events = self._events, []
            runs: dict[str, tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]] = {}
            for (run_id, index), fields in pending.items():
                _run, steps = runs.setdefault(run_id, (None, {}))
                if index < 0:
                    runs[run_id] = (fields, steps)
                else:
                    steps[index] = fields
            try:
                async with asyncio.timeout(_WRITE_TIMEOUT):
                    await self.storage.record(
                        [(run_id, run, steps) for run_id, (run, steps) in runs.items()], events
                    )
                self._down = False
            except Exception as exc:
                if not self._down:
                    self._down = True
                    logger.error(
                        "tracking storage (Redis) is unavailable (%s: %s); pipelines keep "
                        "running but their tracking records are not being saved",
                        type(exc).__name__,
                        str(exc) or f"no answer within {_WRITE_TIMEOUT}s",
                    )

    def run_started(self, run_id: str, pipeline_type: PipelineType, step_names: list[str]) -> None:
        """Runs start in the client, which records them itself."""

    def step_started(self, run_id: str, index: int, name: str) -> None:
        now = datetime.now(UTC).isoformat()
        self._put(
            run_id,
            index,
            {"step_name": name, "status": "RUNNING", "started_at": now},
            step_start_event(name, index),
        )

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
        now = datetime.now(UTC)
        duration = None if started_at is None else (now.timestamp() - started_at) * 1000.0
        status = "FAILED" if error is not None else "COMPLETED"
        self._put(
            run_id,
            index,
            {
                "step_name": name,
                "status": status,
                "started_at": _iso(started_at),
                "completed_at": now.isoformat(),
                "duration_ms": duration,
                "result": None if error is not None else result,
                "error": error,
            },
            step_end_event(name, index, duration, error),
        )

    async def run_finished(
        self,
        run_id: str,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        started_at: float | None = None,
    ) -> None:
        now = datetime.now(UTC)
        duration = None if started_at is None else (now.timestamp() - started_at) * 1000.0
        if status == "FAILED":
            self._events.append(
                {
                    "type": "pipeline_error",
                    "status": status,
                    "error": error,
                    "pipeline_id": run_id,
                    "timestamp": now.isoformat(),
                    "origin": "worker",
                }
            )
        self._put(
            run_id,
            -1,
            {
                "pipeline_id": run_id,
                "status": status,
                "pipeline_type": "sequential",
                "started_at": _iso(started_at),
                "completed_at": now.isoformat(),
                "duration_ms": duration,
                "result": result if status == "COMPLETED" else None,
                "error": error,
            },
            {
                "type": "pipeline_complete",
                "status": status,
                "duration_ms": duration,
                "error": error,
            },
        )
        if self._down:
            return  # a background flush retries; do not hold the run up
        await self.flush()


_recorders: dict[tuple[int, str, int], RedisRecorder] = {}


def recorder_for(client: Any, config: dict[str, Any]) -> RedisRecorder:
    """One recorder per Redis client and storage configuration, for this process."""
    prefix = str(config.get("key_prefix", DEFAULT_KEY_PREFIX))
    ttl = int(config.get("ttl_seconds", DEFAULT_TTL_SECONDS))
    key = (id(client), prefix, ttl)
    recorder = _recorders.get(key)
    if recorder is None:
        recorder = RedisRecorder(RedisPipelineStorage(client, key_prefix=prefix, ttl_seconds=ttl))
        _recorders[key] = recorder
    return recorder
