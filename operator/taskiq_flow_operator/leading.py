"""HA: keep this replica's ``Leadership`` in line with kopf's peering object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from taskiq_flow_operator.kube import KubeClient
from taskiq_flow_operator.peering import Leadership, PeeringConfig, pause_reason

__all__ = ["first_of", "follow_peering"]

logger = logging.getLogger("taskiq_flow_operator")


async def follow_peering(
    config: PeeringConfig | None,
    leadership: Leadership,
    api: Callable[[], KubeClient | None],
    stopped: asyncio.Event,
) -> None:
    """Read the peering object every ``config.interval`` and act or pause as kopf does
    (nothing to do standalone)."""
    if config is None:
        return
    namespaces: list[str | None] = list(config.namespaces) or [None]
    while not stopped.is_set():
        client = api()
        if client is not None:  # else not logged in yet
            try:
                objects = {ns: await client.get_peering(config.name, ns) for ns in namespaces}
            except Exception as exc:  # kopf cannot talk to the API either: keep the state
                logger.warning("reading the peering object failed: %r", exc)
            else:
                leadership.set(pause_reason(objects, config, datetime.now(UTC)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), config.interval)


async def first_of(*waits: Awaitable[Any]) -> None:
    """Until the first of ``waits`` is done (the others are cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
