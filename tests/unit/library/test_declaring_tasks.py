"""Dataflow guide §2: declaring tasks with ``@pipeline_task`` and its multi-output form."""

from __future__ import annotations

from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import (
    DataflowPipeline,
    PipelineContext,
    PipelineError,
    pipeline_task,
    pipeline_task_multi_output,
)
from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.decorators import pipeline_task_multi_output as multi_output_from_decorators


async def test_pipeline_task_declares_the_output_and_runs_the_task(
    broker: InMemoryBroker,
) -> None:
    @broker.task
    @pipeline_task(output="features")
    async def extract_features(paths: list[str]) -> dict[str, float]:
        """Extract audio features from file paths."""
        return {"tempo": 120.0, "energy": 0.8}

    pipeline = DataflowPipeline.from_tasks(broker, [extract_features])

    assert pipeline.dag.outputs == ["features"]
    assert pipeline.dag.external_inputs == ["paths"]
    results = await pipeline.kiq_dataflow(paths=["a.mp3"])
    assert results == {"features": {"tempo": 120.0, "energy": 0.8}}


async def test_decorator_order_does_not_matter(broker: InMemoryBroker) -> None:
    @pipeline_task(output="doubled")
    @broker.task
    async def double(value: int) -> int:
        return value * 2

    results = await DataflowPipeline.from_tasks(broker, [double]).kiq_dataflow(value=21)

    assert results == {"doubled": 42}


def test_pipeline_task_parameter_defaults(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="out")
    def plain(value: int) -> int:
        return value

    node = DataflowPipeline.from_tasks(broker, [plain]).dag.nodes["plain"]

    assert node.retry == RetryPolicy(
        retries=0, delay=1.0, backoff=2.0, jitter=True, max_retry_time=300
    )
    assert dict(node.resources) == {}
    assert node.inputs == ("value",)


