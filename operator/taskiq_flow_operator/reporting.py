"""What the operator tells the API server about a run: Events and status patches.

``Reporter`` posts and patches; ``StatusWriter`` queues one run's writes off the
critical path, so successors are kicked at once whatever the API server's latency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from taskiq_flow_operator.driving import Note
from taskiq_flow_operator.kube import KubeClient, KubeError
from taskiq_flow_operator.notes import build_event

__all__ = ["Reporter", "StatusWriter"]

logger = logging.getLogger("taskiq_flow_operator")

API_ERRORS = (KubeError, aiohttp.ClientError, TimeoutError)
"""What a call to the API server may raise that is worth trying again."""


class Reporter:
    """Posts Events and patches PipelineRun statuses; counts the patches it made."""

    def __init__(self, api: Callable[[], KubeClient], clock: Callable[[], float]) -> None:
        self.api = api
        self.clock = clock
        self.status_patches = 0
        self._event_seq = 0

    async def post_notes(self, body: Mapping[str, Any], notes: list[Note]) -> None:
        """Post Events; a failure to post is logged, never fatal."""
        for note in notes:
            self._event_seq = (self._event_seq + 1) % 1000
            event = build_event(
                body, note.type, note.reason, note.message, self.clock(), self._event_seq
            )
            try:
                await self.api().post_event(event)
            except Exception as exc:
                logger.warning("could not post event %s: %s", note.reason, exc)

    async def patch_run(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Patch a run's status; False (logged) when the API server did not take it."""
        try:
            await self.api().patch_status("pipelineruns", namespace, name, status)
        except API_ERRORS as exc:
            logger.warning("status patch of %s/%s failed: %s", namespace, name, exc or repr(exc))
            return False
        self.status_patches += 1
        return True


class StatusWriter:
    """One run's API writes, in order, off the critical path.

    Status patches coalesce: only the newest pending status is sent. ``close`` waits for
    everything submitted, so a late intermediate patch never lands after the final one.
    """

    def __init__(
        self, reporter: Reporter, body: Mapping[str, Any], namespace: str, name: str
    ) -> None:
        self.reporter = reporter
        self.body = body
        self.namespace = namespace
        self.name = name
        self._status: dict[str, Any] | None = None
        self._notes: list[Note] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    def status(self, status: dict[str, Any]) -> None:
        """Write ``status`` (replacing one not written yet)."""
        self._status = status
        self._wake.set()

    def notes(self, notes: list[Note]) -> None:
        """Post ``notes`` as Events."""
        self._notes += notes
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            status, self._status = self._status, None
            if self._notes and not self._closing:
                notes, self._notes = self._notes, []
                await self.reporter.post_notes(self.body, notes)
            if status is not None and not await self.reporter.patch_run(
                self.namespace, self.name, status
            ):
                if self._status is None and not self._closing:
                    self._status = status
                await asyncio.sleep(1.0)
                self._wake.set()
            if self._closing and self._status is None:
                return

    async def close(self) -> list[Note]:
        """Stop after the write in flight; pending statuses are dropped (the caller
        writes the final one) and pending Events returned, to post after it."""
        self._closing = True
        self._status = None
        self._wake.set()
        await self._task
        notes, self._notes = self._notes, []
        return notes
