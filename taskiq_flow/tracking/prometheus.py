"""A tracking listener that exports Prometheus metrics (requires ``prometheus-client``).

>>> tracking.add_listener(PrometheusListener())

Labels stay bounded: the pipeline *kind* (sequential, dataflow), the outcome and the
step name — never a pipeline id, whose every value would be a new time series.

- ``taskiq_flow_pipelines_total{pipeline_type,status}`` (counter)
- ``taskiq_flow_pipeline_duration_seconds{pipeline_type}`` (histogram)
- ``taskiq_flow_pipeline_steps_total{step,status}`` (counter)
- ``taskiq_flow_pipeline_step_duration_seconds{step}`` (histogram)
- ``taskiq_flow_pipelines_in_progress`` (gauge)
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from taskiq_flow.tracking.models import PipelineStatus

__all__ = ["PrometheusListener"]


class PrometheusListener:
    """Counts runs and steps by outcome and times them. One per registry."""

    def __init__(
        self, registry: CollectorRegistry | None = None, namespace: str = "taskiq_flow"
    ) -> None:
        registry = REGISTRY if registry is None else registry
        self.pipelines = Counter(
            "pipelines_total",
            "Pipelines finished, by kind and outcome",
            ["pipeline_type", "status"],
            namespace=namespace,
            registry=registry,
        )
        self.duration = Histogram(
            "pipeline_duration_seconds",
            "Pipeline runtime",
            ["pipeline_type"],
            namespace=namespace,
            registry=registry,
        )
        self.steps = Counter(
            "pipeline_steps_total",
            "Pipeline steps finished, by step name and outcome",
            ["step", "status"],
            namespace=namespace,
            registry=registry,
        )
        self.step_duration = Histogram(
            "pipeline_step_duration_seconds",
            "Pipeline step runtime",
            ["step"],
            namespace=namespace,
            registry=registry,
        )
        self.in_progress = Gauge(
            "pipelines_in_progress",
            "Pipelines started and not finished (in this process's view)",
            namespace=namespace,
            registry=registry,
        )

    def on_pipeline_start(self, pipeline_id: str) -> None:
        self.in_progress.inc()

    def on_step_complete(self, pipeline_id: str, step_name: str, result: Any) -> None:
        self.steps.labels(step=step_name, status="COMPLETED").inc()

    def on_step_error(self, pipeline_id: str, step_name: str, error: str) -> None:
        self.steps.labels(step=step_name, status="FAILED").inc()

    def on_pipeline_complete(self, pipeline_id: str, status: PipelineStatus) -> None:
        self.in_progress.dec()
        self.pipelines.labels(pipeline_type=status.pipeline_type, status=status.status).inc()
        if status.duration_ms is not None:
            self.duration.labels(pipeline_type=status.pipeline_type).observe(
                status.duration_ms / 1000.0
            )
        for step in status.steps:
            if step.duration_ms is not None and step.status in ("COMPLETED", "FAILED"):
                self.step_duration.labels(step=step.step_name).observe(step.duration_ms / 1000.0)
