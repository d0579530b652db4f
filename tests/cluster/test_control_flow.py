"""Control flow on a real API server with the operator: an invalid ``when``, a cancel
that still runs the ``finally`` steps, and ``dependsOn`` outcomes applied by kubectl.

The worker pods import the conformance tasks (the repository is their working
directory); none of the tasks used here counts in Redis.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from tests.cluster.helpers import WAIT, pipeline, ready_pipeline, run, wait_succeeded
from tests.kube import KubeEnv

TASKS = "tests.conformance.conformance_tasks"


def task(function: str) -> str:
    return f"{TASKS}:{function}"


def test_a_when_with_a_cel_syntax_error_makes_the_pipeline_invalid(kube_env: KubeEnv) -> None:
    spec: dict[str, Any] = {
        "worker": {"modules": [TASKS]},
        "inputs": [{"name": "number", "default": 1}],
        "steps": [
            {
                "name": "first",
                "task": task("double"),
                "inputs": ["number"],
                "when": "inputs.number >",
            }
        ],
    }
    # The CRD takes any non-empty string: the operator's validation finds the error.
    kube_env.apply(pipeline("bad-when", spec))
    kube_env.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Invalid", "pipeline/bad-when", "--timeout=60s"
    )
    kube_env.kubectl("wait", "--for=condition=Ready=False", "pipeline/bad-when", "--timeout=10s")
    status = kube_env.get("pipeline", "bad-when")["status"]
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "Invalid")
    assert ready["message"].startswith("spec.steps[0].when: invalid CEL expression: "), ready
    assert "Syntax error" in ready["message"]
    assert status["message"] == ready["message"]

    # A run of it fails at once, saying why.
    kube_env.apply(run("bad-when-1", "bad-when"))
    done = kube_env.wait_run("bad-when-1", WAIT)["status"]
    assert done["phase"] == "Failed", done
    assert done["conditions"][0]["reason"] == "PipelineInvalid"
    assert "spec.steps[0].when: invalid CEL expression: " in done["message"]


def test_a_cancelled_run_still_runs_its_finally_steps(kube_env: KubeEnv) -> None:
    ready_pipeline(
        kube_env,
        "cancel-finally",
        {
            "worker": {"modules": [TASKS]},
            "inputs": [{"name": "seconds", "default": 600}],
            "steps": [{"name": "slow", "task": task("sleep_then"), "inputs": ["seconds"]}],
            "finally": [
                {
                    "name": "report",
                    "task": task("run_report"),
                    "inputs": ["run"],
                    "timeoutSeconds": 30,
                }
            ],
        },
    )
    kube_env.apply(run("cancel-finally-1", "cancel-finally"))
    # The worker reported the sleeping step started: the cancel finds it running.
    kube_env.kubectl(
        "wait",
        "--for=jsonpath={.status.steps.slow.phase}=Running",
        "pipelinerun/cancel-finally-1",
        f"--timeout={WAIT}s",
    )
    patch = json.dumps({"spec": {"cancel": True}})
    kube_env.kubectl("patch", "pipelinerun", "cancel-finally-1", "--type=merge", "-p", patch)

    status = kube_env.wait_run("cancel-finally-1", WAIT)["status"]
    assert status["phase"] == "Cancelled", status
    assert status["conditions"][0]["status"] == "False"
    assert status["steps"]["slow"]["phase"] == "Cancelled"
    assert status["steps"]["report"]["phase"] == "Succeeded", status["steps"]
    assert status["steps"]["report"]["attempts"] == 1
    # The finally step saw the run as it stood without it: cancelled, no step failed.
    assert status["outputs"]["report"] == {"phase": "Cancelled", "failedSteps": []}
    assert "slow" not in status["outputs"]
    kube_env.kubectl(
        "wait", "--for=condition=Succeeded=False", "pipelinerun/cancel-finally-1", "--timeout=10s"
    )


# Written as a user writes it: a bare `on:` key, which kubectl's YAML 1.1 reading turns
# into the key "true" before sending the object.
BARE_ON = textwrap.dedent(
    f"""\
    apiVersion: flow.taskiq.dev/v1alpha1
    kind: Pipeline
    metadata:
      name: bare-on
    spec:
      worker:
        modules: [{TASKS}]
      inputs:
        - name: number
          default: 1
      steps:
        - name: broken
          task: {task("boom")}
          inputs: [number]
          output: value
          continueOnFailure: true
        - name: handler
          task: {task("got_none")}
          inputs: [value]
          output: handled
          dependsOn:
            - step: broken
              on: [Failed]
        - name: fine
          task: {task("double")}
          inputs: [number]
          output: doubled
        - name: after-fine-failed
          task: {task("double")}
          inputs: [number]
          output: unused
          dependsOn:
            - step: fine
              on: [Failed]
    ---
    apiVersion: flow.taskiq.dev/v1alpha1
    kind: PipelineRun
    metadata:
      name: bare-on-1
    spec:
      pipelineRef:
        name: bare-on
    """
)


def test_a_bare_on_key_applied_by_kubectl_means_on(kube_env: KubeEnv) -> None:
    kube_env.apply(BARE_ON)
    stored = kube_env.get("pipeline", "bare-on")["spec"]["steps"]
    # What kubectl sent: the key is "true"; the operator must read it as `on`.
    assert stored[1]["dependsOn"] == [{"step": "broken", "true": ["Failed"]}]
    kube_env.kubectl("wait", "--for=condition=Ready", "pipeline/bare-on", "--timeout=60s")

    status = wait_succeeded(kube_env, "bare-on-1")["status"]
    phases = {name: step["phase"] for name, step in status["steps"].items()}
    assert phases == {
        "broken": "Failed",
        # Waits for broken's failure, and gets None for its missing output.
        "handler": "Succeeded",
        "fine": "Succeeded",
        # Waits for a failure of fine that does not happen.
        "after-fine-failed": "Skipped",
    }
    assert status["outputs"]["handled"] == {"missing": True}
    assert status["outputs"]["doubled"] == 2
    assert "unused" not in status["outputs"]
