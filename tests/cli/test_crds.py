"""``taskiq-flow crds``: the same bytes as the files in crds/."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cli.conftest import ROOT, taskiq_flow


def test_prints_the_checked_in_crds() -> None:
    result = taskiq_flow("crds")
    assert result.code == 0
    files = [
        ROOT / "crds" / "pipelines.flow.taskiq.dev.yaml",
        ROOT / "crds" / "pipelineruns.flow.taskiq.dev.yaml",
    ]
    assert result.stdout == "---\n".join(f.read_text() for f in files)
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Pipeline", "PipelineRun"]


def test_writes_the_files(tmp_path: Path) -> None:
    result = taskiq_flow("crds", "--output-dir", tmp_path / "out")
    assert result.code == 0
    for path in (ROOT / "crds").glob("*.yaml"):
        assert (tmp_path / "out" / path.name).read_text() == path.read_text()


def test_help_lists_every_command() -> None:
    result = taskiq_flow("--help")
    for command in ("run", "validate", "dag", "worker", "crds", "export"):
        assert f"  {command} " in result.stdout
