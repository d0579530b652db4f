"""``taskiq-flow run --broker redis://...`` with real ``taskiq-flow worker`` processes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.cli.conftest import EXAMPLES, ROOT, StartWorker, taskiq_flow


def test_wordcount_runs_on_a_worker(redis_url: str, start_worker: StartWorker) -> None:
    # A task module given as a file: its directory goes on the worker's path.
    start_worker(
        EXAMPLES / "wordcount" / "wordcount_tasks.py",
        "--broker",
        redis_url,
        "--queue",
        "taskiq-flow:wordcount",
        "--concurrency",
        "4",
    )
    result = taskiq_flow(
        "run",
        EXAMPLES / "wordcount" / "pipeline.yaml",
        EXAMPLES / "wordcount" / "run.yaml",
        "--broker",
        redis_url,
        "-o",
        "json",
    )
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["outputs"]["top"] == [["it", 5], ["of", 5], ["the", 5]]
    assert f"sending tasks to queue taskiq-flow:wordcount on {redis_url}" in result.stderr


def test_etl_retries_across_processes(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    start_worker(
        "etl_tasks",
        "--path",
        EXAMPLES / "etl",
        "--broker",
        redis_url,
        "--queue",
        "taskiq-flow:etl",
    )
    batch = f"redis-{uuid.uuid4().hex[:8]}"
    result = taskiq_flow(
        "run",
        EXAMPLES / "etl" / "pipeline.yaml",
        "--broker",
        redis_url,
        "-o",
        "json",
        "-i",
        f"batch={batch}",
        "-i",
        f"state_dir={tmp_path}",
    )
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["outputs"]["loaded"] == {"batch": batch, "rows": 3, "attempts": 3}
    assert document["status"]["steps"]["valid"]["items"]["total"] == 5


def test_a_task_the_worker_does_not_know_fails_the_run(
    redis_url: str, start_worker: StartWorker, tmp_path: Path
) -> None:
    # The client knows the task (it imports the module), the worker does not. The worker's
    # PipelineMiddleware reports it as failed; were it dropped (plain taskiq), the step's
    # timeout would end the wait. Either way the run fails instead of hanging.
    (tmp_path / "clientonly.py").write_text(
        "from taskiq_flow import task\n\n@task\ndef echo(text: str) -> str:\n    return text\n"
    )
    manifest = tmp_path / "p.yaml"
    manifest.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: lost}\n"
        "spec:\n  worker: {modules: [clientonly]}\n  inputs: [{name: text}]\n  steps:\n"
        "    - {name: echo, task: 'clientonly:echo', inputs: [text], timeoutSeconds: 1}\n"
    )
    start_worker(
        EXAMPLES / "wordcount" / "wordcount_tasks.py",
        "--broker",
        redis_url,
        "--queue",
        "taskiq-flow:lost",
    )
    result = taskiq_flow("run", manifest, "--broker", redis_url, "-i", "text=hi", timeout=30)
    assert result.code == 1
    assert "step 'echo' failed: " in result.stderr
    assert "UnknownTaskError" in result.stderr or "TimeoutError" in result.stderr


def test_an_unknown_task_is_refused_before_sending(redis_url: str) -> None:
    manifest = EXAMPLES / "wordcount" / "pipeline.yaml"
    text = manifest.read_text().replace("wordcount_tasks:top_words", "wordcount_tasks:top_word")
    broken = ROOT / "examples" / "wordcount" / f".broken-{uuid.uuid4().hex}.yaml"
    broken.write_text(text)
    try:
        result = taskiq_flow("run", broken, "--broker", redis_url)
    finally:
        broken.unlink()
    assert result.code == 2
    assert "unknown task 'wordcount_tasks:top_word'" in result.stderr
    assert "sending tasks" not in result.stderr


def test_run_help_names_the_queue() -> None:
    result = taskiq_flow("run", "--help")
    assert '"taskiq-flow:<pipeline name>"' in result.stdout
    assert "taskiq-flow worker MODULE... --broker redis://... --queue" in result.stdout
