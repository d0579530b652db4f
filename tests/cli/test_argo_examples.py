"""examples/argo: Argo Workflows' examples as taskiq-flow pipelines give what Argo's do.

Each file is run as its comment shows, ``taskiq-flow run examples/argo/FILE`` (the
in-process driver) from the repository's root, and the run must end as the comment
says: phases, outputs, attempts, and the order the steps ran in (from the timestamps of
the run's status). The parallelism example is judged by the tasks' own records of when
each item started and finished. tests/conformance runs the same files on Redis workers
and on the operator (scenarios example-argo-*.yaml).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGO = ROOT / "examples" / "argo"
CLI = str(Path(sys.executable).with_name("taskiq-flow"))
EXIT_SUCCEEDED, EXIT_FAILED = 0, 1


def run(path: Path, **inputs: Any) -> tuple[int, dict[str, Any]]:
    """``taskiq-flow run PATH -o json`` with ``--input`` for ``inputs``: the exit status
    and what it printed."""
    command = [CLI, "run", str(path), "-o", "json", "--progress", "none"]
    for name, value in inputs.items():
        command += ["--input", f"{name}={json.dumps(value)}"]
    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    assert completed.stdout, completed.stderr
    document: dict[str, Any] = json.loads(completed.stdout)
    return completed.returncode, document


def phases(document: dict[str, Any]) -> dict[str, str]:
    return {name: step["phase"] for name, step in document["status"]["steps"].items()}


def attempts(document: dict[str, Any]) -> dict[str, int]:
    return {name: step.get("attempts", 0) for name, step in document["status"]["steps"].items()}


def moment(document: dict[str, Any], step: str, which: str) -> datetime:
    """``startedAt`` or ``finishedAt`` of ``step`` in the run's status."""
    return datetime.fromisoformat(document["status"]["steps"][step][which])


def test_dag_diamond_runs_a_then_b_and_c_then_d() -> None:
    code, document = run(ARGO / "dag-diamond.yaml")
    assert code == EXIT_SUCCEEDED
    assert document["status"]["phase"] == "Succeeded"
    assert document["outputs"] == {"a": "A", "b": "B", "c": "C", "d": "D"}
    assert phases(document) == dict.fromkeys("abcd", "Succeeded")
    assert attempts(document) == dict.fromkeys("abcd", 1)
    for step in ("b", "c"):
        assert moment(document, step, "startedAt") >= moment(document, "a", "finishedAt")
        assert moment(document, "d", "startedAt") >= moment(document, step, "finishedAt")


def test_conditionals_run_the_side_the_coin_shows() -> None:
    code, document = run(ARGO / "conditionals.yaml")  # the PipelineRun's flip: heads
    assert code == EXIT_SUCCEEDED
    assert document["status"]["phase"] == "Succeeded"
    assert document["outputs"] == {"result": "heads", "heads": "it was heads"}
    assert phases(document) == {"flip-coin": "Succeeded", "heads": "Succeeded", "tails": "Skipped"}
    tails = document["status"]["steps"]["tails"]
    assert tails["message"] == "when \"outputs.result == 'tails'\" is false"
    assert attempts(document)["tails"] == 0

    code, document = run(ARGO / "conditionals.yaml", flip="tails")
    assert code == EXIT_SUCCEEDED
    assert document["outputs"] == {"result": "tails", "tails": "it was tails"}
    assert phases(document) == {"flip-coin": "Succeeded", "heads": "Skipped", "tails": "Succeeded"}


def test_exit_handlers_report_the_failed_run_and_cry() -> None:
    code, document = run(ARGO / "exit-handlers.yaml")
    assert code == EXIT_FAILED
    status = document["status"]
    assert status["phase"] == "Failed"
    assert phases(document) == {
        "intentional-fail": "Failed",
        "notify": "Succeeded",
        "celebrate": "Skipped",
        "cry": "Succeeded",
    }
    assert status["steps"]["intentional-fail"]["message"] == "RuntimeError: intentional failure"
    assert document["outputs"] == {
        "notice": {
            "status": "Failed",
            "failures": ["intentional-fail"],
            "message": "send e-mail: the run Failed; failed steps: intentional-fail",
        },
        "cry": "boohoo!",
    }
    # The exit handler runs after the workflow's step, and cry after notify.
    assert moment(document, "notify", "startedAt") >= moment(
        document, "intentional-fail", "finishedAt"
    )
    assert moment(document, "cry", "startedAt") >= moment(document, "notify", "finishedAt")


