"""Which replica acts in HA mode: kopf's peering rule, seen from the operator's own tasks.

kopf pauses a replica's resource handling (watch streams, daemons, timers) when its
peering object lists a live peer of higher or equal priority, but it keeps that state
(``operator_paused``) private to ``kopf.spawn_tasks``. The operator's own background
tasks (the event router, the scaler) read the same peering object and apply the same
rule (kopf/_core/engines/peering.py, ``process_peering_event``), so they act only in
the replica kopf lets act.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import random
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "DEFAULT_LIFETIME",
    "Leadership",
    "PeeringConfig",
    "exact_namespaces",
    "own_identity",
    "pause_reason",
    "peer_pause_reason",
]

logger = logging.getLogger("taskiq_flow_operator")

DEFAULT_LIFETIME = 60  # kopf's settings.peering.lifetime


@dataclass(frozen=True)
class PeeringConfig:
    """kopf peering as the operator runs it (``--peering``, ``--priority``)."""

    name: str
    priority: int
    identity: str
    # Empty: cluster-wide (one ClusterKopfPeering); else a KopfPeering in each namespace.
    namespaces: tuple[str, ...] = ()
    lifetime: int = DEFAULT_LIFETIME
    interval: float = 1.0  # how often the peering objects are read


def own_identity() -> str:
    """This process's peering identity (and events consumer name).

    kopf's own rule (``detect_own_id``): ``$POD_ID`` when set (the chart sets the pod
    name), else user, host, start time and a random suffix, so that two processes on
    one host never share an identity.
    """
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    suffix = "".join(random.choices("abcdefhijklmnopqrstuvwxyz0123456789", k=3))
    return f"{getpass.getuser()}@{socket.gethostname()}/{now}/{suffix}"


def exact_namespaces(patterns: Iterable[str]) -> list[str]:
    """The ``--namespace`` values that name one namespace (not a glob, negation or list)."""
    return [p for p in patterns if not any(c in p for c in "!*?,")]


def _lastseen(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        seen = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return seen if seen.tzinfo is not None else seen.replace(tzinfo=UTC)


def peer_pause_reason(
    status: Mapping[str, Any] | None,
    identity: str,
    priority: int,
    now: datetime,
) -> str | None:
    """Why kopf pauses ``identity`` given its peering object's ``status``, or ``None``.

    kopf's rule: the status maps each peer's identity to its ``priority``, ``lifetime``
    and ``lastseen``; a peer is dead after ``lastseen + lifetime``. A live peer (not
    ourselves) of higher priority pauses us; one of the same priority pauses both.
    """
    higher: list[str] = []
    same: list[str] = []
    for peer, info in (status or {}).items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        try:
            their_priority = int(info.get("priority", 0))
            lifetime = int(info.get("lifetime", DEFAULT_LIFETIME))
        except (TypeError, ValueError):
            continue
        seen = _lastseen(info.get("lastseen"))
        if seen is None:  # kopf counts a peer without lastseen as seen just now
            seen = now
        if seen + timedelta(seconds=lifetime) <= now:
            continue  # dead: kopf ignores it (and cleans it away)
        if their_priority > priority:
            higher.append(peer)
        elif their_priority == priority:
            same.append(peer)
    if higher:
        return f"peers of higher priority: {', '.join(sorted(higher))}"
    if same:
        return f"peers of the same priority: {', '.join(sorted(same))}"
    return None


def pause_reason(
    objects: Mapping[str | None, Mapping[str, Any] | None],
    config: PeeringConfig,
    now: datetime,
) -> str | None:
    """Why this replica is paused, from its peering objects (by namespace, ``None`` for
    the cluster one; a missing object is ``None``), or ``None`` when it acts.

    kopf stays paused while a peering object it needs is missing: its peering is
    mandatory with ``--peering``, and it starts paused until the object says otherwise.
    """
    for namespace, body in objects.items():
        where = f"in {namespace!r}" if namespace else "cluster-wide"
        if body is None:
            return f"peering object {config.name!r} {where} not found"
        reason = peer_pause_reason(body.get("status"), config.identity, config.priority, now)
        if reason is not None:
            return f"{reason} ({where})"
    return None


class Leadership:
    """Whether this replica acts; the background tasks wait on it."""

    def __init__(self, active: bool) -> None:
        self._active = asyncio.Event()
        self._paused = asyncio.Event()
        (self._active if active else self._paused).set()
        self.reason: str | None = None if active else "starting"
        self.changes = 0

    @property
    def active(self) -> bool:
        """This replica acts now."""
        return self._active.is_set()

    def set(self, reason: str | None) -> bool:
        """Act when ``reason`` is ``None``, else pause; whether that is a change."""
        active = reason is None
        self.reason = reason
        if active == self.active:
            return False
        self.changes += 1
        if active:
            self._paused.clear()
            self._active.set()
            logger.info("peering: this replica acts now")
        else:
            self._active.clear()
            self._paused.set()
            logger.info("peering: this replica pauses (%s)", reason)
        return True

    async def wait_active(self) -> None:
        """Until this replica acts."""
        await self._active.wait()

    async def wait_paused(self) -> None:
        """Until this replica pauses."""
        await self._paused.wait()
