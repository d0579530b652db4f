"""``taskiq-flow operator`` without the operator extra: --help works, running says what
to install."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli.conftest import taskiq_flow

INSTALL = "pip install 'taskiq-flow[operator]'"


@pytest.fixture
def without_kopf(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import kopf`` fails as it does when kopf is not installed
    (a ``kopf`` module first on the path that raises what a missing module raises)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "kopf.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'kopf'\", name='kopf')\n"
    )
    path = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_help_works_without_the_operator_extra(without_kopf: dict[str, str]) -> None:
    for option in ("--help", "-h"):
        result = taskiq_flow("operator", option, env=without_kopf)
        assert result.code == 0, result.output
        assert result.stdout.startswith("Usage: taskiq-flow operator [OPTIONS]")
        for name in ("--namespace", "--redis", "--metrics-port", "--peering", "--no-scanning"):
            assert name in result.stdout
        assert INSTALL in result.stdout
        assert result.stderr == ""


def test_running_without_the_operator_extra_says_what_to_install(
    without_kopf: dict[str, str],
) -> None:
    result = taskiq_flow("operator", "--namespace", "default", env=without_kopf)
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: the operator needs its extra: {INSTALL} (kopf is not installed)\n"
    )
