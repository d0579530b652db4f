"""Tasks of the tracking tests (shared tasks: any broker finds them by name)."""

from __future__ import annotations

import taskiq_flow
from taskiq_flow import pipeline_task


@taskiq_flow.task
async def double(value: int) -> int:
    return value * 2


@taskiq_flow.task
async def add_one(value: int) -> int:
    return value + 1


@taskiq_flow.task
async def explode(value: int) -> int:
    raise ValueError(f"cannot handle {value}")


@taskiq_flow.task
def identity(value: object) -> object:
    return value


@pipeline_task(output="doubled")
@taskiq_flow.task
async def df_double(raw: int) -> int:
    return raw * 2


@pipeline_task(output="total")
@taskiq_flow.task
async def df_total(doubled: int, raw: int) -> int:
    return doubled + raw


@pipeline_task(output="broken")
@taskiq_flow.task
async def df_explode(doubled: int) -> int:
    raise RuntimeError("dataflow step failed")


@pipeline_task(output="slow")
@taskiq_flow.task
async def df_slow(raw: int) -> int:
    import asyncio

    await asyncio.sleep(30)  # cancelled by the test long before
    return raw
