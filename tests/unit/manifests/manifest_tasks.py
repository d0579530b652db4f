"""Tasks the manifest tests name (``tests.unit.manifests.manifest_tasks:<function>``)."""

from __future__ import annotations

from taskiq_flow import PipelineContext, task

PREFIX = "tests.unit.manifests.manifest_tasks"


@task
def load(path: str) -> list[int]:
    return [len(path), 2, 3]


@task
def double(value: int) -> int:
    return value * 2


@task
def is_even(number: int) -> bool:
    return number % 2 == 0


@task
async def total(numbers: list[int], offset: int = 0) -> int:
    return sum(numbers) + offset


@task
def scale(amount: int, factor: int, context: PipelineContext | None = None) -> int:
    return amount * factor


@task
def no_params() -> int:
    return 1


@task(name="custom-name")
def renamed(value: int) -> int:
    return value + 1
