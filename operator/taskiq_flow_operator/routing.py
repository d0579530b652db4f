"""Step events from Redis to the supervisor of their run.

One consumer group on the events stream; one consumer per replica, so Redis shows who
read what and the acting replica claims what a paused or dead one left pending.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict

from taskiq_flow_operator.config import OperatorConfig
from taskiq_flow_operator.leading import first_of
from taskiq_flow_operator.peering import Leadership
from taskiq_flow_operator.storing import Store
from taskiq_flow_worker import protocol as p

__all__ = ["EventRouter", "Route"]

logger = logging.getLogger("taskiq_flow_operator")

Route = asyncio.Queue[tuple[str, p.StepEvent]]
"""One run's events as they come: ``(stream entry id, event)``."""


class EventRouter:
    """Reads step events while this replica acts and hands each to its run's route."""

    def __init__(self, store: Store, leadership: Leadership, config: OperatorConfig) -> None:
        self.store = store
        self.leadership = leadership
        self.config = config
        self.ready = False
        self.routes: dict[str, Route] = {}
        # Events read and not yet acknowledged, by run: a supervisor that starts (again,
        # after a crash) takes them all, so none is lost with a dead supervisor's queue.
        self.unacked: defaultdict[str, dict[str, p.StepEvent]] = defaultdict(dict)
        self.closed: set[str] = set()

    def open(self, run: str) -> Route:
        """The route of ``run``'s events, holding those read before it opened."""
        route: Route = asyncio.Queue()
        for entry, event in sorted(self.unacked.get(run, {}).items()):
            route.put_nowait((entry, event))
        self.routes[run] = route
        return route

    def leave(self, run: str) -> None:
        """The run's supervisor stopped; events read meanwhile wait in ``unacked``."""
        self.routes.pop(run, None)

    async def acknowledge(self, run: str, entries: list[str]) -> None:
        """The run's supervisor has applied these events."""
        await self.store.ack(entries)
        waiting = self.unacked.get(run, {})
        for entry in entries:
            waiting.pop(entry, None)

    async def close(self, run: str) -> None:
        """The run is over: late events (a step abandoned by a timeout or a cancel) are
        acknowledged as they come instead of waiting for a supervisor that is gone."""
        self.closed.add(run)
        late = self.unacked.pop(run, {})
        if late:
            await self.store.ack(list(late))

    async def run(self, stopped: asyncio.Event) -> None:
        """Route events until ``stopped``, while this replica acts (always, standalone)."""
        await self.store.ensure_group()
        self.ready = True
        while not stopped.is_set():
            if self.leadership.active:
                await self._route_while_active(stopped)
                continue
            # Paused: kopf stops the run supervisors; what this replica read and did not
            # acknowledge stays pending in Redis, for the acting replica to claim.
            self.unacked.clear()
            await first_of(stopped.wait(), self.leadership.wait_active())

    async def _route_while_active(self, stopped: asyncio.Event) -> None:
        # First what other consumers left pending (replicas paused or gone) and this one's
        # own pending events, page by page; then new ones. Claimed again every
        # ``adopt_interval``: a replica pausing reads for a moment after this one acts.
        pending = True
        after = "0"
        adopted_at = -math.inf
        while not stopped.is_set() and self.leadership.active:
            try:
                if time.monotonic() - adopted_at >= self.config.adopt_interval:
                    adopted_at = time.monotonic()
                    claimed = await self.store.adopt()
                    if claimed:
                        logger.info("claimed %d events other replicas left pending", claimed)
                        pending, after = True, "0"
                batch = await self.store.read_events(pending=pending, block_ms=1000, after=after)
            except Exception as exc:
                logger.warning("reading step events failed: %s", exc)
                await asyncio.sleep(1)
                continue
            if pending:
                if not batch:
                    pending = False
                    continue
                after = batch[-1][0]
            await self._hand_out(batch)

    async def _hand_out(self, batch: list[tuple[str, p.StepEvent]]) -> None:
        late: list[str] = []
        for entry, event in batch:
            if event.run in self.closed:
                late.append(entry)
                continue
            waiting = self.unacked[event.run]
            if entry in waiting:
                continue  # routed already (pending events are read again after a claim)
            waiting[entry] = event
            route = self.routes.get(event.run)
            if route is not None:
                route.put_nowait((entry, event))
        if late:
            try:
                await self.store.ack(late)
            except Exception as exc:  # acknowledged on the next restart instead
                logger.warning("acknowledging late events failed: %s", exc)
