"""``taskiq-flow run --broker`` with no worker on its queue: the user is told so, with
the exact command that starts one, and sees a line of status; a step the run left
queued is dropped by the worker that comes later, not run for a run that is over."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

from tests.cli.conftest import StartWorker, taskiq_flow

TASKS = '''from pathlib import Path

from taskiq_flow import task


@task
def leave_mark(path: str) -> str:
    """Writes ``path``: the sign that the step ran."""
    Path(path).write_text("ran")
    return path
'''


def lonely_pipeline(tmp_path: Path) -> tuple[str, Path, Path]:
    """A one-step pipeline in its own directory, timing out after 6 s with no worker."""
    name = f"lonely-{uuid.uuid4().hex[:6]}"
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "lonely_tasks.py").write_text(TASKS)
    manifest = flows / "pipeline.yaml"
    manifest.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n  worker: {modules: [lonely_tasks]}\n  timeoutSeconds: 6\n"
        "  inputs: [{name: path}]\n"
        "  steps:\n    - {name: mark, task: 'lonely_tasks:leave_mark', inputs: [path]}\n"
    )
    return name, flows, manifest


def test_a_run_no_worker_reads_says_so_and_how_to_start_one(redis_url: str, tmp_path: Path) -> None:
    name, flows, manifest = lonely_pipeline(tmp_path)
    mark = tmp_path / "mark"
    result = taskiq_flow(
        "run", manifest, "--broker", redis_url, "-i", f"path={mark}", "--progress", "plain"
    )
    assert result.code == 1  # the run timed out: nobody ran its step
    queue = f"taskiq-flow:{name}"
    command = f"taskiq-flow worker lonely_tasks --path {flows} --broker {redis_url} --queue {queue}"
    assert f"sending tasks to queue {queue} on {redis_url}; workers: {command}" in result.stderr
    assert f"no worker reads queue {queue} yet; start one with:\n  {command}" in result.stderr
    status = rf"run {name}-\w+: \d+s, 0/1 steps done, 1 waiting for a worker or running"
    assert re.search(status, result.stderr), result.stderr


def test_a_step_left_by_a_run_that_is_over_is_dropped_not_run(
    redis_url: str, tmp_path: Path, start_worker: StartWorker
) -> None:
    name, flows, manifest = lonely_pipeline(tmp_path)
    mark = tmp_path / "mark"
    result = taskiq_flow("run", manifest, "--broker", redis_url, "-i", f"path={mark}", "-q")
    assert result.code == 1
    worker = start_worker(
        "lonely_tasks", "--path", flows, "--broker", redis_url, "--queue", f"taskiq-flow:{name}"
    )
    log = Path(tmp_path / "worker-0.log")
    deadline = time.monotonic() + 30
    while "dropped: its run" not in log.read_text(errors="replace"):  # the worker's word
        assert worker.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert re.search(rf"task \S+ dropped: its run {name}-\w+ is over", log.read_text())
    assert not mark.exists()
