"""The examples on a real cluster: the operator's chart, the images, kubectl.

Each example's Pipeline and PipelineRun are applied with ``spec.worker.image`` set to the
examples image (examples/Dockerfile); the status a user reads (``kubectl get
pipelinerun -o json``) must match what ``taskiq-flow run`` computes in-process for the
same inputs. Then a failing run (the ETL's flaky step failing more often than it retries)
and a cancelled one. ``kubectl wait`` is the only waiting primitive.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import REPO, Kube

pytestmark = pytest.mark.timeout(1800)

EXAMPLES = sorted(p.parent.name for p in REPO.glob("examples/*/pipeline.yaml"))
CLI = str(Path(sys.executable).with_name("taskiq-flow"))


def manifests(example: str, image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The example's Pipeline (on ``image``) and PipelineRun."""
    folder = REPO / "examples" / example
    pipeline = yaml.safe_load((folder / "pipeline.yaml").read_text())
    run = yaml.safe_load((folder / "run.yaml").read_text())
    pipeline["spec"]["worker"]["image"] = image
    return pipeline, run


def in_process_outputs(example: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What ``taskiq-flow run`` (no cluster) computes for the example with ``inputs``."""
    folder = REPO / "examples" / example
    overrides = [arg for k, v in inputs.items() for arg in ("--input", f"{k}={json.dumps(v)}")]
    result = subprocess.run(
        [CLI, "run", str(folder / "pipeline.yaml"), str(folder / "run.yaml"), *overrides,
         "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    outputs: dict[str, Any] = json.loads(result.stdout)["outputs"]
    return outputs


def start(kube: Kube, pipeline: dict[str, Any], run: dict[str, Any]) -> str:
    """Apply the Pipeline, wait until it is Ready, create the run; returns the run's name."""
    name = kube.apply(pipeline)
    kube.wait(f"pipeline/{name}", "condition=Ready", timeout=120)
    run = copy.deepcopy(run)
    run["spec"]["pipelineRef"] = {"name": name}
    return kube.apply(run)


def unique_batch(run: dict[str, Any]) -> None:
    """The ETL's flaky step counts attempts per batch: a fresh batch fails afresh."""
    run["spec"]["inputs"]["batch"] = f"e2e-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_run_succeeds(operator: Kube, images: dict[str, str], example: str) -> None:
    pipeline, run = manifests(example, images["examples"])
    if example == "etl":
        unique_batch(run)
    name = start(operator, pipeline, run)
    operator.wait(f"pipelinerun/{name}", "condition=Succeeded", timeout=300)
    status = operator.get("pipelinerun", name)["status"]
    steps = [step["name"] for step in pipeline["spec"]["steps"]]
    assert status["phase"] == "Succeeded"
    assert status["progress"] == f"{len(steps)}/{len(steps)}"
    assert {s: status["steps"][s]["phase"] for s in steps} == dict.fromkeys(steps, "Succeeded")
    assert status["finishedAt"]
    assert status["durationSeconds"] >= 0
    assert status["outputs"]
    # The cluster computes what one process computes (the ETL's batch counter is per
    # machine: a second fresh batch fails as often here as the first did there).
    inputs = dict(run["spec"].get("inputs", {}))
    if example == "etl":
        inputs["batch"] = f"{inputs['batch']}-local"
    expected = in_process_outputs(example, inputs)
    if example == "etl":
        for outputs in (expected, status["outputs"]):
            outputs.pop("summary")  # names the batch
            outputs["loaded"].pop("batch")
        assert status["steps"]["load"]["attempts"] == 3  # two failures, then success
    assert status["outputs"] == expected
    pipeline_status = operator.get("pipeline", pipeline["metadata"]["name"])["status"]
    assert pipeline_status["phase"] == "Ready"
    assert pipeline_status["worker"]["deployment"]


def test_a_step_that_fails_more_often_than_it_retries_fails_the_run(
    operator: Kube, images: dict[str, str]
) -> None:
    pipeline, run = manifests("etl", images["examples"])
    unique_batch(run)
    limit = next(s for s in pipeline["spec"]["steps"] if s["name"] == "load")["retries"]["limit"]
    run["spec"]["inputs"]["flaky_failures"] = limit + 5
    name = start(operator, pipeline, run)
    operator.wait(f"pipelinerun/{name}", "condition=Succeeded=False", timeout=300)
    status = operator.get("pipelinerun", name)["status"]
    assert status["phase"] == "Failed"
    assert status["steps"]["load"]["phase"] == "Failed"
    assert status["steps"]["load"]["attempts"] == limit + 1
    assert "ConnectionError" in status["steps"]["load"]["message"]
    assert status["steps"]["extract"]["phase"] == "Succeeded"
    assert status["steps"]["report"]["phase"] != "Succeeded"
    assert "summary" not in status.get("outputs", {})
    condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert condition["status"] == "False"


def test_setting_spec_cancel_cancels_a_running_run(operator: Kube, images: dict[str, str]) -> None:
    pipeline, run = manifests("etl", images["examples"])
    # The ETL, with a load step that waits ten minutes before each retry: the run is
    # certainly still running when it is cancelled.
    pipeline["metadata"]["name"] = "etl-slow"
    load = next(s for s in pipeline["spec"]["steps"] if s["name"] == "load")
    load["retries"] = {"limit": 5, "delaySeconds": 600, "maxDelaySeconds": 600}
    load.pop("timeoutSeconds", None)
    pipeline["spec"]["timeoutSeconds"] = 3600
    unique_batch(run)
    run["spec"]["inputs"]["flaky_failures"] = 100
    name = start(operator, pipeline, run)
    operator.wait(
        f"pipelinerun/{name}", "jsonpath={.status.steps.load.phase}=Retrying", timeout=300
    )
    operator("patch", f"pipelinerun/{name}", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    operator.wait(f"pipelinerun/{name}", "jsonpath={.status.phase}=Cancelled", timeout=120)
    status = operator.get("pipelinerun", name)["status"]
    assert status["steps"]["load"]["phase"] != "Succeeded"
    assert status["steps"]["report"]["phase"] != "Succeeded"
    assert status["finishedAt"]
    condition = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert condition["status"] == "False"
