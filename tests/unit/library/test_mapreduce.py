"""Map-reduce: dataflow guide §5.3/§5.4, execution guide §1.3, §2.3, §8.3."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import (
    DataflowPipeline,
    MapReduce,
    MapReduceResult,
    MapResult,
    PipelineContext,
    PipelineError,
    ReduceResult,
    pipeline_task,
)
from taskiq_flow.execution_engine import ItemProgress
from tests.unit.library.probe import Probe


def square_task(broker: InMemoryBroker) -> Any:
    @broker.task
    async def process_item(item: int) -> int:
        return item * item

    return process_item


def sum_task(broker: InMemoryBroker, calls: list[int] | None = None) -> Any:
    seen = calls if calls is not None else []

    @broker.task
    async def aggregate_results(values: list[int]) -> int:
        seen.append(len(values))
        return sum(values)

    return aggregate_results


# -- MapReduce.map -------------------------------------------------------------------------


async def test_map(broker: InMemoryBroker) -> None:
    process_item = square_task(broker)

    mapped = await MapReduce.map(
        broker,
        process_item,
        items=list(range(100)),
        output="processed",
        max_parallel=10,
    )

    assert isinstance(mapped, MapResult)
    assert mapped.output == "processed"
    assert mapped.return_value == [i * i for i in range(100)]  # list of mapped results
    assert mapped.results == mapped.return_value
    assert mapped.errors == {}
    assert mapped.total == 100
    assert mapped.success_rate == 1.0


@pytest.mark.parametrize("max_parallel", [1, 4, 10])
async def test_map_max_parallel_bounds_concurrency(
    broker: InMemoryBroker, max_parallel: int
) -> None:
    probe = Probe(expect=max_parallel)

    @broker.task
    async def process_item(item: int) -> int:
        await probe.hold(str(item))
        return item

    run = asyncio.create_task(
        MapReduce.map(broker, process_item, items=list(range(25)), max_parallel=max_parallel)
    )
    started = await probe.release_when_reached()
    mapped = await run

    assert started == [str(i) for i in range(max_parallel)]
    assert probe.peak == max_parallel
    assert mapped.return_value == list(range(25))


async def test_map_without_limit_runs_every_item_at_once(broker: InMemoryBroker) -> None:
    probe = Probe(expect=20)

    @broker.task
    async def process_item(item: int) -> int:
        await probe.hold(str(item))
        return item

    run = asyncio.create_task(MapReduce.map(broker, process_item, list(range(20))))
    await probe.release_when_reached()

    assert (await run).return_value == list(range(20))
    assert probe.peak == 20


async def test_map_chunk_size_bounds_items_in_flight(broker: InMemoryBroker) -> None:
    probe = Probe(expect=5)

    @broker.task
    async def process_item(item: int) -> int:
        await probe.hold(str(item))
        return item

    run = asyncio.create_task(MapReduce.map(broker, process_item, list(range(12)), chunk_size=5))
    await probe.release_when_reached()

    assert (await run).return_value == list(range(12))
    assert probe.peak == 5


async def test_map_collects_errors_with_success_rate(broker: InMemoryBroker) -> None:
    @broker.task
    async def process_item(item: int) -> int:
        if item % 4 == 0:
            raise ValueError(f"bad item {item}")
        return item

    mapped = await MapReduce.map(broker, process_item, items=list(range(8)), max_parallel=3)

    assert mapped.return_value == [1, 2, 3, 5, 6, 7]
    assert mapped.errors == {0: "ValueError: bad item 0", 4: "ValueError: bad item 4"}
    assert mapped.total == 8
    assert mapped.success_rate == pytest.approx(0.75)


async def test_map_retries_failed_items(broker: InMemoryBroker) -> None:
    attempts: dict[int, int] = {}

    @broker.task
    async def process_item(item: int) -> int:
        attempts[item] = attempts.get(item, 0) + 1
        if item == 2 and attempts[item] == 1:
            raise ConnectionError("flaky")
        return item

    mapped = await MapReduce.map(broker, process_item, [1, 2, 3], retries=1, retry_delay=0.01)

    assert mapped.return_value == [1, 2, 3]
    assert mapped.errors == {}
    assert attempts == {1: 1, 2: 2, 3: 1}


async def test_map_progress_callback_per_item(broker: InMemoryBroker) -> None:
    progress: list[ItemProgress] = []

    @broker.task
    async def process_item(item: int) -> int:
        if item == 3:
            raise ValueError("three")
        return item

    mapped = await MapReduce.map(
        broker,
        process_item,
        list(range(10)),
        max_parallel=4,
        progress_callback=progress.append,
    )

    assert len(progress) == 10  # once per item
    assert [p.done for p in progress] == list(range(1, 11))
    assert all(p.total == 10 for p in progress)
    assert (progress[-1].succeeded, progress[-1].failed) == (9, 1)
    assert mapped.success_rate == pytest.approx(0.9)


async def test_map_passes_extra_keyword_arguments(broker: InMemoryBroker) -> None:
    @broker.task
    async def scale(item: int, factor: int) -> int:
        return item * factor

    mapped = await MapReduce.map(broker, scale, [1, 2, 3], factor=10)

    assert mapped.return_value == [10, 20, 30]


async def test_map_tasks_see_a_map_reduce_context(broker: InMemoryBroker) -> None:
    contexts: list[PipelineContext] = []

    @broker.task
    async def process_item(item: int, context: PipelineContext) -> int:
        contexts.append(context)
        return item

    await MapReduce.map(broker, process_item, [1, 2])

    assert [c.execution_mode for c in contexts] == ["map_reduce", "map_reduce"]
    assert len({c.task_id for c in contexts}) == 2


# -- MapReduce.reduce / map_reduce ---------------------------------------------------------


async def test_reduce_a_list_task(broker: InMemoryBroker) -> None:
    process_item = square_task(broker)
    aggregate_results = sum_task(broker)
    mapped = await MapReduce.map(broker, process_item, list(range(100)), "processed", 10)

    result = await MapReduce.reduce(
        broker,
        aggregate_results,
        mapped.results,
        output="final",
        initial=0,
    )

    assert isinstance(result, ReduceResult)
    assert result.output == "final"
    assert result.return_value == sum(i * i for i in range(100))  # final aggregated result


async def test_reduce_a_pairwise_task_folds_left(broker: InMemoryBroker) -> None:
    @broker.task
    async def append(acc: str, item: str) -> str:
        return acc + item

    with_initial = await MapReduce.reduce(broker, append, ["a", "b", "c"], initial=">")
    without_initial = await MapReduce.reduce(broker, append, ["a", "b", "c"])

    assert with_initial.return_value == ">abc"
    assert without_initial.return_value == "abc"


async def test_reduce_failure_raises(broker: InMemoryBroker) -> None:
    @broker.task
    async def aggregate_results(values: list[int]) -> int:
        raise ArithmeticError("cannot add")

    with pytest.raises(PipelineError, match="cannot add"):
        await MapReduce.reduce(broker, aggregate_results, [1, 2])


async def test_map_reduce_with_tree_reduction(broker: InMemoryBroker) -> None:
    reduce_calls: list[int] = []
    process_item = square_task(broker)
    aggregate_results = sum_task(broker, reduce_calls)

    final = await MapReduce.map_reduce(
        broker,
        map_task=process_item,
        reduce_task=aggregate_results,
        items=list(range(1000)),
        max_parallel=20,
        reduce_chunk_size=100,
    )

    assert isinstance(final, MapReduceResult)
    assert final.return_value == sum(i * i for i in range(1000))
    assert final.map_result.return_value == [i * i for i in range(1000)]
    assert final.success_rate == 1.0
    # Ten chunks of 100 reduced in parallel, then their ten partial sums.
    assert sorted(reduce_calls) == [10] + [100] * 10


async def test_map_reduce_without_chunks_reduces_once(broker: InMemoryBroker) -> None:
    reduce_calls: list[int] = []

    final = await MapReduce.map_reduce(
        broker, square_task(broker), sum_task(broker, reduce_calls), list(range(50))
    )

    assert final.return_value == sum(i * i for i in range(50))
    assert reduce_calls == [50]


# -- map_sweep -----------------------------------------------------------------------------


def train_task(broker: InMemoryBroker) -> Any:
    @broker.task
    async def train(lr: float, depth: int, dataset: str = "default") -> str:
        return f"{dataset}:{lr}:{depth}"

    return train


async def test_map_sweep(broker: InMemoryBroker) -> None:
    swept = await MapReduce.map_sweep(
        broker,
        train_task(broker),
        {"lr": [0.1, 0.01], "depth": [2, 4]},
        output="grid",
        max_parallel=2,
        dataset="mnist",
    )

    assert swept.output == "grid"
    assert swept.return_value == [
        {"params": {"lr": 0.1, "depth": 2}, "result": "mnist:0.1:2"},
        {"params": {"lr": 0.1, "depth": 4}, "result": "mnist:0.1:4"},
        {"params": {"lr": 0.01, "depth": 2}, "result": "mnist:0.01:2"},
        {"params": {"lr": 0.01, "depth": 4}, "result": "mnist:0.01:4"},
    ]
    assert swept.success_rate == 1.0


# -- DataflowPipeline.map / reduce (dataflow guide §5.4) -----------------------------------


def playlist_tasks(broker: InMemoryBroker) -> tuple[Any, Any, Any]:
    @broker.task
    @pipeline_task(output="features")
    async def extract_features(track_list: list[str]) -> dict[str, int]:
        return {"tracks": len(track_list)}

    @broker.task
    async def process_track(track: str) -> dict[str, Any]:
        return {"track": track, "length": len(track)}

    @broker.task
    async def aggregate_features(features: list[dict[str, Any]]) -> dict[str, int]:
        return {"count": len(features), "total_length": sum(f["length"] for f in features)}

    return extract_features, process_track, aggregate_features


async def test_pipeline_map_reduce_over_a_list(broker: InMemoryBroker) -> None:
    extract_features, process_track, aggregate_features = playlist_tasks(broker)
    tracks = track_list = ["a.mp3", "bb.mp3", "ccc.mp3"]

    pipeline = DataflowPipeline.from_tasks(broker, [extract_features])
    # Add map operation (process many items in parallel)
    pipeline.map(process_track, track_list, output="track_features", max_parallel=10)
    # Add reduce operation (aggregate results)
    pipeline.reduce(aggregate_features, input_name="track_features", output="playlist_stats")
    # Execute
    results = await pipeline.kiq_map_reduce(track_list=tracks)

    assert results == {
        "features": {"tracks": 3},
        "track_features": [
            {"track": "a.mp3", "length": 5},
            {"track": "bb.mp3", "length": 6},
            {"track": "ccc.mp3", "length": 7},
        ],
        "playlist_stats": {"count": 3, "total_length": 18},
    }
    assert pipeline.dag.nodes["reduce_playlist_stats"].dependencies == {"map_track_features"}


async def test_pipeline_map_over_a_named_input(broker: InMemoryBroker) -> None:
    _, process_track, aggregate_features = playlist_tasks(broker)
    pipeline = DataflowPipeline(broker)
    pipeline.map(process_track, "track_list", output="track_features")
    pipeline.reduce(aggregate_features, input_name="track_features", output="playlist_stats")

    assert pipeline.dag.external_inputs == ["track_list"]
    first = await pipeline.kiq_map_reduce(track_list=["x.mp3"])
    second = await pipeline.kiq_map_reduce(track_list=["x.mp3", "yy.mp3"])

    assert first["playlist_stats"] == {"count": 1, "total_length": 5}
    assert second["playlist_stats"] == {"count": 2, "total_length": 11}


async def test_kiq_map_reduce_output_aliases(broker: InMemoryBroker) -> None:
    """Execution guide §2.3: ``kiq_map_reduce(items=..., map_output=..., reduce_output=...)``."""
    pipeline = DataflowPipeline(broker)
    pipeline.map(square_task(broker), "items", output="squares")
    pipeline.reduce(sum_task(broker), input_name="squares", output="total")

    final = await pipeline.kiq_map_reduce(
        items=[1, 2, 3], map_output="processed", reduce_output="final"
    )

    assert final["processed"] == final["squares"] == [1, 4, 9]
    assert final["final"] == final["total"] == 14


async def test_pipeline_map_max_parallel_bounds_concurrency(broker: InMemoryBroker) -> None:
    probe = Probe(expect=3)

    @broker.task
    async def process_track(track: int) -> int:
        await probe.hold(str(track))
        return track

    pipeline = DataflowPipeline(broker).map(process_track, list(range(9)), "out", max_parallel=3)

    run = asyncio.create_task(pipeline.kiq_map_reduce())
    started = await probe.release_when_reached()

    assert (await run) == {"out": list(range(9))}
    assert started == ["0", "1", "2"]
    assert probe.peak == 3


async def test_pipeline_map_item_failure_fails_the_step(broker: InMemoryBroker) -> None:
    @broker.task
    async def process_track(track: int) -> int:
        if track == 2:
            raise ValueError("bad track")
        return track

    pipeline = DataflowPipeline(broker).map(process_track, [1, 2, 3], "out")

    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_map_reduce()

    assert caught.value.failed_node == "map_out"
    assert "1 of 3 items failed" in str(caught.value)
    assert "bad track" in str(caught.value)


async def test_kiq_map_reduce_advanced(broker: InMemoryBroker) -> None:
    progress: list[ItemProgress] = []
    reduce_calls: list[int] = []
    pipeline = DataflowPipeline(broker)

    result = await pipeline.kiq_map_reduce_advanced(
        square_task(broker),
        sum_task(broker, reduce_calls),
        list(range(40)),
        max_parallel=8,
        reduce_chunk_size=10,
        initial=1000,
        output="total",
        progress_callback=progress.append,
    )

    assert result.output == "total"
    assert result.return_value == 1000 + sum(i * i for i in range(40))
    assert len(progress) == 40
    # 41 values (the initial one first) in chunks of 10 → 5 partial sums → 1 final sum.
    assert sorted(reduce_calls) == [1, 5, 10, 10, 10, 10]


async def test_kiq_map_sweep(broker: InMemoryBroker) -> None:
    pipeline = DataflowPipeline(broker)

    swept = await pipeline.kiq_map_sweep(
        train_task(broker), {"depth": [1, 2], "lr": [0.5]}, output="sweep"
    )

    assert [entry["params"] for entry in swept.return_value] == [
        {"depth": 1, "lr": 0.5},
        {"depth": 2, "lr": 0.5},
    ]
    assert [entry["result"] for entry in swept.return_value] == [
        "default:0.5:1",
        "default:0.5:2",
    ]


async def test_kiq_map_reduce_advanced_without_an_initial_value(broker: InMemoryBroker) -> None:
    reduce_calls: list[int] = []
    pipeline = DataflowPipeline(broker)

    result = await pipeline.kiq_map_reduce_advanced(
        square_task(broker), sum_task(broker, reduce_calls), [1, 2, 3]
    )

    assert result.return_value == 1 + 4 + 9
    assert reduce_calls == [3]  # the three squares, nothing prepended
