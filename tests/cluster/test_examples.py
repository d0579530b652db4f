"""Every example as a user runs it: ``kubectl apply`` its manifests, ``kubectl wait``.

The worker pods run as if on the examples image (tests/kube/env.py), and the outputs
in the run's status must be what ``taskiq-flow run`` computes in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.helpers import wait_succeeded
from tests.kube import KubeEnv
from tests.kube.processes import ROOT

EXAMPLES = sorted(p.parent for p in (ROOT / "examples").glob("*/pipeline.yaml"))
CLI = str(Path(sys.executable).with_name("taskiq-flow"))


def in_process(example: Path, tmp: Path) -> subprocess.Popen[str]:
    """``taskiq-flow run pipeline.yaml run.yaml -o json``, started (it runs meanwhile).

    Its own ``$TMPDIR``: the ETL's flaky step counts attempts in a file there, and a
    fresh count is what a fresh worker pod (its ``/tmp`` an emptyDir) starts from.
    """
    return subprocess.Popen(
        [CLI, "run", "pipeline.yaml", "run.yaml", "-o", "json"],
        cwd=example,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_an_example_run_succeeds(kube_env: KubeEnv, example: Path, tmp_path: Path) -> None:
    expected = in_process(example, tmp_path)
    pipeline = yaml.safe_load((example / "pipeline.yaml").read_text())
    run = yaml.safe_load((example / "run.yaml").read_text())

    kube_env.kubectl("apply", "-f", str(example / "pipeline.yaml"))
    # kubectl apply cannot make up a name: a run with generateName is created.
    verb = "create" if "generateName" in run["metadata"] else "apply"
    created = kube_env.kubectl(verb, "-f", str(example / "run.yaml"), "-o", "name")
    name = created.stdout.strip().rpartition("/")[2]
    done = wait_succeeded(kube_env, name)

    status = done["status"]
    steps = [step["name"] for step in pipeline["spec"]["steps"]]
    assert {s: status["steps"][s]["phase"] for s in steps} == dict.fromkeys(steps, "Succeeded")
    assert status["progress"] == f"{len(steps)}/{len(steps)}"
    out, err = expected.communicate(timeout=60)
    assert expected.returncode == 0, err
    outputs: dict[str, Any] = json.loads(out)["outputs"]
    assert status["outputs"] == outputs
    assert kube_env.get("pipeline", pipeline["metadata"]["name"])["status"]["phase"] == "Ready"