def test_dag_continue_on_fail_runs_d_after_b_failed_and_skips_g() -> None:
    code, document = run(ARGO / "dag-continue-on-fail.yaml")
    assert code == EXIT_FAILED
    status = document["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == "1 step(s) failed: e"  # b continues on failure
    assert phases(document) == {
        "a": "Succeeded",
        "b": "Failed",
        "c": "Succeeded",
        "d": "Succeeded",
        "e": "Failed",
        "f": "Succeeded",
        "g": "Skipped",
    }
    assert status["steps"]["g"]["message"] == "upstream step 'e' failed"
    assert document["outputs"] == dict.fromkeys("acdf", "hello world")
    for step in ("b", "c"):
        assert moment(document, "d", "startedAt") >= moment(document, step, "finishedAt")


def test_retry_backoff_succeeds_on_the_third_attempt(tmp_path: Path) -> None:
    # Twice: the flaky step resets its count when it succeeds, so each run starts afresh.
    for _ in range(2):
        code, document = run(ARGO / "retry-backoff.yaml", state_dir=str(tmp_path))
        assert code == EXIT_SUCCEEDED
        assert document["status"]["phase"] == "Succeeded"
        assert document["outputs"] == {"flaky": {"attempts": 3}}
        assert phases(document) == {"flaky": "Succeeded"}
        assert attempts(document) == {"flaky": 3}
        # jitter off: the waits are exactly 0.1 s and 0.2 s.
        assert document["status"]["steps"]["flaky"]["durationSeconds"] >= 0.3
        assert not (tmp_path / "retry-backoff" / "attempts").exists()


def most_at_once(directory: Path) -> tuple[int, float]:
    """From the records the sleeping items wrote: the most of them running at one
    instant (an end at the very instant of a start counts first), and the time from the
    first start to the last end."""
    spans = [json.loads(path.read_text()) for path in directory.glob("*.json")]
    assert len(spans) == 10
    edges = sorted([(s["started"], 1) for s in spans] + [(s["finished"], -1) for s in spans])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak, edges[-1][0] - edges[0][0]


def test_parallelism_limit_runs_at_most_two_items_at_once(tmp_path: Path) -> None:
    code, document = run(ARGO / "parallelism-limit.yaml", state_dir=str(tmp_path))
    assert code == EXIT_SUCCEEDED
    assert document["status"]["phase"] == "Succeeded"
    assert document["outputs"] == {
        "slept": list(range(1, 11)),
        "checked": {"items": 10, "limit": 2, "within_limit": True},
    }
    assert phases(document) == {"sleep": "Succeeded", "check": "Succeeded"}
    items = document["status"]["steps"]["sleep"]["items"]
    assert items == {"total": 10, "succeeded": 10, "failed": 0, "running": 0}
    peak, elapsed = most_at_once(tmp_path / "parallelism-limit")
    assert peak <= 2
    assert elapsed >= 10 * 0.2 / 2  # ten items of 0.2 s, two at a time


def test_without_the_limit_the_same_items_overlap_more(tmp_path: Path) -> None:
    """The measurement can fail: without spec.parallelism the items run together."""
    documents = list(yaml.safe_load_all((ARGO / "parallelism-limit.yaml").read_text()))
    pipeline = next(d for d in documents if d["kind"] == "Pipeline")
    del pipeline["spec"]["parallelism"]
    shutil.copy(ARGO / "argo_tasks.py", tmp_path)
    path = tmp_path / "unlimited.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    state = tmp_path / "state"
    code, document = run(path, state_dir=str(state))
    assert code == EXIT_SUCCEEDED
    assert document["outputs"]["checked"] == {"items": 10, "limit": 2, "within_limit": False}
    peak, _ = most_at_once(state / "parallelism-limit")
    assert peak > 2
