"""``MapReduce``: run a task over many items in parallel, then fold the results.

A map is an ``ExecutionEngine`` run of one map step: the scheduling core bounds the
items in flight, retries them, and learns of each completion as it happens.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskiq import AsyncBroker

from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.dataflow.builder import map_node_for_task
from taskiq_flow.dataflow.dag import DAG
from taskiq_flow.errors import ErrorHandlingMode, PipelineError, TaskDefinitionError
from taskiq_flow.execution_engine import SPREAD_ITEM, ExecutionEngine, ItemProgress

__all__ = ["NO_INITIAL", "MapReduce", "MapReduceResult", "MapResult", "ReduceResult"]

NO_INITIAL: Any = object()
"""``initial`` when none is given (``None`` is a valid initial value)."""


@dataclass(slots=True)
class MapResult:
    """Results of a map: the successful results in item order, and the failures."""

    output: str
    results: list[Any]
    errors: dict[int, str] = field(default_factory=dict)
    total: int = 0

    @property
    def return_value(self) -> list[Any]:
        """The successful results, in item order."""
        return self.results

    @property
    def success_rate(self) -> float:
        """Share of items that succeeded (1.0 for no items)."""
        return 1.0 if self.total == 0 else (self.total - len(self.errors)) / self.total


@dataclass(slots=True)
class ReduceResult:
    """The folded value."""

    output: str
    return_value: Any


@dataclass(slots=True)
class MapReduceResult:
    """The reduced value, with the map that fed it."""

    output: str
    return_value: Any
    map_result: MapResult

    @property
    def success_rate(self) -> float:
        """The map's success rate."""
        return self.map_result.success_rate


def _is_pairwise(task: Any) -> bool:
    """Whether a reduce task folds two values ``(acc, item)`` rather than a list."""
    func = getattr(task, "original_func", task)
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.default is p.empty
        and p.name not in ("self", "cls")
    ]
    return len(params) >= 2


