"""Running DAGs: dataflow guide §5, §8, §9, §11 and execution guide §6, §7, §8.2, §11, §12."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from taskiq import InMemoryBroker

from taskiq_flow import (
    DataflowPipeline,
    DataflowRegistry,
    ErrorHandlingMode,
    ExecutionEngine,
    ExecutionReport,
    PipelineContext,
    PipelineError,
    PipelineTimeoutError,
    ResourceAwareExecutor,
    StepTimeoutError,
    UnknownTaskError,
    pipeline_task,
)
from taskiq_flow.optimization.parallel import get_max_parallel_tasks, set_max_parallel_tasks
from tests.unit.library.probe import Probe

# -- dataflow guide §11 ------------------------------------------------------------------


def audio_tasks(broker: InMemoryBroker) -> list[Any]:
    @broker.task
    @pipeline_task(output="audio_features")
    async def extract_audio(paths: list[str]) -> dict[str, float]:
        return {"duration": 180.0, "tempo": 120.0}

    @broker.task
    @pipeline_task(output="mir_features")
    async def compute_mir(audio_features: dict[str, float]) -> dict[str, Any]:
        return {"key": "C major", "loudness": -12.5}

    @broker.task
    @pipeline_task(output="tags")
    async def generate_tags(mir_features: dict[str, Any]) -> list[str]:
        return ["electronic", "dance"]

    @broker.task
    @pipeline_task(output="embedding")
    async def create_embedding(mir_features: dict[str, Any], tags: list[str]) -> list[float]:
        return [0.1, 0.2, 0.3, 0.4, 0.5]

    return [extract_audio, compute_mir, generate_tags, create_embedding]


AUDIO_RESULTS = {
    "audio_features": {"duration": 180.0, "tempo": 120.0},
    "mir_features": {"key": "C major", "loudness": -12.5},
    "tags": ["electronic", "dance"],
    "embedding": [0.1, 0.2, 0.3, 0.4, 0.5],
}


async def test_audio_processing_pipeline(
    broker: InMemoryBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline = DataflowPipeline.from_tasks(broker, audio_tasks(broker))

    # Inspect before execution
    pipeline.print_dag()
    printed = capsys.readouterr().out
    # Execute
    results = await pipeline.kiq_dataflow(paths=["track1.mp3", "track2.mp3"])

    assert results == AUDIO_RESULTS
    for name in ("paths", "extract_audio", "compute_mir", "generate_tags", "create_embedding"):
        assert name in printed
    assert "level 3" in printed.lower()  # four levels: the chain is four steps deep
    assert "level 4" not in printed.lower()


async def test_dataflow_results_shape_with_a_positional_input(broker: InMemoryBroker) -> None:
    """Execution guide §8.2: ``kiq_dataflow(input_data)`` returns output name → value."""
    pipeline = DataflowPipeline.from_tasks(broker, audio_tasks(broker))

    result = await pipeline.kiq_dataflow(["a.mp3", "b.mp3"])

    assert result == AUDIO_RESULTS
    assert list(result) == ["audio_features", "mir_features", "tags", "embedding"]


# -- execution guide §7 / dataflow guide §5.2 ----------------------------------------------


def etl_dag(broker: InMemoryBroker, calls: list[str] | None = None) -> Any:
    seen = calls if calls is not None else []

    @broker.task
    async def load(source_file: str = "default.csv") -> list[str]:
        seen.append("load")
        return [f"{source_file}:1", f"{source_file}:2", ""]

    @broker.task
    async def process(raw: list[str]) -> list[str]:
        seen.append("process")
        return [row for row in raw if row]

    @broker.task
    async def save(clean: list[str]) -> int:
        seen.append("save")
        return len(clean)

    # Build registry manually
    registry = DataflowRegistry()
    registry.register_task(load, output="raw", inputs=[])
    registry.register_task(process, output="clean", inputs=["raw"])
    registry.register_task(save, output="saved", inputs=["clean"])
    # Build DAG
    return registry.build_dag()


async def test_execution_engine_direct_use(broker: InMemoryBroker) -> None:
    dag = etl_dag(broker)

    # Create execution engine
    engine = ExecutionEngine(broker, dag)
    # Execute with custom inputs
    results = await engine.execute(inputs={"source_file": "data.csv"})

    assert results == {
        "raw": ["data.csv:1", "data.csv:2", ""],
        "clean": ["data.csv:1", "data.csv:2"],
        "saved": 2,
    }


async def test_execution_engine_with_options(broker: InMemoryBroker) -> None:
    dag = etl_dag(broker)

    engine = ExecutionEngine(
        broker=broker,
        dag=dag,
        max_parallel=10,
        error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR,
        resource_aware=True,
    )
    outputs = await engine.execute(inputs={"source_file": "data.csv"}, pipeline_id="my_pipeline")

    assert outputs["saved"] == 2
    assert engine.get_execution_report().pipeline_id == "my_pipeline"


async def test_execution_report(broker: InMemoryBroker) -> None:
    engine = ExecutionEngine(broker, etl_dag(broker))
    with pytest.raises(RuntimeError, match="not run yet"):
        engine.get_execution_report()

    await engine.execute(inputs={"source_file": "data.csv"}, pipeline_id="run-1")
    report = engine.get_execution_report()

    assert isinstance(report, ExecutionReport)
    assert report.pipeline_id == "run-1"
    assert report.status == "Succeeded"
    assert report.success_rate == 1.0
    assert report.errors == {}
    assert list(report.steps) == ["load", "process", "save"]
    for step in report.steps.values():
        assert step.status == "Succeeded"
        assert step.attempts == 1
        assert step.error is None
        assert step.duration is not None
        assert step.duration >= 0
    assert report.duration is not None
    assert report.duration >= 0
    as_dict = report.to_dict()
    assert as_dict["status"] == "Succeeded"
    assert as_dict["steps"]["save"]["status"] == "Succeeded"


async def test_pipeline_report_follows_the_latest_run(broker: InMemoryBroker) -> None:
    pipeline = DataflowPipeline.from_tasks(broker, audio_tasks(broker))
    with pytest.raises(RuntimeError):
        pipeline.get_execution_report()

    await pipeline.kiq_dataflow(paths=[])
    first_id = pipeline.pipeline_id
    await pipeline.kiq_dataflow(paths=[])

    report = pipeline.get_execution_report()
    assert report.pipeline_id == pipeline.pipeline_id != first_id
    assert set(report.steps) == {
        "extract_audio",
        "compute_mir",
        "generate_tags",
        "create_embedding",
    }


# -- concurrency -------------------------------------------------------------------------


def independent_steps(broker: InMemoryBroker, probe: Probe, count: int) -> Any:
    @broker.task
    async def work(index: int) -> int:
        await probe.hold(f"w{index}")
        return index * 10

    registry = DataflowRegistry()
    for index in range(count):
        registry.register_task(
            work, output=f"out{index}", inputs=[], name=f"w{index}", args={"index": index}
        )
    return registry.build_dag()


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_max_parallel_bounds_concurrency(broker: InMemoryBroker, limit: int) -> None:
    probe = Probe(expect=limit)
    engine = ExecutionEngine(broker, independent_steps(broker, probe, 6), max_parallel=limit)

    run = asyncio.create_task(engine.execute())
    started = await probe.release_when_reached()
    results = await run

    assert started == [f"w{i}" for i in range(limit)]
    assert probe.peak == limit
    assert results == {f"out{i}": i * 10 for i in range(6)}


async def test_independent_steps_run_together_without_a_limit(broker: InMemoryBroker) -> None:
    probe = Probe(expect=6)
    engine = ExecutionEngine(broker, independent_steps(broker, probe, 6), max_parallel=None)

    run = asyncio.create_task(engine.execute())
    await probe.release_when_reached()
    await run

    assert probe.peak == 6


async def test_set_max_parallel_tasks_caps_every_run(broker: InMemoryBroker) -> None:
    probe = Probe(expect=2)
    engine = ExecutionEngine(broker, independent_steps(broker, probe, 5), max_parallel=None)

    set_max_parallel_tasks(2)  # never more than 2 tasks simultaneously
    try:
        assert get_max_parallel_tasks() == 2
        run = asyncio.create_task(engine.execute())
        started = await probe.release_when_reached()
        results = await run
    finally:
        set_max_parallel_tasks(None)

    assert started == ["w0", "w1"]
    assert probe.peak == 2
    assert results == {f"out{i}": i * 10 for i in range(5)}
    assert get_max_parallel_tasks() is None


def test_set_max_parallel_tasks_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        set_max_parallel_tasks(0)
    assert get_max_parallel_tasks() is None


def test_resource_aware_executor_admits_by_profile() -> None:
    executor = ResourceAwareExecutor(
        max_cpu_percent=100.0,  # the machine is never "overloaded" at 100 %
        max_memory_percent=100.0,
        min_parallel=1,
        max_parallel=3,
    )
    cores = executor.cpu_budget
    executor.resource_profiles = {
        "heavy_task": {"estimated_memory_mb": 1, "estimated_cpu_cores": cores * 0.6},
        "heavy_task_2": {"estimated_memory_mb": 1, "estimated_cpu_cores": cores * 0.6},
        "light_task": {"estimated_memory_mb": 1, "estimated_cpu_cores": cores * 0.1},
        "huge_memory": {"estimated_memory_mb": executor.memory_budget_mb * 2},
    }

    assert executor.admit("heavy_task", [])  # min_parallel: the first always starts
    assert executor.admit("light_task", ["heavy_task"])
    assert not executor.admit("heavy_task_2", ["heavy_task"])  # too much CPU together
    assert not executor.admit("huge_memory", ["light_task"])  # too much memory
    assert executor.admit("unknown", ["heavy_task", "light_task"])  # no profile: free
    assert not executor.admit("unknown", ["light_task", "light_task", "light_task"])


async def test_engine_admits_steps_by_resource_profile(broker: InMemoryBroker) -> None:
    probe = Probe(expect=2)
    heavy_running: list[int] = []
    heavy_peak: list[int] = []

    @broker.task
    async def heavy_work(index: int) -> str:
        heavy_running.append(index)
        heavy_peak.append(len(heavy_running))
        try:
            await probe.hold(f"heavy{index}")
        finally:
            heavy_running.remove(index)
        return "heavy"

    @broker.task
    async def light_work() -> str:
        await probe.hold("light")
        return "light"

    registry = DataflowRegistry()
    registry.register_task(heavy_work, output="a", inputs=[], name="heavy_a", args={"index": 1})
    registry.register_task(light_work, output="b", inputs=[], name="light_b")
    registry.register_task(heavy_work, output="c", inputs=[], name="heavy_c", args={"index": 2})
    executor = ResourceAwareExecutor(max_cpu_percent=100.0, max_memory_percent=100.0)
    budget = executor.cpu_budget
    heavy_profile = {"estimated_memory_mb": 10, "estimated_cpu_cores": budget * 0.6}
    engine = ExecutionEngine(
        broker,
        registry.build_dag(),
        resource_profiles={
            "heavy_a": heavy_profile,
            "light_b": {"estimated_memory_mb": 10, "estimated_cpu_cores": budget * 0.1},
            "heavy_c": heavy_profile,
        },
        executor=executor,
    )

    run = asyncio.create_task(engine.execute())
    # heavy_a and light_b fit together; heavy_c must wait for heavy_a.
    started = await probe.release_when_reached()
    results = await run

    assert started == ["heavy1", "light"]
    assert probe.peak == 2
    assert max(heavy_peak) == 1
    assert probe.started == ["heavy1", "light", "heavy2"]
    assert results == {"a": "heavy", "b": "light", "c": "heavy"}


async def test_engine_resource_aware_takes_the_profiles(broker: InMemoryBroker) -> None:
    dag = etl_dag(broker)
    profiles = {
        "load": {"estimated_memory_mb": 500, "estimated_cpu_cores": 2.0},
        "save": {"estimated_memory_mb": 50, "estimated_cpu_cores": 0.5},
    }

    engine = ExecutionEngine(broker, dag, resource_aware=True, resource_profiles=profiles)

    assert engine.executor is not None
    assert engine.executor.profile("load") == profiles["load"]
    assert engine.executor.profile("save") == profiles["save"]
    assert await engine.execute(inputs={"source_file": "f"}) == {
        "raw": ["f:1", "f:2", ""],
        "clean": ["f:1", "f:2"],
        "saved": 2,
    }


# -- error modes -------------------------------------------------------------------------


def branching_tasks(broker: InMemoryBroker, calls: list[str]) -> list[Any]:
    """source → bad → after_bad, and source → good → after_good."""

    @broker.task
    @pipeline_task(output="source")
    async def make_source() -> int:
        calls.append("make_source")
        return 1

    @broker.task
    @pipeline_task(output="bad")
    async def explode(source: int) -> int:
        calls.append("explode")
        raise ValueError("boom")

    @broker.task
    @pipeline_task(output="after_bad")
    async def use_bad(bad: int | None) -> str:
        calls.append("use_bad")
        return f"got {bad}"

    @broker.task
    @pipeline_task(output="good")
    async def fine(source: int) -> int:
        calls.append("fine")
        return source + 1

    @broker.task
    @pipeline_task(output="after_good")
    async def use_good(good: int) -> int:
        calls.append("use_good")
        return good * 10

    return [make_source, explode, use_bad, fine, use_good]


async def test_fail_fast_raises_with_partial_results(broker: InMemoryBroker) -> None:
    calls: list[str] = []

    @broker.task
    @pipeline_task(output="raw")
    async def load() -> list[int]:
        calls.append("load")
        return [1, 2]

    @broker.task
    @pipeline_task(output="clean")
    async def explode(raw: list[int]) -> list[int]:
        calls.append("explode")
        raise ValueError("boom")

    @broker.task
    @pipeline_task(output="saved")
    async def save(clean: list[int]) -> int:
        calls.append("save")
        return len(clean)

    pipeline = DataflowPipeline.from_tasks(broker, [load, explode, save])
    assert pipeline.error_mode is ErrorHandlingMode.FAIL_FAST  # the default

    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_dataflow()

    error = caught.value
    assert error.failed_node == "explode"
    assert error.failed_step == "explode"
    assert error.partial_results == {"raw": [1, 2]}
    assert error.errors == {"explode": "ValueError: boom"}
    assert "boom" in str(error)
    assert calls == ["load", "explode"]  # save never ran
    report = pipeline.get_execution_report()
    assert report.status == "Failed"
    assert report.steps["save"].status == "Cancelled"
    assert report.steps["save"].attempts == 0


async def test_fail_fast_on_the_engine(broker: InMemoryBroker) -> None:
    calls: list[str] = []
    registry = DataflowRegistry()
    for task in branching_tasks(broker, calls):
        registry.register_task(task)
    engine = ExecutionEngine(broker, registry.build_dag(), error_mode=ErrorHandlingMode.FAIL_FAST)

    with pytest.raises(PipelineError) as caught:
        await engine.execute()

    assert caught.value.failed_node == "explode"
    assert "use_bad" not in calls
    assert engine.get_execution_report().errors == {"explode": "ValueError: boom"}


async def test_continue_on_error_finishes_independent_branches(broker: InMemoryBroker) -> None:
    calls: list[str] = []
    pipeline = DataflowPipeline.from_tasks(
        broker,
        branching_tasks(broker, calls),
        error_mode=ErrorHandlingMode.CONTINUE_ON_ERROR,
        max_parallel=1,  # explode runs, and fails, before the good branch
    )

    results = await pipeline.kiq_dataflow()

    assert results == {"source": 1, "good": 2, "after_good": 20}
    assert "use_bad" not in calls
    assert {"fine", "use_good"} <= set(calls)
    report = pipeline.get_execution_report()
    assert report.errors == {"explode": "ValueError: boom"}
    assert report.steps["explode"].status == "Failed"
    assert report.steps["use_bad"].status == "Skipped"
    assert report.steps["use_good"].status == "Succeeded"
    assert report.status == "Failed"
    assert report.success_rate == pytest.approx(3 / 5)


async def test_a_step_added_to_continue_on_failure_does_not_fail_the_run(
    broker: InMemoryBroker,
) -> None:
    calls: list[str] = []
    source, explode, use_bad, fine, use_good = branching_tasks(broker, calls)
    pipeline = (
        DataflowPipeline(broker, max_parallel=1)  # explode runs, and fails, first
        .add_dataflow_task(source)
        .add_dataflow_task(explode, continue_on_failure=True)
        .add_dataflow_task(use_bad)
        .add_dataflow_task(fine)
        .add_dataflow_task(use_good)
    )

    # FailFast (the default) would raise here: the step's own override keeps the run on.
    results = await pipeline.kiq_dataflow()

    assert results == {"source": 1, "good": 2, "after_good": 20}
    assert "use_bad" not in calls
    report = pipeline.get_execution_report()
    assert report.steps["explode"].status == "Failed"
    assert report.steps["use_bad"].status == "Skipped"
    assert report.status == "Succeeded"


async def test_skip_failed_runs_dependents_with_none_or_their_default(
    broker: InMemoryBroker,
) -> None:
    calls: list[str] = []
    tasks = branching_tasks(broker, calls)

    @broker.task
    @pipeline_task(output="with_default")
    async def use_bad_or_default(bad: int = 7) -> int:
        return bad * 2

    engine = ExecutionEngine(
        broker,
        DataflowPipeline.from_tasks(broker, [*tasks, use_bad_or_default]).dag,
        error_mode=ErrorHandlingMode.SKIP_FAILED,
    )

    results = await engine.execute()

    assert results == {
        "source": 1,
        "after_bad": "got None",
        "good": 2,
        "after_good": 20,
        "with_default": 14,
    }
    report = engine.get_execution_report()
    assert report.status == "Succeeded"
    assert report.errors == {"explode": "ValueError: boom"}


async def test_error_mode_accepts_strings(broker: InMemoryBroker) -> None:
    calls: list[str] = []
    pipeline = DataflowPipeline.from_tasks(
        broker, branching_tasks(broker, calls), error_mode="CONTINUE_ON_ERROR"
    )

    assert pipeline.error_mode is ErrorHandlingMode.CONTINUE_ON_ERROR
    assert (await pipeline.kiq_dataflow())["after_good"] == 20


# -- retries -----------------------------------------------------------------------------


async def test_retry_until_success(broker: InMemoryBroker) -> None:
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    @broker.task
    @pipeline_task(
        output="reliable_feature",
        retries=2,
        retry_delay=0.01,
        retry_backoff=3.0,
        retry_jitter=False,
    )
    async def fetch_with_retry(url: str) -> dict[str, str]:
        attempts.append(loop.time())
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)} failed")
        return {"url": url}

    pipeline = DataflowPipeline.from_tasks(broker, [fetch_with_retry])

    results = await pipeline.kiq_dataflow(url="https://example.org")

    assert results == {"reliable_feature": {"url": "https://example.org"}}
    assert len(attempts) == 3
    # Exponential backoff: 0.01 s, then 0.01 * 3 s.
    assert attempts[1] - attempts[0] >= 0.01
    assert attempts[2] - attempts[1] >= 0.03
    step = pipeline.get_execution_report().steps["fetch_with_retry"]
    assert step.status == "Succeeded"
    assert step.attempts == 3


async def test_retries_exhausted(broker: InMemoryBroker) -> None:
    attempts: list[int] = []

    @broker.task
    @pipeline_task(output="value", retries=2, retry_delay=0.01)
    async def always_fails() -> int:
        attempts.append(1)
        raise ConnectionError("down")

    pipeline = DataflowPipeline.from_tasks(broker, [always_fails])

    with pytest.raises(PipelineError) as caught:
        await pipeline.kiq_dataflow()

    assert len(attempts) == 3  # the first attempt and two retries
    assert caught.value.errors == {"always_fails": "ConnectionError: down"}
    assert pipeline.get_execution_report().steps["always_fails"].attempts == 3


# -- timeouts ----------------------------------------------------------------------------


async def test_step_timeout_from_the_decorator(broker: InMemoryBroker) -> None:
    never = asyncio.Event()
    after: list[str] = []

    @broker.task
    @pipeline_task(output="slow", timeout=0.05)
    async def hang() -> int:
        await never.wait()
        return 1

    @broker.task
    @pipeline_task(output="late")
    async def later(slow: int) -> int:
        after.append("later")
        return slow

    pipeline = DataflowPipeline.from_tasks(broker, [hang, later])

    with pytest.raises(StepTimeoutError) as caught:
        await pipeline.kiq_dataflow()

    assert isinstance(caught.value, PipelineError)
    assert caught.value.failed_node == "hang"
    assert "exceeded its timeout of 0.05s" in caught.value.errors["hang"]
    assert after == []


async def test_step_timeout_from_the_engine(broker: InMemoryBroker) -> None:
    never = asyncio.Event()

    @broker.task
    @pipeline_task(output="fast", timeout=30)  # a step's own timeout wins
    async def quick() -> int:
        return 1

    @broker.task
    @pipeline_task(output="slow")
    async def hang(fast: int) -> int:
        await never.wait()
        return fast

    dag = DataflowPipeline.from_tasks(broker, [quick, hang]).dag
    engine = ExecutionEngine(broker, dag, task_timeout=0.1)

    with pytest.raises(StepTimeoutError) as caught:
        await engine.execute()

    assert caught.value.failed_node == "hang"
    assert "exceeded its timeout of 0.1s" in caught.value.errors["hang"]
    assert caught.value.partial_results == {"fast": 1}


async def test_a_timed_out_attempt_is_retried(broker: InMemoryBroker) -> None:
    never = asyncio.Event()
    attempts: list[int] = []

    @broker.task
    @pipeline_task(output="value", timeout=0.2, retries=1, retry_delay=0.01)
    async def flaky() -> str:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            await never.wait()  # the first attempt hangs
        return "second time lucky"

    pipeline = DataflowPipeline.from_tasks(broker, [flaky])

    assert await pipeline.kiq_dataflow() == {"value": "second time lucky"}
    assert attempts == [1, 2]
    assert pipeline.get_execution_report().steps["flaky"].attempts == 2


async def test_run_timeout(broker: InMemoryBroker) -> None:
    release = asyncio.Event()  # not set while the run lasts

    @broker.task
    @pipeline_task(output="fast")
    async def quick() -> int:
        return 1

    @broker.task
    @pipeline_task(output="slow")
    async def hang(fast: int) -> int:
        await release.wait()
        return fast

    pipeline = DataflowPipeline.from_tasks(broker, [quick, hang], timeout=0.5)

    try:
        with pytest.raises(PipelineTimeoutError) as caught:
            await pipeline.kiq_dataflow()
    finally:
        release.set()  # let the abandoned task end

    assert caught.value.failed_node is None
    assert caught.value.partial_results == {"fast": 1}
    assert "timeout of 0.5s" in str(caught.value)
    assert pipeline.get_execution_report().steps["hang"].status == "Cancelled"


# -- context -----------------------------------------------------------------------------


async def test_pipeline_context_is_injected(broker: InMemoryBroker) -> None:
    seen: dict[str, PipelineContext] = {}

    @broker.task
    @pipeline_task(output="raw")
    async def first(data: str, context: PipelineContext) -> str:
        seen["first"] = context
        return data

    @broker.task
    async def my_task(raw: str, context: PipelineContext) -> str:
        seen["my_task"] = context
        return raw.upper()

    pipeline = DataflowPipeline.from_tasks(broker, [first])
    pipeline.add_dataflow_task(my_task, output="upper")

    assert pipeline.dag.external_inputs == ["data"]  # the context is not an input
    results = await pipeline.kiq_dataflow(data="hello")

    assert results == {"raw": "hello", "upper": "HELLO"}
    one, two = seen["first"], seen["my_task"]
    assert one.pipeline_id == two.pipeline_id == pipeline.pipeline_id
    assert (one.step_index, two.step_index) == (0, 1)
    assert one.task_id
    assert two.task_id
    assert one.task_id != two.task_id
    assert one.execution_mode == two.execution_mode == "parallel"
    assert isinstance(one.started_at, datetime)
    assert one.started_at == two.started_at
    assert one.broker is broker
    assert (one.step_name, two.step_name) == ("first", "my_task")


async def test_context_pipeline_id_from_the_engine(broker: InMemoryBroker) -> None:
    seen: list[PipelineContext] = []

    @broker.task
    async def debug_task(data: str, context: PipelineContext) -> str:
        seen.append(context)
        return data

    registry = DataflowRegistry()
    registry.register_task(debug_task, output="echo")
    engine = ExecutionEngine(broker, registry.build_dag())

    assert await engine.execute({"data": "x"}, pipeline_id="my_pipeline") == {"echo": "x"}
    assert [c.pipeline_id for c in seen] == ["my_pipeline"]


# -- unknown tasks -----------------------------------------------------------------------


async def test_unknown_task_name_fails_clearly(broker: InMemoryBroker) -> None:
    registry = DataflowRegistry()
    registry.register_task("nope:task", output="x", inputs=[])
    engine = ExecutionEngine(broker, registry.build_dag())

    with pytest.raises(PipelineError) as caught:
        await engine.execute()

    assert caught.value.failed_node == "task"
    assert "unknown task 'nope:task'" in str(caught.value)
    assert isinstance(caught.value.cause, UnknownTaskError)
    assert caught.value.cause.task_name == "nope:task"
    assert engine.get_execution_report().steps["task"].attempts == 1
