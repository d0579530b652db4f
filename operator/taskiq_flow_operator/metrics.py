"""The operator's Prometheus metrics (api.md section 4), rendered as text.

A tiny in-process registry: counters, gauges and histograms with labels. No run names
or ids are ever labels.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["DURATION_BUCKETS", "Metrics"]

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, math.inf)

LabelSet = tuple[tuple[str, str], ...]


def _labels(**labels: str) -> LabelSet:
    return tuple(sorted(labels.items()))


def _render_labels(labels: LabelSet, extra: Sequence[tuple[str, str]] = ()) -> str:
    pairs = [*labels, *extra]
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs
    )
    return "{" + inner + "}"


class _Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * len(DURATION_BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(DURATION_BUCKETS):
            if value <= bound:
                self.buckets[i] += 1


class Metrics:
    """The metrics of api.md section 4."""

    def __init__(self) -> None:
        self.runs: defaultdict[LabelSet, int] = defaultdict(int)
        self.steps: defaultdict[LabelSet, int] = defaultdict(int)
        self.run_durations: defaultdict[LabelSet, _Histogram] = defaultdict(_Histogram)
        self.step_durations: defaultdict[LabelSet, _Histogram] = defaultdict(_Histogram)
        self.active_runs: dict[LabelSet, int] = {}
        self.queue_depth: dict[LabelSet, int] = {}
        self.worker_replicas: dict[LabelSet, int] = {}

    def run_finished(
        self, namespace: str, pipeline: str, phase: str, duration: float | None
    ) -> None:
        """Count a finished run (and its duration)."""
        self.runs[_labels(namespace=namespace, pipeline=pipeline, phase=phase)] += 1
        if duration is not None:
            self.run_durations[_labels(namespace=namespace, pipeline=pipeline)].observe(duration)

    def step_finished(
        self, namespace: str, pipeline: str, step: str, phase: str, duration: float | None
    ) -> None:
        """Count a finished step (and its duration)."""
        self.steps[_labels(namespace=namespace, pipeline=pipeline, step=step, phase=phase)] += 1
        if duration is not None:
            key = _labels(namespace=namespace, pipeline=pipeline, step=step)
            self.step_durations[key].observe(duration)

    def set_active_runs(self, counts: dict[str, int]) -> None:
        """Runs being driven, by namespace."""
        self.active_runs = {_labels(namespace=ns): n for ns, n in counts.items()}

    def set_queue_depth(self, queue: str, depth: int) -> None:
        """Messages waiting in a pipeline's queue."""
        self.queue_depth[_labels(queue=queue)] = depth

    def set_worker_replicas(self, namespace: str, pipeline: str, replicas: int) -> None:
        """Replicas the operator asked for."""
        self.worker_replicas[_labels(namespace=namespace, pipeline=pipeline)] = replicas

    def render(self) -> str:
        """Prometheus text exposition format."""
        lines: list[str] = []

        def simple(name: str, kind: str, doc: str, values: dict[LabelSet, int]) -> None:
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in sorted(values.items()):
                lines.append(f"{name}{_render_labels(labels)} {value}")

        def histogram(name: str, doc: str, values: dict[LabelSet, _Histogram]) -> None:
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} histogram")
            for labels, h in sorted(values.items()):
                for bound, count in zip(DURATION_BUCKETS, h.buckets, strict=True):
                    le = "+Inf" if math.isinf(bound) else f"{bound:g}"
                    lines.append(f"{name}_bucket{_render_labels(labels, [('le', le)])} {count}")
                lines.append(f"{name}_sum{_render_labels(labels)} {h.sum:.6f}")
                lines.append(f"{name}_count{_render_labels(labels)} {h.count}")

        simple("taskiq_flow_runs_total", "counter", "Finished runs.", self.runs)
        histogram("taskiq_flow_run_duration_seconds", "Run durations.", self.run_durations)
        simple("taskiq_flow_steps_total", "counter", "Finished steps.", self.steps)
        histogram("taskiq_flow_step_duration_seconds", "Step durations.", self.step_durations)
        simple("taskiq_flow_active_runs", "gauge", "Runs being driven.", self.active_runs)
        simple("taskiq_flow_queue_depth", "gauge", "Messages not yet done.", self.queue_depth)
        simple(
            "taskiq_flow_worker_replicas", "gauge", "Worker replicas wanted.", self.worker_replicas
        )
        return "\n".join(lines) + "\n"