class MapReduce:
    """Parallel map, reduce, map-reduce and parameter sweeps over a taskiq broker."""

    @staticmethod
    async def map(
        broker: AsyncBroker,
        task: Any,
        items: Sequence[Any],
        output: str = "results",
        max_parallel: int | None = None,
        *,
        chunk_size: int | None = None,
        progress_callback: Callable[[ItemProgress], Any] | None = None,
        item_param: str | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        **task_kwargs: Any,
    ) -> MapResult:
        """Call ``task`` once per item, at most ``max_parallel`` at a time.

        Failures do not stop the map: they are collected in ``errors`` by item index.
        ``chunk_size`` sends at most that many items at once before reading results
        (default: ``max_parallel``), ``task_kwargs`` go to every call.
        """
        items = list(items)
        window = max_parallel if max_parallel is not None else chunk_size
        node = map_node_for_task(
            task,
            output=output,
            items=items,
            item_param=item_param,
            max_parallel=window,
            args=task_kwargs,
            retry=RetryPolicy(retries=retries, delay=retry_delay, jitter=False),
            timeout=timeout,
        )
        engine = ExecutionEngine(
            broker,
            DAG([node]),
            error_mode=ErrorHandlingMode.SKIP_FAILED,
            execution_mode="map_reduce",
            progress_callback=progress_callback,
        )
        outputs = await engine.execute({})
        report = engine.get_execution_report().steps[node.name]
        return MapResult(output, outputs.get(output, []), dict(report.item_errors), len(items))

    @staticmethod
    async def reduce(
        broker: AsyncBroker,
        task: Any,
        inputs: Sequence[Any],
        output: str = "result",
        initial: Any = NO_INITIAL,
        *,
        chunk_size: int | None = None,
        max_parallel: int | None = None,
    ) -> ReduceResult:
        """Fold ``inputs`` with ``task``.

        A task of two parameters ``(acc, item)`` is applied left to right, starting from
        ``initial`` (or the first input). A task of one parameter receives a list and
        returns one value; with ``chunk_size`` the list is reduced as a tree — chunks in
        parallel, then their results — so the task must be associative. ``initial`` is
        prepended to the list.
        """
        values = list(inputs)
        if _is_pairwise(task):
            acc = values.pop(0) if initial is NO_INITIAL and values else initial
            if acc is NO_INITIAL:
                raise ValueError("reduce of an empty sequence with no initial value")
            for value in values:
                acc = await MapReduce._call(broker, task, (acc, value))
            return ReduceResult(output, acc)
        if initial is not NO_INITIAL:
            values.insert(0, initial)
        while chunk_size is not None and chunk_size > 1 and len(values) > chunk_size:
            chunks = [values[i : i + chunk_size] for i in range(0, len(values), chunk_size)]
            partial = await MapReduce.map(broker, task, chunks, output, max_parallel)
            if partial.errors:
                index, error = next(iter(sorted(partial.errors.items())))
                raise PipelineError(
                    f"reduce failed on chunk {index}: {error}",
                    failed_node=output,
                    errors={output: error},
                )
            values = partial.results
        return ReduceResult(output, await MapReduce._call(broker, task, (values,)))

    @staticmethod
    async def _call(broker: AsyncBroker, task: Any, args: tuple[Any, ...]) -> Any:
        """One call of ``task`` through the broker; raises ``PipelineError`` on failure."""
        func = getattr(task, "original_func", task)
        names = [
            p.name
            for p in inspect.signature(func).parameters.values()
            if p.name not in ("self", "cls")
        ][: len(args)]
        if len(names) < len(args):
            raise TaskDefinitionError(f"task {task!r} takes fewer than {len(args)} parameters")
        result = await MapReduce.map(
            broker, task, [dict(zip(names, args, strict=True))], "value", 1, item_param=SPREAD_ITEM
        )
        if result.errors:
            error = result.errors[0]
            raise PipelineError(f"reduce task failed: {error}", errors={"reduce": error})
        return result.results[0]

    @staticmethod
    async def map_reduce(
        broker: AsyncBroker,
        map_task: Any,
        reduce_task: Any,
        items: Sequence[Any],
        max_parallel: int | None = None,
        reduce_chunk_size: int | None = None,
        *,
        output: str = "result",
        initial: Any = NO_INITIAL,
        progress_callback: Callable[[ItemProgress], Any] | None = None,
        **map_kwargs: Any,
    ) -> MapReduceResult:
        """``map`` then ``reduce`` over the successful results."""
        mapped = await MapReduce.map(
            broker,
            map_task,
            items,
            "mapped",
            max_parallel,
            progress_callback=progress_callback,
            **map_kwargs,
        )
        reduced = await MapReduce.reduce(
            broker,
            reduce_task,
            mapped.results,
            output,
            initial,
            chunk_size=reduce_chunk_size,
            max_parallel=max_parallel,
        )
        return MapReduceResult(output, reduced.return_value, mapped)

    @staticmethod
    async def map_sweep(
        broker: AsyncBroker,
        task: Any,
        param_values: Mapping[str, Sequence[Any]],
        output: str = "sweep",
        max_parallel: int | None = None,
        **fixed_kwargs: Any,
    ) -> MapResult:
        """Call ``task`` for every combination of ``param_values`` (a grid search).

        Each result is ``{"params": {...}, "result": value}``, in the order of
        ``itertools.product`` over the parameters as given.
        """
        names = list(param_values)
        combos = [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(param_values[n] for n in names))
        ]
        mapped = await MapReduce.map(
            broker,
            task,
            [{**fixed_kwargs, **c} for c in combos],
            output,
            max_parallel,
            item_param=SPREAD_ITEM,
        )
        failed = set(mapped.errors)
        ok = [c for i, c in enumerate(combos) if i not in failed]
        mapped.results = [
            {"params": params, "result": value}
            for params, value in zip(ok, mapped.results, strict=True)
        ]
        return mapped
