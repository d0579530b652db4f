"""Manifests and waits shared by the cluster tests."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import redis

from tests.kube import KubeEnv, eventually
from tests.operator.pipelines import dataflow_spec

API_VERSION = "flow.taskiq.dev/v1alpha1"


def pipeline(name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Pipeline",
        "metadata": {"name": name},
        "spec": spec or dataflow_spec(),
    }


def run(name: str, pipeline_name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": pipeline_name}, **spec},
    }


def count(client: redis.Redis, step: str) -> int:
    """How many times tests/operator/op_tasks.py ran ``step`` (it counts in Redis)."""
    raw = client.get(f"count:{step}")
    return int(raw) if raw else 0


def ready_pipeline(env: KubeEnv, name: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply a Pipeline and wait until ``kubectl wait`` sees it Ready."""
    env.apply(pipeline(name, spec))
    env.kubectl("wait", "--for=condition=Ready", f"pipeline/{name}", "--timeout=60s")
    return env.get("pipeline", name)


# Under pytest-timeout's 120 s per test, so that a run that hangs fails with its status
# and the operator's log rather than a bare timeout.
WAIT = 60


def wait_succeeded(env: KubeEnv, name: str, timeout: int = WAIT) -> dict[str, Any]:
    """``kubectl wait --for=condition=Succeeded pipelinerun/NAME``, as a user waits.

    A run that fails never meets the condition and kubectl would wait out its timeout;
    so the run's phase is watched alongside, and a run that ends otherwise fails the
    test at once with its status.
    """
    waiter = subprocess.Popen(
        env.cluster.kubectl_argv(
            "wait",
            "--for=condition=Succeeded",
            f"pipelinerun/{name}",
            f"--timeout={timeout}s",
            namespace=env.namespace,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = env.wait_run(name, timeout)
        assert done["status"]["phase"] == "Succeeded", done["status"]
        out, err = waiter.communicate(timeout=30)
        assert waiter.returncode == 0, f"kubectl wait: {err}"
        assert "condition met" in out
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    return done


def table(output: str) -> list[dict[str, str]]:
    """``kubectl get`` table output as one dict per row, keyed by column header."""
    lines = output.strip().splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=True)) for line in lines[1:]]


def reasons(env: KubeEnv, name: str, *expected: str) -> list[str]:
    """The reasons of the operator's Events about ``name``, once all of ``expected`` are
    among them (Events are posted after the status patch that ends a run)."""

    def probe() -> list[str] | None:
        found = [
            e["reason"]
            for e in env.events(name)
            if e.get("source", {}).get("component") == "taskiq-flow-operator"
        ]
        return found if all(found.count(r) >= expected.count(r) for r in expected) else None

    return eventually(probe, 15, f"events {expected} about {name}", interval=0.2)
