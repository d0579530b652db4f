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
        "retries": {"limit": 2, "delaySeconds": 0.1, "backoff": 2.0},
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
        ("flows:not_a_pipeline", "cannot export builtins.int: expected a DataflowPipeline"),
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
