"""Tracking: a record of every run and step, queries, metrics and listeners."""

from taskiq_flow.tracking.manager import PipelineTrackingManager, TrackingEvent
from taskiq_flow.tracking.models import PipelineMetrics, PipelineStatus, StepStatus
from taskiq_flow.tracking.observer import RunObserver
from taskiq_flow.tracking.storage import (
    InMemoryPipelineStorage,
    RedisPipelineStorage,
    TrackingStorage,
)

__all__ = [
    "InMemoryPipelineStorage",
    "PipelineMetrics",
    "PipelineStatus",
    "PipelineTrackingManager",
    "RedisPipelineStorage",
    "RunObserver",
    "StepStatus",
    "TrackingEvent",
    "TrackingStorage",
]
