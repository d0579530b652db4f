"""``DataflowPipeline``: a pipeline whose order comes from what its tasks produce and consume."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from taskiq import AsyncBroker

from taskiq_flow.dataflow.builder import map_node_for_task, node_for_task
from taskiq_flow.dataflow.dag import DAG, DAGNode
from taskiq_flow.errors import EmptyPipelineError, ErrorHandlingMode, TaskDefinitionError
from taskiq_flow.execution_engine import ExecutionEngine, ExecutionReport, ItemProgress
from taskiq_flow.hooks import resolve_observer
from taskiq_flow.mapreduce import NO_INITIAL, MapReduce, MapReduceResult, MapResult
from taskiq_flow.scheduling import PipelineScheduler, label_schedule, register_label_schedule
from taskiq_flow.visualization.ascii import render_ascii

__all__ = ["DataflowPipeline"]


class DataflowPipeline:
    """Tasks connected by data: each runs as soon as the data it consumes exists.

    The DAG is built lazily on first use and rebuilt when tasks are added. Every run
    gets a fresh ``pipeline_id``; the attribute holds the latest one.
    """

    def __init__(
        self,
        broker: AsyncBroker,
        *,
        max_parallel: int | None = None,
        error_mode: ErrorHandlingMode | str = ErrorHandlingMode.FAIL_FAST,
        timeout: float | None = None,
        task_timeout: float | None = None,
        resource_aware: bool = False,
        resource_profiles: Mapping[str, Mapping[str, Any]] | None = None,
        name: str | None = None,
    ) -> None:
        self.broker = broker
        self.max_parallel = max_parallel
        self.error_mode = ErrorHandlingMode.parse(error_mode)
        self.timeout = timeout
        self.task_timeout = task_timeout
        self.resource_aware = resource_aware
        self.resource_profiles = dict(resource_profiles or {})
        self.name = name
        self.pipeline_id = uuid.uuid4().hex
        self._nodes: list[DAGNode] = []
        self._dag: DAG | None = None
        self._engine: ExecutionEngine | None = None
        self._runs = 0
        self.tracking: Any = None
        self.hooks: Any = None
        self.scheduler: PipelineScheduler | None = None

    def with_tracking(self, tracking: Any) -> Self:
        """Record every run and step with a ``PipelineTrackingManager``."""
        self.tracking = tracking
        return self

    def with_hooks(self, hooks: Any) -> Self:
        """Send the runs' events to a ``HookManager``."""
        self.hooks = hooks
        return self

    # -- building ----------------------------------------------------------------------

    @classmethod
    def from_tasks(cls, broker: AsyncBroker, tasks: Sequence[Any], **options: Any) -> Self:
        """A pipeline of ``tasks``, each declared with ``@pipeline_task``."""
        pipeline = cls(broker, **options)
        for task in tasks:
            pipeline.add_dataflow_task(task)
        return pipeline

    def add_dataflow_task(
        self,
        task: Any,
        output: str | Sequence[str] | None = None,
        inputs: Sequence[str] | None = None,
        **meta: Any,
    ) -> Self:
        """Add ``task``; ``output``/``inputs`` override its ``@pipeline_task``."""
        self._add(node_for_task(task, output, inputs, **meta))
        return self

    def finally_(
        self,
        task: Any,
        output: str | Sequence[str] | None = None,
        inputs: Sequence[str] | None = None,
        **meta: Any,
    ) -> Self:
        """Add ``task`` as a ``finally`` step: it runs once every other step is over,
        whatever their outcome (also after a failure or the run timeout). It may consume
        ``run`` (``{"phase", "message", "failedSteps"}``) and any output (``None`` when
        it was not produced). A failed finally step fails the run."""
        self._add(node_for_task(task, output, inputs, final=True, **meta))
        return self

    def map(
        self,
        task: Any,
        items: Sequence[Any] | str,
        output: str,
        max_parallel: int | None = None,
        *,
        item_param: str | None = None,
        name: str | None = None,
        **args: Any,
    ) -> Self:
        """Add a step that calls ``task`` per item; its output is the list of results.

        ``items`` is a list, or the name of the data (an input or another step's output)
        holding the list. Each item goes to ``item_param`` (default: the first required
        parameter); other parameters are filled from data or ``args``.
        """
        over = items if isinstance(items, str) else None
        fixed = None if isinstance(items, str) else list(items)
        self._add(
            map_node_for_task(
                task,
                output=output,
                over=over,
                items=fixed,
                item_param=item_param,
                max_parallel=max_parallel,
                name=name or f"map_{output}",
                args=args,
            )
        )
        return self

    def reduce(
        self,
        task: Any,
        input_name: str,
        output: str,
        *,
        param: str | None = None,
        name: str | None = None,
        **args: Any,
    ) -> Self:
        """Add a step that passes the list ``input_name`` to ``task`` and outputs its result.

        The list goes to ``param`` (default: the task's first required parameter).
        """
        base = node_for_task(task, output, name=name or f"reduce_{output}", args=args)
        if param is None:
            if not base.inputs:
                raise TaskDefinitionError(
                    f"reduce task {base.task_name!r} has no parameter to receive the list"
                )
            param = base.inputs[0]
        base.inputs = (input_name, *(i for i in base.inputs if i != param))
        base.bindings = {param: input_name}
        base.kind = "reduce"
        self._add(base)
        return self

    def _add(self, node: DAGNode) -> None:
        self._nodes.append(node)
        self._dag = None
        self._engine = None

    @property
    def nodes(self) -> list[DAGNode]:
        """The steps added so far."""
        return list(self._nodes)

    def build_dag(self) -> DAG:
        """The validated graph (built once, until a task is added)."""
        if self._dag is None:
            if not self._nodes:
                raise EmptyPipelineError()
            self._dag = DAG(self._nodes)
        return self._dag

    @property
    def dag(self) -> DAG:
        """The validated graph."""
        return self.build_dag()

    # -- running -----------------------------------------------------------------------

    def _engine_for_run(self) -> ExecutionEngine:
        if self._engine is None:
            self._engine = ExecutionEngine(
                self.broker,
                self.build_dag(),
                max_parallel=self.max_parallel,
                error_mode=self.error_mode,
                resource_aware=self.resource_aware,
                resource_profiles=self.resource_profiles,
                timeout=self.timeout,
                task_timeout=self.task_timeout,
            )
        self._engine.observer = resolve_observer(self.tracking, self.hooks)
        return self._engine

    def _bind_inputs(self, args: tuple[Any, ...], inputs: dict[str, Any]) -> dict[str, Any]:
        if not args:
            return inputs
        if len(args) > 1:
            raise TypeError("pass pipeline inputs by name: kiq_dataflow(name=value, ...)")
        (value,) = args
        if isinstance(value, Mapping):
            return {**value, **inputs}
        external = [e for e in self.build_dag().external_inputs if e not in inputs]
        if len(external) != 1:
            raise TypeError(
                "a positional input needs exactly one external input to bind to; this "
                f"pipeline has {external or 'none'}: pass inputs by name"
            )
        return {external[0]: value, **inputs}

    async def kiq_dataflow(self, *args: Any, **inputs: Any) -> dict[str, Any]:
        """Run the pipeline; returns ``{output name: value}``.

        Inputs go by name; a single positional value binds to the only external input,
        and a single positional dict is taken as the inputs.
        """
        given = self._bind_inputs(args, inputs)
        engine = self._engine_for_run()
        run_id = self.pipeline_id if self._runs == 0 else uuid.uuid4().hex
        self._runs += 1
        self.pipeline_id = run_id
        return await engine.execute(given, run_id)

    async def kiq_map_reduce(
        self,
        *args: Any,
        map_output: str | None = None,
        reduce_output: str | None = None,
        **inputs: Any,
    ) -> dict[str, Any]:
        """Run a pipeline built with ``map``/``reduce``; returns its outputs.

        ``map_output``/``reduce_output`` add aliases in the result for the (single) map
        and reduce steps' outputs. A positional list or ``items=`` binds to the map
        step's source when that is the only external input.
        """
        outputs = await self.kiq_dataflow(*args, **inputs)
        for kind, alias in (("map", map_output), ("reduce", reduce_output)):
            if alias is None:
                continue
            produced = [n.output for n in self._nodes if n.kind == kind]
            if len(produced) != 1:
                raise TypeError(
                    f"{kind}_output needs exactly one {kind} step, found {len(produced)}"
                )
            outputs[alias] = outputs.get(produced[0])
        return outputs

    async def kiq_map_reduce_advanced(
        self,
        map_task: Any,
        reduce_task: Any,
        items: Sequence[Any],
        *,
        max_parallel: int | None = None,
        reduce_chunk_size: int | None = None,
        initial: Any = NO_INITIAL,
        output: str = "result",
        progress_callback: Callable[[ItemProgress], Any] | None = None,
        **map_kwargs: Any,
    ) -> MapReduceResult:
        """``MapReduce.map_reduce`` on this pipeline's broker, with every option."""
        return await MapReduce.map_reduce(
            self.broker,
            map_task,
            reduce_task,
            items,
            max_parallel if max_parallel is not None else self.max_parallel,
            reduce_chunk_size,
            output=output,
            initial=initial,
            progress_callback=progress_callback,
            **map_kwargs,
        )

    async def kiq_map_sweep(
        self,
        task: Any,
        param_values: Mapping[str, Sequence[Any]],
        output: str = "sweep",
        max_parallel: int | None = None,
        **fixed_kwargs: Any,
    ) -> MapResult:
        """``MapReduce.map_sweep`` on this pipeline's broker."""
        return await MapReduce.map_sweep(
            self.broker,
            task,
            param_values,
            output,
            max_parallel if max_parallel is not None else self.max_parallel,
            **fixed_kwargs,
        )

    # -- scheduling --------------------------------------------------------------------

    def schedule_with_cron(
        self, cron: str, scheduler: PipelineScheduler | None = None, **inputs: Any
    ) -> str:
        """Run the pipeline with ``inputs`` on ``cron``; returns the schedule's id.

        Uses ``scheduler``, or a ``PipelineScheduler`` on this pipeline's broker kept as
        ``self.scheduler`` (run it with ``await pipeline.scheduler.start()``).
        """
        return self._scheduler(scheduler).schedule(self, cron=cron, kwargs=inputs)

    def schedule_with_labels(
        self,
        cron: str | None = None,
        interval_seconds: int | None = None,
        **inputs: Any,
    ) -> str:
        """Declare the schedule as taskiq ``schedule`` labels on a task that starts this
        pipeline, for taskiq's ``LabelScheduleSource`` (``taskiq scheduler``); returns
        the task's name."""
        entry = label_schedule(cron=cron, interval_seconds=interval_seconds, kwargs=inputs)
        key = self.name or self.pipeline_id
        return register_label_schedule(self.broker, self, key, [entry])

    def _scheduler(self, scheduler: PipelineScheduler | None) -> PipelineScheduler:
        if scheduler is not None:
            return scheduler
        if self.scheduler is None:
            self.scheduler = PipelineScheduler(self.broker)
        return self.scheduler

    def get_execution_report(self) -> ExecutionReport:
        """The report of the latest run."""
        if self._engine is None:
            raise RuntimeError("the pipeline has not run yet")
        return self._engine.get_execution_report()

    # -- drawing -----------------------------------------------------------------------

    def visualize(self) -> dict[str, Any]:
        """The DAG as ``{"nodes": [...], "edges": [...], "levels": [...]}``."""
        return self.build_dag().to_dict()

    def visualize_dot(self) -> str:
        """The DAG in Graphviz DOT."""
        return self.build_dag().to_dot(self.name or "pipeline")

    def print_dag(self) -> None:
        """Print the DAG as text: levels, what each step reads and feeds."""
        print(render_ascii(self.build_dag()))
