"""``taskiq-flow export``: a Python DataflowPipeline becomes a manifest that ``run`` runs."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.conftest import taskiq_flow

FLOWS = textwrap.dedent("""\
    from taskiq import InMemoryBroker
    from taskiq_flow import DataflowPipeline, pipeline_task, task


    @task
    @pipeline_task(output="numbers")
    def parse_numbers(text: str) -> list[int]:
        return [int(word) for word in text.split()]


    @task
    @pipeline_task(output="squares", retries=2, retry_delay=0.1, timeout=5)
    async def square(n: int, offset: int = 0) -> int:
        return n * n + offset


    @task
    @pipeline_task(output="total")
    def add(squares: list[int], numbers: list[int], bonus: int = 0) -> int:
        return sum(squares) + len(numbers) + bonus


    pipeline = DataflowPipeline(
        InMemoryBroker(), name="Squares_Pipeline", max_parallel=3, error_mode="CONTINUE_ON_ERROR"
    )
    pipeline.add_dataflow_task(parse_numbers)
    pipeline.map(square, "numbers", output="squares", item_param="n", max_parallel=2)
    pipeline.add_dataflow_task(add, args={"bonus": 100})

    not_a_pipeline = 42
    """)


@pytest.fixture
def flows(tmp_path: Path) -> Iterator[Any]:
    """The ``flows`` module, written into ``tmp_path`` and imported here too."""
    (tmp_path / "flows.py").write_text(FLOWS)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("flows")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("flows", None)


def test_the_manifest_describes_the_pipeline(tmp_path: Path, flows: Any) -> None:
    result = taskiq_flow("export", "flows:pipeline", cwd=tmp_path)
    assert result.code == 0, result.stderr
    manifest = yaml.safe_load(result.stdout)
    assert manifest["metadata"] == {"name": "squares-pipeline"}
    spec = manifest["spec"]
    assert spec["worker"] == {"modules": ["flows"]}
    assert (spec["parallelism"], spec["errorMode"]) == (3, "ContinueOnError")
    assert spec["inputs"] == [{"name": "text"}]
    steps = {step["name"]: step for step in spec["steps"]}
    assert steps["map-squares"] == {
        "name": "map-squares",
        "task": "flows:square",
        "output": "squares",
        "map": {"over": "numbers", "as": "n", "maxParallel": 2},
        "inputs": [],
        # @pipeline_task caps retries at 300 s after the first attempt unless told
        # otherwise: the manifest says so, so it means the same.
        "retries": {"limit": 2, "delaySeconds": 0.1, "backoff": 2.0, "maxDurationSeconds": 300},
        "timeoutSeconds": 5,
    }
    assert steps["add"]["args"] == {"bonus": 100}
    assert steps["add"]["inputs"] == ["squares", "numbers"]


def test_export_then_run_gives_what_the_python_pipeline_gives(tmp_path: Path, flows: Any) -> None:
    exported = taskiq_flow("export", "flows:pipeline", "--name", "squares", cwd=tmp_path)
    assert exported.code == 0, exported.stderr
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(exported.stdout)

    async def in_python() -> dict[str, Any]:
        broker = flows.pipeline.broker
        await broker.startup()
        try:
            return dict(await flows.pipeline.kiq_dataflow(text="1 2 3"))
        finally:
            await broker.shutdown()

    expected = asyncio.run(in_python())
    assert expected == {"numbers": [1, 2, 3], "squares": [1, 4, 9], "total": 117}
    ran = taskiq_flow("run", manifest, "--input", "text=1 2 3", "-o", "json", cwd=tmp_path)
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout)["outputs"] == expected


def test_json_output(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    result = taskiq_flow("export", "flows:pipeline", "-o", "json", cwd=tmp_path)
    assert json.loads(result.stdout)["kind"] == "Pipeline"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (
            "flows:not_a_pipeline",
            "cannot export builtins.int: expected a DataflowPipeline or a Pipeline",
        ),
        ("flows:missing", "'flows' has no attribute 'missing'"),
        ("nowhere:pipeline", "cannot import 'nowhere'"),
        ("flows", "'flows' is not MODULE:OBJECT"),
    ],
)
def test_what_cannot_be_exported(tmp_path: Path, reference: str, message: str) -> None:
    (tmp_path / "flows.py").write_text(FLOWS)
    result = taskiq_flow("export", reference, cwd=tmp_path)
    assert result.code == 2
    assert message in result.stderr


SEQUENTIAL = textwrap.dedent("""\
    from taskiq import InMemoryBroker
    from taskiq_flow import Pipeline, task


    @task
    def words(text: str) -> list[str]:
        return text.split()


    @task
    def is_long(word: str) -> bool:
        return len(word) > 3


    @task
    def shout(word: str, suffix: str = "") -> str:
        return word.upper() + suffix


    @task
    def join(parts: list[str]) -> str:
        return " ".join(parts)


    broker = InMemoryBroker()
    pipeline = (
        Pipeline(broker)
        .call_next(words)
        .filter(is_long)
        .map(shout, max_parallel=2, suffix="!")
        .call_next(join)
        .with_retry(2, delay=0.1)
    )
    grouped = Pipeline(broker).group(words, join)
    """)


@pytest.fixture
def sequential(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "seqflows.py").write_text(SEQUENTIAL)
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("seqflows")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("seqflows", None)


def test_a_sequential_pipeline_exports_and_runs_the_same(tmp_path: Path, sequential: Any) -> None:
    exported = taskiq_flow("export", "seqflows:pipeline", "--name", "shouting", cwd=tmp_path)
    assert exported.code == 0, exported.stderr
    manifest = yaml.safe_load(exported.stdout)
    spec = manifest["spec"]
    assert (spec["mode"], spec["errorMode"], spec["inputs"]) == (
        "sequential",
        "FailFast",
        [{"name": "text"}],
    )
    assert [(s["name"], s["task"]) for s in spec["steps"]] == [
        ("words", "seqflows:words"),
        ("is-long", "seqflows:is_long"),
        ("shout", "seqflows:shout"),
        ("join", "seqflows:join"),
    ]
    assert spec["steps"][1]["filter"] == {}
    assert spec["steps"][2]["map"] == {"maxParallel": 2}
    assert spec["steps"][2]["args"] == {"suffix": "!"}
    # with_retry waits without jitter by default: the manifest turns it off too.
    assert spec["steps"][0]["retries"] == {
        "limit": 1,
        "delaySeconds": 0.1,
        "backoff": 2.0,
        "jitter": False,
    }
    (tmp_path / "pipeline.yaml").write_text(exported.stdout)

    async def in_python() -> Any:
        broker = sequential.broker
        await broker.startup()
        try:
            handle = await sequential.pipeline.kiq("a quick brown fox jumps")
            return (await handle.wait_result(timeout=10)).return_value
        finally:
            await broker.shutdown()

    expected = asyncio.run(in_python())
    assert expected == "QUICK! BROWN! JUMPS!"
    ran = taskiq_flow(
        "run",
        "pipeline.yaml",
        "--input",
        "text=a quick brown fox jumps",
        "-o",
        "json",
        cwd=tmp_path,
    )
    assert ran.code == 0, ran.stderr
    assert json.loads(ran.stdout)["outputs"]["join"] == expected


def test_a_group_cannot_be_exported(tmp_path: Path) -> None:
    (tmp_path / "seqflows.py").write_text(SEQUENTIAL)
    result = taskiq_flow("export", "seqflows:grouped", cwd=tmp_path)
    assert result.code == 2
    assert "is a group; a manifest step runs one task" in result.stderr


BROKER_TASKS = textwrap.dedent("""\
    from taskiq import InMemoryBroker
    from taskiq_flow import DataflowPipeline, Pipeline, pipeline_task, task

    broker = InMemoryBroker()


    @broker.task
    @pipeline_task(output="numbers")
    def parse_numbers(text: str) -> list[int]:
        return [int(word) for word in text.split()]


    @task
    @pipeline_task(output="total")
    def add(numbers: list[int]) -> int:
        return sum(numbers)


    @broker.task
    def words(text: str) -> list[str]:
        return text.split()


    pipeline = DataflowPipeline(broker, name="sums")
    pipeline.add_dataflow_task(parse_numbers)
    pipeline.add_dataflow_task(add)
    sequential = Pipeline(broker).call_next(words)
    """)

BROKER_ADVICE = (
    "task {!r} is declared on the module's own broker (@broker.task): declare it with "
    "@taskiq_flow.task so every broker finds it"
)


def test_tasks_of_a_brokers_own_are_refused_with_the_advice_run_gives(tmp_path: Path) -> None:
    (tmp_path / "brokerflows.py").write_text(BROKER_TASKS)
    result = taskiq_flow("export", "brokerflows:pipeline", cwd=tmp_path)
    assert result.code == 2
    assert result.stdout == ""
    advice = BROKER_ADVICE.format("brokerflows:parse_numbers")
    assert result.stderr == f"error: {advice}\n"
    # What `taskiq-flow run` says of a manifest naming that task, had it been exported.
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: sums}\n"
        "spec:\n  worker: {modules: [brokerflows]}\n  inputs: [{name: text}]\n  steps:\n"
        "    - {name: parse, task: 'brokerflows:parse_numbers', inputs: [text]}\n"
    )
    ran = taskiq_flow("run", manifest, "-i", "text=1 2", cwd=tmp_path)
    assert ran.code == 2
    assert advice in ran.stderr


def test_a_sequential_pipeline_of_broker_tasks_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "brokerflows.py").write_text(BROKER_TASKS)
    result = taskiq_flow("export", "brokerflows:sequential", "-o", "json", cwd=tmp_path)
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {BROKER_ADVICE.format('brokerflows:words')}\n"
