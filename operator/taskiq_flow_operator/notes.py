"""Pure builder of Kubernetes Events about Pipelines and PipelineRuns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from taskiq_flow.manifests.status import rfc3339

__all__ = ["COMPONENT", "build_event"]

COMPONENT = "taskiq-flow-operator"


def build_event(
    obj: Mapping[str, Any], type_: str, reason: str, message: str, now: float, seq: int = 0
) -> dict[str, Any]:
    """A core/v1 Event about ``obj`` (a Pipeline or PipelineRun body)."""
    meta = obj.get("metadata", {})
    name = meta.get("name", "unknown")
    stamp = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name}.{int(now * 1e6):x}{seq:03d}",
            "namespace": meta.get("namespace", "default"),
        },
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "flow.taskiq.dev/v1alpha1"),
            "kind": obj.get("kind", "PipelineRun"),
            "name": name,
            "namespace": meta.get("namespace", "default"),
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
