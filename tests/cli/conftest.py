"""Running the ``taskiq-flow`` command as a user does: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
