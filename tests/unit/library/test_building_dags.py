"""Dataflow guide §3, §4 and §7: building pipelines, inspecting DAGs, the DataCache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import DataflowPipeline, DataflowRegistry, ExecutionEngine, pipeline_task
from taskiq_flow.dataflow import DAG, DAGNode
from taskiq_flow.dataflow.cache import DataCache
from taskiq_flow.errors import TaskDefinitionError


def report_tasks(broker: InMemoryBroker) -> list[Any]:
    """extract_features → compute_stats → generate_report (guide §3.1)."""

    @broker.task
    @pipeline_task(output="features")
    async def extract_features(paths: list[str]) -> dict[str, Any]:
        return {"tempo": 120.0, "tracks": len(paths)}

    @broker.task
    @pipeline_task(output="stats")
    async def compute_stats(features: dict[str, Any]) -> dict[str, int]:
        return {"count": len(features)}

    @broker.task
    @pipeline_task(output="report")
    async def generate_report(stats: dict[str, int]) -> str:
        return f"{stats['count']} features"

    return [extract_features, compute_stats, generate_report]


# -- §3.1 / §3.2 ---------------------------------------------------------------------------


async def test_from_tasks_builds_the_dag_by_levels(broker: InMemoryBroker) -> None:
    pipeline = DataflowPipeline.from_tasks(broker, report_tasks(broker))
    dag = pipeline.dag

    assert [[n.task_name.split(":")[-1] for n in level] for level in dag.levels] == [
        ["extract_features"],
        ["compute_stats"],
        ["generate_report"],
    ]
    assert dag.nodes["compute_stats"].dependencies == {"extract_features"}
    assert dag.nodes["generate_report"].dependencies == {"compute_stats"}
    assert await pipeline.kiq_dataflow(paths=["song.mp3"]) == {
        "features": {"tempo": 120.0, "tracks": 1},
        "stats": {"count": 2},
        "report": "2 features",
    }


async def test_add_dataflow_task_then_run(broker: InMemoryBroker) -> None:
    extract_features, compute_stats, generate_report = report_tasks(broker)

    pipeline = DataflowPipeline(broker)
    pipeline.add_dataflow_task(extract_features)
    pipeline.add_dataflow_task(compute_stats)
    pipeline.add_dataflow_task(generate_report)
    # DAG is rebuilt lazily on first execution
    results = await pipeline.kiq_dataflow(paths=["song.mp3"])

    assert results == {
        "features": {"tempo": 120.0, "tracks": 1},
        "stats": {"count": 2},
        "report": "2 features",
    }


async def test_adding_a_task_after_a_run_rebuilds_the_dag(broker: InMemoryBroker) -> None:
    extract_features, compute_stats, _ = report_tasks(broker)
    pipeline = DataflowPipeline(broker).add_dataflow_task(extract_features)

    first = await pipeline.kiq_dataflow(paths=["a.mp3", "b.mp3"])
    pipeline.add_dataflow_task(compute_stats)
    second = await pipeline.kiq_dataflow(paths=["a.mp3", "b.mp3"])

    assert first == {"features": {"tempo": 120.0, "tracks": 2}}
    assert second == {"features": {"tempo": 120.0, "tracks": 2}, "stats": {"count": 2}}
    assert len(pipeline.dag.levels) == 2


async def test_dag_is_reused_across_runs_with_different_inputs(broker: InMemoryBroker) -> None:
    pipeline = DataflowPipeline.from_tasks(broker, report_tasks(broker))

    one = await pipeline.kiq_dataflow(paths=["a"])
    two = await pipeline.kiq_dataflow(paths=["a", "b", "c"])

    assert one["features"]["tracks"] == 1
    assert two["features"]["tracks"] == 3


# -- §3.3 ----------------------------------------------------------------------------------


async def test_fan_out_fan_in(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="audio")
    def load_audio(path: str) -> dict[str, Any]:
        return {"path": path, "words": ["hello", "world"]}

    @broker.task
    @pipeline_task(output="transcription")
    def transcribe(audio: dict[str, Any]) -> str:
        return " ".join(audio["words"])

    @broker.task
    @pipeline_task(output="tags")
    def generate_tags(audio: dict[str, Any]) -> list[str]:  # parallel with transcribe
        return [audio["path"].rsplit(".", 1)[-1]]

    @broker.task
    @pipeline_task(output="report")
    def create_report(transcription: str, tags: list[str]) -> dict[str, Any]:  # fan-in
        return {"text": transcription, "tags": tags}

    pipeline = DataflowPipeline.from_tasks(
        broker, [load_audio, transcribe, generate_tags, create_report]
    )

    # DAG: load_audio → (transcribe ∥ generate_tags) → create_report
    assert [sorted(n.name for n in level) for level in pipeline.dag.levels] == [
        ["load_audio"],
        ["generate_tags", "transcribe"],
        ["create_report"],
    ]
    assert pipeline.dag.nodes["create_report"].dependencies == {"transcribe", "generate_tags"}
    assert await pipeline.kiq_dataflow(path="talk.wav") == {
        "audio": {"path": "talk.wav", "words": ["hello", "world"]},
        "transcription": "hello world",
        "tags": ["wav"],
        "report": {"text": "hello world", "tags": ["wav"]},
    }


async def test_fan_out_branches_really_run_at_the_same_time(broker: InMemoryBroker) -> None:
    transcribing = asyncio.Event()
    tagging = asyncio.Event()

    @broker.task
    @pipeline_task(output="audio")
    async def load_audio(path: str) -> str:
        return path

    @broker.task
    @pipeline_task(output="transcription")
    async def transcribe(audio: str) -> str:
        transcribing.set()
        await tagging.wait()  # only returns if generate_tags runs meanwhile
        return "text"

    @broker.task
    @pipeline_task(output="tags")
    async def generate_tags(audio: str) -> list[str]:
        tagging.set()
        await transcribing.wait()  # only returns if transcribe runs meanwhile
        return ["tag"]

    @broker.task
    @pipeline_task(output="report")
    async def create_report(transcription: str, tags: list[str]) -> str:
        return f"{transcription}:{','.join(tags)}"

    pipeline = DataflowPipeline.from_tasks(
        broker, [load_audio, transcribe, generate_tags, create_report], timeout=5
    )

    results = await pipeline.kiq_dataflow(path="x")

    assert results["report"] == "text:tag"


# -- §3.4 ----------------------------------------------------------------------------------


async def test_external_inputs_are_identified_and_passed(broker: InMemoryBroker) -> None:
    @broker.task
    @pipeline_task(output="profile")
    async def load_profile(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    @broker.task
    @pipeline_task(output="plan")
    async def make_plan(profile: dict[str, str], config: dict[str, str]) -> str:
        return f"{profile['id']}@{config['mode']}"

    pipeline = DataflowPipeline.from_tasks(broker, [load_profile, make_plan])

    assert pipeline.dag.external_inputs == ["user_id", "config"]
    results = await pipeline.kiq_dataflow(
        user_id="user_123",  # external input
        config={"mode": "fast"},  # external input
    )
    # The result maps output names to values; the inputs are not echoed back.
    assert results == {"profile": {"id": "user_123"}, "plan": "user_123@fast"}


# -- §4.1 ----------------------------------------------------------------------------------


def etl_tasks(broker: InMemoryBroker) -> tuple[Any, Any, Any]:
    @broker.task
    async def load_data(source_url: str) -> list[str]:
        return [f" {source_url} ", " b "]

    @broker.task
    async def clean_data(raw_data: list[str]) -> list[str]:
        return [row.strip() for row in raw_data]

    @broker.task
    async def save_data(clean_data: list[str]) -> int:
        return len(clean_data)

    return load_data, clean_data, save_data


def etl_registry(broker: InMemoryBroker) -> DataflowRegistry:
    load_data, clean_data, save_data = etl_tasks(broker)
    registry = DataflowRegistry()
    # Register tasks with explicit I/O
    registry.register_task(
        task=load_data,
        output="raw_data",
        inputs=["source_url"],  # external input
    )
    registry.register_task(task=clean_data, output="clean_data", inputs=["raw_data"])
    registry.register_task(task=save_data, output="saved", inputs=["clean_data"])
    return registry


def test_registry_inspection(broker: InMemoryBroker) -> None:
    registry = etl_registry(broker)

    assert [t.task_name.split(":")[-1] for t in registry.get_tasks()] == [
        "load_data",
        "clean_data",
        "save_data",
    ]
    assert registry.get_outputs() == ["raw_data", "clean_data", "saved"]
    assert registry.get_external_inputs() == ["source_url"]
    producer = registry.get_producer("clean_data")
    assert producer is not None
    assert producer.name == "clean_data"
    assert registry.get_producer("source_url") is None
    assert [n.name for n in registry.get_consumers("raw_data")] == ["clean_data"]
    assert registry.get_consumers("saved") == []
    assert len(registry) == 3


def test_registry_build_dag_and_print(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    dag = etl_registry(broker).build_dag()
    dag.print()

    printed = capsys.readouterr().out
    assert isinstance(dag, DAG)
    assert dag.external_inputs == ["source_url"]
    assert "source_url" in printed
    lines = printed.splitlines()

    def line_of(step: str, output: str) -> int:
        return next(i for i, line in enumerate(lines) if step in line and output in line)

    # Each step is shown with what it produces, in execution order.
    assert line_of("load_data", "raw_data") < line_of("clean_data", "clean_data")
    assert line_of("clean_data", "clean_data") < line_of("save_data", "saved")
    assert "Level 2" in printed


async def test_registry_dag_runs_on_the_engine(broker: InMemoryBroker) -> None:
    dag = etl_registry(broker).build_dag()

    outputs = await ExecutionEngine(broker, dag).execute(inputs={"source_url": "a"})

    assert outputs == {"raw_data": [" a ", " b "], "clean_data": ["a", "b"], "saved": 2}


# -- §4.2 ----------------------------------------------------------------------------------


def diamond_dag(broker: InMemoryBroker) -> DAG:
    """a → (b ∥ c) → d, built through the registry."""
    registry = DataflowRegistry()

    @broker.task
    async def step(**kwargs: Any) -> int:
        return 1

    registry.register_task(step, output="x", inputs=[], name="node_a")
    registry.register_task(step, output="y", inputs=["x"], name="node_b")
    registry.register_task(step, output="z", inputs=["x"], name="node_c")
    registry.register_task(step, output="w", inputs=["y", "z"], name="node_d")
    return registry.build_dag()


def test_topological_sort(broker: InMemoryBroker) -> None:
    dag = diamond_dag(broker)

    ordered = dag.topological_sort()

    names = [node.name for node in ordered]
    assert set(names) == {"node_a", "node_b", "node_c", "node_d"}
    for node in ordered:
        assert all(names.index(dep) < names.index(node.name) for dep in node.dependencies)
    assert [(node.name, node.level) for node in ordered if node.name in ("node_a", "node_d")] == [
        ("node_a", 0),
        ("node_d", 2),
    ]


def test_compute_levels(broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]) -> None:
    dag = diamond_dag(broker)

    returned = dag.compute_levels()
    for i, level in enumerate(dag.levels):
        names = [n.task_name for n in level]
        print(f"Level {i} (parallel): {names}")

    assert returned == dag.levels
    assert [sorted(n.name for n in level) for level in dag.levels] == [
        ["node_a"],
        ["node_b", "node_c"],
        ["node_d"],
    ]
    assert all(isinstance(n, DAGNode) for level in dag.levels for n in level)
    assert capsys.readouterr().out.count("(parallel)") == 3


def test_get_ready_tasks(broker: InMemoryBroker) -> None:
    dag = diamond_dag(broker)
    node_a, node_b = dag.nodes["node_a"], dag.nodes["node_b"]

    assert [n.name for n in dag.get_ready_tasks(completed=set())] == ["node_a"]
    ready = dag.get_ready_tasks(completed={node_a})
    assert sorted(n.name for n in ready) == ["node_b", "node_c"]
    assert [n.name for n in dag.get_ready_tasks(completed={node_a, node_b})] == ["node_c"]
    # Names work as well as nodes.
    assert [n.name for n in dag.get_ready_tasks({"node_a", "node_b", "node_c"})] == ["node_d"]


# -- §7.1 ----------------------------------------------------------------------------------


def test_data_cache() -> None:
    cache = DataCache()

    # Store results
    cache.set("features", {"tempo": 120.0})
    cache.set("tags", ["electronic", "dance"])

    # Retrieve
    assert cache.get("features") == {"tempo": 120.0}
    assert cache.get("embedding") is None
    assert cache.get("embedding", []) == []

    # Check existence
    assert cache.has("features")
    assert not cache.has("embedding")
    cache.set("embedding", None)
    assert cache.has("embedding")  # a stored None still counts

    # Inject dependencies for tasks
    assert cache.inject(["features", "tags"]) == {
        "features": {"tempo": 120.0},
        "tags": ["electronic", "dance"],
    }
    assert cache.inject(["tags", "unknown"]) == {"tags": ["electronic", "dance"]}

    # Clear between runs
    cache.clear()
    assert not cache.has("features")
    assert cache.inject(["features", "tags"]) == {}


async def test_register_task_takes_the_pipeline_task_options(broker: InMemoryBroker) -> None:
    calls: list[int] = []

    @broker.task
    @pipeline_task(output="ignored", retry_backoff=3.0)
    async def flaky(seed: int) -> int:
        calls.append(seed)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return seed * 2

    registry = DataflowRegistry()
    node = registry.register_task(
        flaky,
        output="doubled",
        inputs=["seed"],
        retries=2,
        retry_delay=0.01,
        retry_jitter=False,
        max_retry_time=None,
        resources={"cpu": 1},
        timeout=5.0,
    )
    # Given options win; the one not given keeps the decorator's value.
    assert (node.retry.retries, node.retry.delay, node.retry.backoff) == (2, 0.01, 3.0)
    assert (node.retry.jitter, node.retry.max_retry_time) == (False, None)
    assert (node.resources, node.timeout) == ({"cpu": 1}, 5.0)

    engine = ExecutionEngine(broker, registry.build_dag())
    assert await engine.execute({"seed": 4}) == {"doubled": 8}
    assert engine.get_execution_report().steps["flaky"].attempts == 3


def test_register_task_refuses_invalid_retry_options(broker: InMemoryBroker) -> None:
    @broker.task
    async def step(x: int) -> int:
        return x

    with pytest.raises(TaskDefinitionError, match="backoff"):
        DataflowRegistry().register_task(step, output="y", retry_backoff=0.5)
