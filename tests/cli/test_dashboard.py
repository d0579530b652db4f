"""``taskiq-flow dashboard`` without its extras says what to install (exit 2), as the
operator does without its own."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.conftest import taskiq_flow


def test_running_without_its_extras_says_what_to_install(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    # redis made unimportable, as when the extras are not installed (aiohttp comes
    # with taskiq itself).
    (shim / "redis.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'redis'\", name='redis')\n"
    )
    path = os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))
    result = taskiq_flow("dashboard", "--port", "0", env={"PYTHONPATH": path})
    assert result.code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        "error: the dashboard needs its extras: pip install 'taskiq-flow[tracking,redis]'"
    )
