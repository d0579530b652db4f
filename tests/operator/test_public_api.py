"""The operator's and the worker's public names, and how they are started."""

from __future__ import annotations

import subprocess
import sys

import taskiq_flow_operator
import taskiq_flow_worker


def test_operator_public_names() -> None:
    assert sorted(taskiq_flow_operator.__all__) == [
        "Kick",
        "Note",
        "Operator",
        "OperatorConfig",
        "RunDriver",
        "build_pipeline_status",
        "build_run_status",
        "build_worker_deployment",
        "desired_replicas",
    ]


def test_worker_public_names() -> None:
    assert sorted(taskiq_flow_worker.__all__) == ["FlowWorkerMiddleware", "StepSkipped"]


def test_taskiq_flow_operator_command_runs_the_operator_package() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "taskiq_flow.cli.main", "operator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--metrics-port" in result.stdout
    assert "--peering" in result.stdout
