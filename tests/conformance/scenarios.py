"""Loading the scenarios of ``scenarios/``: what to run and what each run must record.

A scenario file holds a ``Scenario`` document (API group ``conformance.taskiq-flow.test``,
which ``taskiq-flow run`` ignores as it ignores every foreign group) and, usually, the
Pipeline and PipelineRun it runs. ``files`` names further manifests, relative to the
repository root: a Pipeline shared by several scenarios, or an example's files, used
as they are. ``uniqueInputs`` are inputs that get a fresh value for every run (the
tokens that key the tasks' counters in Redis). ``expected`` is the record every driver
must produce (records.py).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from tests.conformance.records import Record, normalise_expected

__all__ = ["FLOW_GROUP", "ROOT", "SCENARIOS", "Scenario", "load_scenarios"]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_DIR = Path(__file__).parent / "scenarios"
FLOW_GROUP = "flow.taskiq.dev"
SCENARIO_KIND = ("conformance.taskiq-flow.test/v1", "Scenario")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _is_flow(document: Mapping[str, Any]) -> bool:
    return str(document.get("apiVersion", "")).split("/")[0] == FLOW_GROUP


@dataclass(frozen=True)
class Scenario:
    """One scenario: its manifest files, its per-run inputs and its expected record."""

    name: str
    path: Path
    files: tuple[Path, ...]
    unique_inputs: tuple[str, ...]
    # Inputs given a fresh directory per run, on the filesystem every process of this
    # machine (worker processes, emulated pods) shares.
    directory_inputs: tuple[str, ...]
    expected: Record  # what every driver must record

    def __str__(self) -> str:
        return self.name

    @cached_property
    def documents(self) -> list[dict[str, Any]]:
        """The Pipeline and PipelineRun documents of every file, in file order."""
        return [doc for path in self.files for doc in _documents(path) if _is_flow(doc)]

    @property
    def pipelines(self) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == "Pipeline"]

    @property
    def run(self) -> dict[str, Any]:
        """The scenario's PipelineRun (each scenario has exactly one)."""
        (run,) = (doc for doc in self.documents if doc["kind"] == "PipelineRun")
        return run

    @property
    def pipeline(self) -> dict[str, Any]:
        """The Pipeline the PipelineRun refers to."""
        name = self.run["spec"]["pipelineRef"]["name"]
        (pipeline,) = (doc for doc in self.pipelines if doc["metadata"]["name"] == name)
        return pipeline

    @property
    def queue(self) -> str:
        """The stream ``taskiq-flow run --broker`` sends this scenario's tasks to."""
        return f"taskiq-flow:{self.pipeline['metadata']['name']}"

    @property
    def modules(self) -> list[str]:
        return list(self.pipeline["spec"]["worker"]["modules"])

    @property
    def module_dirs(self) -> list[Path]:
        """Directories the task modules are imported from, besides the repository root:
        each manifest's own (as ``taskiq-flow run`` does), for the examples' modules."""
        here = Path(__file__).parent
        return list(dict.fromkeys(p.parent for p in self.files if not p.is_relative_to(here)))

    def fresh_inputs(self, driver: str) -> dict[str, str]:
        """New values for the unique and directory inputs: one run of this scenario on
        ``driver``."""
        values = {
            name: f"{self.name}-{driver}-{name}-{uuid.uuid4().hex[:10]}"
            for name in self.unique_inputs
        }
        for name in self.directory_inputs:
            values[name] = tempfile.mkdtemp(prefix=f"{self.name}-{driver}-")
        return values


def _scenario(path: Path) -> Scenario:
    documents = _documents(path)
    (head,) = (
        doc for doc in documents if (doc.get("apiVersion"), doc.get("kind")) == SCENARIO_KIND
    )
    files = [ROOT / name for name in head.get("files") or []]
    if any(_is_flow(doc) for doc in documents):
        files.append(path)
    return Scenario(
        name=head["metadata"]["name"],
        path=path,
        files=tuple(files),
        unique_inputs=tuple(head.get("uniqueInputs") or ()),
        directory_inputs=tuple(head.get("directoryInputs") or ()),
        expected=normalise_expected(head["expected"]),
    )


def load_scenarios() -> list[Scenario]:
    """Every scenario of ``scenarios/``, by file name."""
    return [_scenario(path) for path in sorted(SCENARIO_DIR.glob("*.yaml"))]


SCENARIOS = load_scenarios()
