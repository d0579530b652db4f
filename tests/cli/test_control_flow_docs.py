"""docs/control-flow.md runs as it reads.

Every ```yaml block of the page that holds a Pipeline is an example; the ```json and
```console blocks after it, up to the next example, are what the page says it gives:

- a JSON block is a run in short (the page explains its keys): the example is run as a
  user runs it, ``taskiq-flow run FILE -o json --progress none`` from the repository's
  root, with ``--input`` for the block's ``inputs``, and each value of the block must be
  exactly what the run printed;
- a console block is ``$ taskiq-flow validate FILE`` and its output, compared line by
  line (``taskiq-flow run`` must refuse the file with the same problems).

As the page tells users, each manifest is saved beside examples/control_flow/tasks.py
under its Pipeline's name (here: in a temporary directory with a copy of tasks.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "control-flow.md"
TASKS = ROOT / "examples" / "control_flow" / "tasks.py"
CLI = str(Path(sys.executable).with_name("taskiq-flow"))
SAVED_IN = "examples/control_flow/"  # where the page tells users to save the examples

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
ELIDED = "..."  # an output whose value the page does not give (it differs between runs)
DIGEST_KEYS = {"inputs", "phase", "message", "outputs", "steps", "attempts", "messages"}
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


@dataclass
class Example:
    """A Pipeline of the page and the results the page gives under it."""

    name: str
    manifest: str
    runs: list[dict[str, Any]]
    validations: list[str]

    def save(self, directory: Path) -> Path:
        """The manifest as a user saves it: ``<name>.yaml`` beside tasks.py."""
        shutil.copy(TASKS, directory / TASKS.name)
        path = directory / f"{self.name}.yaml"
        path.write_text(self.manifest)
        return path


def _pipeline_name(text: str) -> str | None:
    for document in yaml.safe_load_all(text):
        if isinstance(document, dict) and document.get("kind") == "Pipeline":
            return str(document["metadata"]["name"])
    return None


def page_examples() -> list[Example]:
    found: list[Example] = []
    for language, text in FENCE.findall(PAGE.read_text(encoding="utf-8")):
        name = _pipeline_name(text) if language == "yaml" else None
        if name is not None:
            found.append(Example(name, text, [], []))
        elif found and language == "json":
            found[-1].runs.append(json.loads(text))
        elif found and language == "console":
            found[-1].validations.append(text)
    return found


EXAMPLES = page_examples()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in completed.stdout + completed.stderr, completed.stderr
    return completed


def test_the_page_has_an_example_per_feature() -> None:
    names = [example.name for example in EXAMPLES]
    assert len(names) == len(set(names)), f"two examples with one name: {names}"
    fields = {"when:", "dependsOn:", "continueOnFailure:", "finally:", "retries:"}
    fields.add("parallelism:")
    for field in fields:
        assert any(field in example.manifest for example in EXAMPLES), field
    for example in EXAMPLES:
        assert example.runs or example.validations, f"{example.name}: no result under it"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.name)
def test_an_example_gives_what_the_page_says(example: Example, tmp_path: Path) -> None:
    path = example.save(tmp_path)
    for expected in example.runs:
        check_run(path, expected)
    for transcript in example.validations:
        check_validation(path, transcript)


def check_run(path: Path, expected: dict[str, Any]) -> None:
    assert set(expected) <= DIGEST_KEYS, f"unknown keys: {set(expected) - DIGEST_KEYS}"
    command = ["run", str(path), "-o", "json", "--progress", "none"]
    for name, value in expected.get("inputs", {}).items():
        command += ["--input", f"{name}={json.dumps(value)}"]
    completed = run_cli(*command)
    succeeded = expected["phase"] == "Succeeded"
    assert completed.returncode == (EXIT_SUCCEEDED if succeeded else EXIT_FAILED), (
        completed.stdout + completed.stderr
    )
    printed = json.loads(completed.stdout)
    status = printed["status"]
    steps = status["steps"]
    assert status["phase"] == expected["phase"]
    if "message" in expected:
        assert status.get("message") == expected["message"]
    outputs = printed["outputs"]
    assert set(outputs) == set(expected["outputs"])
    given = {name: value for name, value in expected["outputs"].items() if value != ELIDED}
    assert {name: outputs[name] for name in given} == given
    assert {name: step["phase"] for name, step in steps.items()} == expected["steps"]
    for name, attempts in expected.get("attempts", {}).items():
        assert steps[name].get("attempts", 0) == attempts, name
    for name, message in expected.get("messages", {}).items():
        assert steps[name].get("message") == message, name


def check_validation(path: Path, transcript: str) -> None:
    command, *lines = transcript.splitlines()
    assert command == f"$ taskiq-flow validate {SAVED_IN}{path.name}", command
    completed = run_cli("validate", str(path))
    assert completed.returncode == EXIT_INVALID, completed.stdout + completed.stderr
    shown = completed.stdout.replace(f"{path.parent}/", SAVED_IN)
    assert shown.splitlines() == lines
    # taskiq-flow run refuses the file before anything runs, with the same problems.
    refused = run_cli("run", str(path), "--progress", "none")
    assert refused.returncode == EXIT_INVALID
    output = (refused.stdout + refused.stderr).replace(f"{path.parent}/", SAVED_IN)
    for line in lines:
        assert line in output.splitlines()
