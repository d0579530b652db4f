"""How the operator runs: the settings its command line gives."""

from __future__ import annotations

from dataclasses import dataclass, field

from taskiq_flow_operator.peering import PeeringConfig
from taskiq_flow_worker import protocol as p

__all__ = ["OperatorConfig"]


@dataclass
class OperatorConfig:
    """How the operator runs (from the command line)."""

    redis_url: str
    redis_secret: str | None = None
    redis_secret_key: str = "url"
    status_interval: float = 0.5
    scale_interval: float = 1.0
    pipeline_missing_retry: float = 2.0
    worker_idle_timeout_ms: int = 60_000
    worker_env: dict[str, str] = field(default_factory=dict)
    events_stream: str = p.DEFAULT_EVENTS_STREAM
    # HA (kopf peering): only the replica kopf lets act reads events and scales.
    peering: PeeringConfig | None = None
    # How often the acting replica claims events other replicas read and left pending.
    adopt_interval: float = 5.0
