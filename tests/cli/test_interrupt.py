"""Ctrl-C during ``taskiq-flow run``: the first press cancels the run as a PipelineRun's
``spec.cancel`` does, so its finally steps still run; without finally steps it stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import ROOT

STEP = "{name: long, task: 'tests.cli.interrupt_tasks:announce_then_wait', inputs: [marker]}"
FINALLY = (
    "finally:\n  - {name: report, task: 'tests.cli.interrupt_tasks:what_run_says', inputs: [run]}"
)


def manifest(tmp_path: Path, *, with_finally: bool) -> Path:
    path = tmp_path / "pipeline.yaml"
    spec = (
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: interrupted}\n"
        "spec:\n  worker: {modules: [tests.cli.interrupt_tasks]}\n"
        f"  inputs: [{{name: marker}}]\n  steps:\n    - {STEP}\n"
    )
    if with_finally:
        spec += "  " + FINALLY.replace("\n", "\n  ") + "\n"
    path.write_text(spec)
    return path


def interrupt_once_started(tmp_path: Path, with_finally: bool) -> subprocess.CompletedProcess[str]:
    """Run the pipeline, press Ctrl-C once its step runs, and let the command end."""
    marker = tmp_path / "started"
    command = [sys.executable, "-m", "taskiq_flow.cli.main", "run"]
    command += [str(manifest(tmp_path, with_finally=with_finally)), "--input"]
    command += [f"marker={marker}", "-o", "json", "--progress", "none"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not marker.exists():  # the step's own sign that it runs
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the step did not start"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert "Traceback" not in stdout + stderr, stderr
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_the_first_ctrl_c_cancels_and_the_finally_steps_run(tmp_path: Path) -> None:
    done = interrupt_once_started(tmp_path, with_finally=True)
    assert done.returncode == 130
    assert "cancelling: the finally steps run" in done.stderr
    result = json.loads(done.stdout)
    assert result["status"]["phase"] == "Cancelled"
    assert result["status"]["steps"]["long"]["phase"] == "Cancelled"
    assert result["status"]["steps"]["report"]["phase"] == "Succeeded"
    assert result["outputs"] == {
        "report": {"phase": "Cancelled", "message": "the run was cancelled (interrupted)"}
    }


def test_without_finally_steps_ctrl_c_stops_at_once(tmp_path: Path) -> None:
    done = interrupt_once_started(tmp_path, with_finally=False)
    assert done.returncode == 130
    assert done.stderr.strip().endswith("interrupted")
    assert done.stdout == ""
