"""Running the ``taskiq-flow`` command as a user does: in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ENTRY_POINT = Path(sys.executable).parent / "taskiq-flow"


@dataclass
class Result:
    """What the command printed and how it exited."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def taskiq_flow(
    *args: str | Path,
    cwd: Path = ROOT,
    timeout: float = 60,
    entry_point: bool = False,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``taskiq-flow ARGS`` (``python -m taskiq_flow.cli.main`` unless ``entry_point``)."""
    command = [str(ENTRY_POINT)] if entry_point else [sys.executable, "-m", "taskiq_flow.cli.main"]
    completed = subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "100", **(env or {})},
    )
    result = Result(completed.returncode, completed.stdout, completed.stderr)
    # Whatever the user did wrong, they get a message, never a traceback.
    assert "Traceback" not in result.output, result.output
    return result


StartWorker = Callable[..., subprocess.Popen[bytes]]

# A stream-broker worker asked to stop may never exit (its receiver waits on the
# cancelled XREADGROUP; see tests/integration/conftest.py): SIGKILL it after this long.
SHUTDOWN_GRACE_SECONDS = 3.0


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Starts ``taskiq-flow worker ARGS``; stops each with SIGTERM, then SIGKILL."""
    workers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(*args: str | Path) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(workers)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "taskiq_flow.cli.main", "worker", *map(str, args)],
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: taskiq forks children
            )
        workers.append((process, log))
        return process

    yield start
    for process, log in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SHUTDOWN_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # A worker logs the tracebacks of failing tasks (the flaky ETL step): that is fine;
        # one that crashed at start-up would have shown in the test's own failure.
        assert "Listening started" in log.read_text(errors="replace"), log.read_text()
