"""``ttlSecondsAfterFinished``: a finished run is deleted that long after it ended."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from taskiq_flow.core.states import FINISHED
from taskiq_flow_operator.kube import KubeClient, KubeError

__all__ = ["expire"]

logger = logging.getLogger("taskiq_flow_operator")


async def expire(
    body: Mapping[str, Any],
    spec: Mapping[str, Any],
    stopped: Any,
    api: KubeClient,
    clock: Callable[[], float],
) -> None:
    """Wait for the run's time to live to pass, then delete it (nothing without a TTL)."""
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is None:
        return
    meta = body["metadata"]
    fresh = await api.get_custom("pipelineruns", meta["namespace"], meta["name"])
    if fresh is None:
        return
    status = fresh.get("status") or {}
    finished = status.get("finishedAt")
    if status.get("phase") not in FINISHED or finished is None:
        return
    at = datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp() + float(ttl)
    if clock() < at:
        await stopped.wait(at - clock())
    if not stopped:
        try:
            await api.delete_custom("pipelineruns", meta["namespace"], meta["name"])
        except KubeError as exc:
            logger.warning("could not delete expired run %s: %s", meta["name"], exc)
