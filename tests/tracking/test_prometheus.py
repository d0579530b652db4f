"""The Prometheus listener: the guide's metrics, with bounded labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from taskiq import InMemoryBroker

from taskiq_flow import Pipeline, PipelineTrackingManager
from taskiq_flow.tracking.prometheus import PrometheusListener
from tests.tracking.flow_tasks import add_one, double, explode


async def test_counts_and_times_runs_and_steps(broker: InMemoryBroker) -> None:
    registry = CollectorRegistry()
    tracking = PipelineTrackingManager().with_auto_storage(broker)
    tracking.add_listener(PrometheusListener(registry))
    ids = []
    for value in range(2):
        pipeline = Pipeline(broker).call_next(double).call_next(add_one).with_tracking(tracking)
        await (await pipeline.kiq(value)).wait_result()
        ids.append(pipeline.pipeline_id)
    bad = Pipeline(broker).call_next(explode).with_tracking(tracking)
    await (await bad.kiq(1)).wait_result(raise_on_error=False)
    ids.append(bad.pipeline_id)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("taskiq_flow_pipelines_total", pipeline_type="sequential", status="COMPLETED") == 2
    assert value("taskiq_flow_pipelines_total", pipeline_type="sequential", status="FAILED") == 1
    assert value("taskiq_flow_pipeline_duration_seconds_count", pipeline_type="sequential") == 3
    assert value("taskiq_flow_pipeline_steps_total", step="double", status="COMPLETED") == 2
    assert value("taskiq_flow_pipeline_steps_total", step="explode", status="FAILED") == 1
    assert value("taskiq_flow_pipeline_step_duration_seconds_count", step="add_one") == 2
    assert value("taskiq_flow_pipelines_in_progress") == 0
    text = generate_latest(registry).decode()
    assert "taskiq_flow_pipelines_total" in text
    assert not any(run in text for run in ids)  # no pipeline ids as labels


async def test_the_guides_own_exporter_class(broker: InMemoryBroker) -> None:
    from prometheus_client import Counter, Histogram

    from taskiq_flow import PipelineStatus

    registry = CollectorRegistry()
    PIPELINE_COUNT = Counter("pipelines_total", "Total pipelines", ["status"], registry=registry)
    PIPELINE_DURATION = Histogram(
        "pipeline_duration_seconds", "Pipeline runtime", registry=registry
    )

    class PrometheusExporter:
        async def on_pipeline_complete(self, pipeline_id: str, status: PipelineStatus) -> None:
            PIPELINE_COUNT.labels(status=status.status).inc()
            assert status.duration_ms is not None
            PIPELINE_DURATION.observe(status.duration_ms / 1000)

    tracking = PipelineTrackingManager().with_auto_storage(broker)
    tracking.add_listener(PrometheusExporter())
    pipeline = Pipeline(broker).call_next(double).with_tracking(tracking)
    await (await pipeline.kiq(1)).wait_result()
    assert registry.get_sample_value("pipelines_total", {"status": "COMPLETED"}) == 1
    assert registry.get_sample_value("pipeline_duration_seconds_count") == 1
