"""Real ``taskiq worker`` processes for the tests: start them, read their logs, stop them.

Each worker leads its own process group (``taskiq worker`` forks the child that runs the
tasks), so stopping or killing one ends both. A stream-broker worker asked to stop may
never exit (its receiver cancels the blocking XREADGROUP and then waits on it), so
``stop`` gives it ``SHUTDOWN_GRACE_SECONDS`` and then sends SIGKILL.

Use ``watch`` in a fixture and ``attach_logs`` in a ``pytest_runtest_makereport`` hook to
put what the workers logged during a failed test into its report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SHUTDOWN_GRACE_SECONDS = 3.0

_LOGS = pytest.StashKey["list[tuple[WorkerProcesses, dict[Path, int]]]"]()


def worker_command(broker: str, *modules: str) -> list[str]:
    """``python -m taskiq worker BROKER MODULES...``: one process, acking after the save."""
    return [
        sys.executable, "-m", "taskiq", "worker", broker, *modules,
        "--workers", "1",
        "--log-level", "WARNING",
        "--shutdown-timeout", "2",
        # Ack after the result is saved (taskiq's default, spelled out): a worker killed
        # mid-task leaves the message pending for another worker to claim.
        "--ack-type", "when_saved",
    ]  # fmt: skip


@dataclass
class WorkerProcesses:
    """Running worker processes and the files they log to."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_marks(self) -> dict[Path, int]:
        """How much each log holds now."""
        return {path: path.stat().st_size for path in self.logs}

    def logs_since(self, marks: Mapping[Path, int]) -> dict[Path, str]:
        """What each log gained after ``marks``."""
        gained = {}
        for path in self.logs:
            with path.open("rb") as log:
                log.seek(marks.get(path, 0))
                gained[path] = log.read().decode(errors="replace")
        return gained

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL one worker: its manager process and the child that runs the tasks."""
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        """SIGTERM, wait up to the grace period, then SIGKILL what is left of each group."""
        for process in self.processes:
            with suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        for process in self.processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            # The manager may be gone while its child lingers: end the whole group.
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def spawn(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        name: str,
        count: int,
    ) -> None:
        """Start ``count`` processes of ``command`` (stopping them all if one fails)."""
        try:
            for number in range(count):
                log_path = log_dir / f"{name}-{number}.log"
                with log_path.open("wb") as log:
                    self.processes.append(
                        subprocess.Popen(
                            list(command),
                            cwd=REPO_ROOT,
                            env={**os.environ, **env},
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
                self.logs.append(log_path)
        except BaseException:
            self.stop()
            raise


def watch(request: pytest.FixtureRequest, workers: WorkerProcesses) -> None:
    """Remember where the workers' logs stand when the test starts."""
    request.node.stash.setdefault(_LOGS, []).append((workers, workers.log_marks()))


def attach_logs(item: pytest.Item, report: Any) -> None:
    """Add what the watched workers logged during a failed test to its report."""
    if report.failed:
        for workers, marks in item.stash.get(_LOGS, []):
            for path, text in workers.logs_since(marks).items():
                report.sections.append((f"{path.name} (during this test)", text or "(nothing)"))