def test_pipeline_task_parameters_are_kept_on_the_step(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(
        output="reliable_feature",
        inputs=["url"],
        retries=3,
        retry_delay=2.0,
        retry_backoff=3.0,
        retry_jitter=False,
        max_retry_time=60,
        resources={"memory": 512, "cpu": 2},
    )
    def fetch_with_retry(url: str) -> dict[str, str]:
        return {"url": url}

    node = DataflowPipeline.from_tasks(broker, [fetch_with_retry]).dag.nodes["fetch_with_retry"]

    assert node.outputs == ("reliable_feature",)
    assert node.inputs == ("url",)
    assert node.retry == RetryPolicy(
        retries=3, delay=2.0, backoff=3.0, jitter=False, max_retry_time=60
    )
    assert dict(node.resources) == {"memory": 512, "cpu": 2}


async def test_explicit_inputs_override_inference(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="raw")
    async def load() -> list[int]:
        return [3, 1, 2]

    @broker.task
    @pipeline_task(output="ordered", inputs=["raw"])
    async def order(*args: Any, **kwargs: Any) -> list[int]:
        return sorted(kwargs["raw"])

    pipeline = DataflowPipeline.from_tasks(broker, [load, order])

    assert pipeline.dag.nodes["order"].dependencies == {"load"}
    assert await pipeline.kiq_dataflow() == {"raw": [3, 1, 2], "ordered": [1, 2, 3]}


async def test_inputs_are_inferred_from_the_signature(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="stats")
    def compute_stats(features: dict[str, float], config: dict[str, str]) -> dict[str, int]:
        # Automatically inferred: inputs=["features", "config"]
        return {"count": len(features)}

    pipeline = DataflowPipeline.from_tasks(broker, [compute_stats])

    assert pipeline.dag.nodes["compute_stats"].inputs == ("features", "config")
    assert pipeline.dag.external_inputs == ["features", "config"]
    results = await pipeline.kiq_dataflow(
        features={"tempo": 120.0, "energy": 0.8}, config={"mode": "fast"}
    )
    assert results == {"stats": {"count": 2}}


def test_inference_skips_self_cls_defaults_and_context(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="a")
    def with_self(self: object, data: list[int]) -> int:
        return len(data)

    @broker.task
    @pipeline_task(output="b")
    def with_cls(cls: type, data: list[int]) -> int:
        return len(data)

    @broker.task
    @pipeline_task(output="c")
    def with_default(data: list[int], factor: int = 2) -> int:
        return len(data) * factor

    @broker.task
    @pipeline_task(output="d")
    def with_context(data: list[int], context: PipelineContext) -> int:
        return len(data)

    pipeline = DataflowPipeline.from_tasks(
        broker, [with_self, with_cls, with_default, with_context]
    )
    dag = pipeline.dag

    for name in ("with_self", "with_cls", "with_default", "with_context"):
        assert dag.nodes[name].inputs == ("data",), name
    assert dict(dag.nodes["with_default"].optional_inputs) == {"factor": 2}
    assert dag.external_inputs == ["data"]


async def test_a_default_is_used_when_nothing_provides_the_value(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="scaled")
    async def scale(value: int, factor: int = 2) -> int:
        return value * factor

    pipeline = DataflowPipeline.from_tasks(broker, [scale])

    assert await pipeline.kiq_dataflow(value=3) == {"scaled": 6}
    # The caller may still pass the optional input ...
    assert await pipeline.kiq_dataflow(value=3, factor=10) == {"scaled": 30}


async def test_a_produced_value_wins_over_the_default(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="factor")
    async def choose_factor() -> int:
        return 5

    @broker.task
    @pipeline_task(output="scaled")
    async def scale(value: int, factor: int = 2) -> int:
        return value * factor

    pipeline = DataflowPipeline.from_tasks(broker, [choose_factor, scale])

    # ... and a producer of it makes the step wait for that producer.
    assert pipeline.dag.nodes["scale"].dependencies == {"choose_factor"}
    assert await pipeline.kiq_dataflow(value=3) == {"factor": 5, "scaled": 15}


async def test_multi_output_registers_every_key(broker: InMemoryBroker) -> None:
    assert multi_output_from_decorators is pipeline_task_multi_output

    def extract(path: str) -> dict[str, float]:
        return {"tempo": 120.0}

    def get_metadata(path: str) -> dict[str, str]:
        return {"title": path.removesuffix(".mp3")}

    @broker.task
    @pipeline_task_multi_output(outputs={"features": dict, "metadata": dict}, retries=2)
    async def process_audio(path: str) -> dict[str, Any]:
        features = extract(path)
        meta = get_metadata(path)
        return {
            "features": features,  # → output "features"
            "metadata": meta,  # → output "metadata"
        }

    @broker.task
    @pipeline_task(output="label")
    async def label(metadata: dict[str, str]) -> str:
        return metadata["title"].upper()

    pipeline = DataflowPipeline.from_tasks(broker, [process_audio, label])
    node = pipeline.dag.nodes["process_audio"]

    assert node.output == "features"  # the first key is the primary output
    assert node.outputs == ("features", "metadata")
    assert node.retry.retries == 2
    assert pipeline.dag.nodes["label"].dependencies == {"process_audio"}
    results = await pipeline.kiq_dataflow(path="song.mp3")
    assert results == {
        "features": {"tempo": 120.0},
        "metadata": {"title": "song"},
        "label": "SONG",
    }


async def test_multi_output_missing_key_fails_clearly(broker: InMemoryBroker) -> None:
    label_calls: list[object] = []

    @broker.task
    @pipeline_task_multi_output(outputs=["features", "metadata"])
    async def process_audio(path: str) -> dict[str, Any]:
        return {"features": {"tempo": 120.0}}  # "metadata" forgotten

    @broker.task
    @pipeline_task(output="label")
    async def label(metadata: dict[str, str]) -> str:
        label_calls.append(metadata)
        return "never"

    pipeline = DataflowPipeline.from_tasks(broker, [process_audio, label])

    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_dataflow(path="song.mp3")

    assert caught.value.failed_node == "process_audio"
    assert "metadata" in caught.value.errors["process_audio"]
    assert "did not return the declared output" in caught.value.errors["process_audio"]
    assert label_calls == []


async def test_multi_output_that_returns_no_dict_fails_clearly(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task_multi_output(outputs=["features", "metadata"])
    async def process_audio(path: str) -> list[str]:
        return ["not", "a", "dict"]

    with pytest.raises(PipelineError) as caught:
        await DataflowPipeline.from_tasks(broker, [process_audio]).kiq_dataflow(path="x")

    assert "must return a dict" in caught.value.errors["process_audio"]
