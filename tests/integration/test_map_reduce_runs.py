"""Map steps and map-reduce fan many items out and gather them back in order."""

from __future__ import annotations

import pytest
from taskiq import AsyncBroker

from taskiq_flow import DataflowPipeline, MapReduce
from tests.integration import flow_tasks as ft

pytestmark = pytest.mark.timeout(30)


async def test_a_map_step_over_fifty_items_keeps_their_order(flow_broker: AsyncBroker) -> None:
    pipeline = (
        DataflowPipeline(flow_broker)
        .add_dataflow_task(ft.numbers)
        .map(ft.square, "numbers", output="squared", max_parallel=16)
        .reduce(ft.add_all, "squared", output="sum_of_squares")
    )

    outputs = await pipeline.kiq_dataflow(count=50)

    assert outputs["squared"] == [n * n for n in range(1, 51)]
    assert outputs["sum_of_squares"] == sum(n * n for n in range(1, 51))
    assert pipeline.get_execution_report().steps["map_squared"].items == {
        "total": 50,
        "succeeded": 50,
        "failed": 0,
    }


async def test_map_reduce_folds_every_mapped_item(flow_broker: AsyncBroker) -> None:
    result = await MapReduce.map_reduce(
        flow_broker, ft.square, ft.add_all, range(30), max_parallel=8, reduce_chunk_size=4
    )

    assert result.map_result.results == [n * n for n in range(30)]
    assert result.return_value == sum(n * n for n in range(30))
    assert result.success_rate == 1.0
