"""The three drivers a scenario runs on, each reducing its run to a record.

- in-process: ``taskiq-flow run FILES -o json``, a subprocess as a user runs it;
- broker: the same with ``--broker redis://...`` and real ``taskiq-flow worker``
  processes for the pipeline's queue (``WorkerPools``);
- operator: the Pipeline and a uniquely named PipelineRun applied to a real API server
  with the operator running (tests/kube's ``KubeEnv``); the record is read from the
  finished PipelineRun's status.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskiq_flow_operator.deployments import deployment_name
from tests.conformance.conformance_tasks import REDIS_ENV
from tests.conformance.records import Record, record_from_status, refused_record
from tests.conformance.scenarios import ROOT, Scenario
from tests.kube import KubeEnv
from tests.workers import WorkerProcesses

__all__ = [
    "CLI_TIMEOUT",
    "OperatorDriver",
    "WorkerPools",
    "run_cli",
]

CLI_TIMEOUT = 60.0
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
WORKERS_PER_QUEUE = 2
WORKER_READY_TIMEOUT = 30.0
# The garbage collector deletes a Deployment once it processes its owner's deletion; on
# a loaded 2-core host its queue once took over 30 s. Only a slow collector waits longer.
COLLECTED_TIMEOUT = 120.0
RUN_TIMEOUT = 120.0
FINISHED = {"Succeeded", "Failed", "Cancelled"}


# -- the CLI (in-process and broker) -------------------------------------------------------


def run_cli(
    scenario: Scenario,
    driver: str,
    env: Mapping[str, str],
    broker: str | None = None,
) -> Record:
    """``taskiq-flow run`` on the scenario's files, reduced to a record.

    Exit 2 (refused before anything ran: a manifest problem, an unknown task) has no
    status to read and is recorded as a refusal.
    """
    inputs = scenario.fresh_inputs(driver)
    command = [sys.executable, "-m", "taskiq_flow.cli.main", "run", *map(str, scenario.files)]
    command += ["-o", "json", "--progress", "none"]
    for name, value in inputs.items():
        command += ["--input", f"{name}={value}"]
    if broker is not None:
        command += ["--broker", broker]
    completed = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
        env={**os.environ, **env},
    )
    output = completed.stdout + completed.stderr
    # Whatever the outcome, a user gets a message, never a traceback.
    assert "Traceback" not in output, output
    if completed.returncode == EXIT_INVALID:
        return refused_record()
    assert completed.returncode in (EXIT_OK, EXIT_FAILED), (
        f"taskiq-flow run exited {completed.returncode}:\n{output}"
    )
    document = json.loads(completed.stdout)
    return record_from_status(document["status"], document["outputs"], inputs)


# -- worker processes for the broker driver ------------------------------------------------


@dataclass
class WorkerPools:
    """``taskiq-flow worker`` processes, one pool per queue, shared by the scenarios that
    use the queue (the error-mode scenarios share one Pipeline).

    Starting a worker costs about two seconds of CPU (the worker and the child it forks
    each import taskiq and taskiq-flow), so the pools of the next scenarios
    start while the current one runs (``prestart``) and a pool is killed as soon as no
    scenario still to run needs its queue (``release``).
    """

    redis_url: str
    logs: Path
    env: Mapping[str, str]
    pools: dict[str, WorkerProcesses] = field(default_factory=dict)

    def start(self, scenario: Scenario) -> WorkerProcesses:
        """The pool of the scenario's queue, started if it is not running yet."""
        queue = scenario.queue
        if queue not in self.pools:
            command = [sys.executable, "-m", "taskiq_flow.cli.main", "worker", *scenario.modules]
            command += ["--broker", self.redis_url, "--queue", queue, "--concurrency", "10"]
            # INFO: "Listening started" is how readiness shows (see ``wait_ready``).
            command += ["--log-level", "INFO"]
            for directory in scenario.module_dirs:
                command += ["--path", str(directory)]
            pool = WorkerProcesses()
            name = queue.replace(":", "-")
            pool.spawn(command, self.env, self.logs, name, WORKERS_PER_QUEUE)
            self.pools[queue] = pool
        return self.pools[queue]

    def prestart(self, scenarios: Sequence[Scenario]) -> None:
        for scenario in scenarios:
            self.start(scenario)

    def wait_ready(self, scenario: Scenario) -> WorkerProcesses:
        """Start the pool if needed and wait until each worker reads the stream.

        A run sent earlier would wait for the workers anyway (the consumer group starts
        at the beginning of the stream), but the wait would count against the steps'
        ``timeoutSeconds``: the timeout scenarios would then measure the workers'
        start-up, not the rule.
        """
        pool = self.start(scenario)
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while True:
            logs = [path.read_text(errors="replace") for path in pool.logs]
            if all("Listening started" in log for log in logs):
                return pool
            dead = [p for p in pool.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = "exited" if dead else f"not listening after {WORKER_READY_TIMEOUT}s"
                raise AssertionError(f"workers for {scenario.queue} {why}:\n" + "\n".join(logs))
            time.sleep(0.05)  # polling the logs, with the deadline above

    def release(self, queue: str) -> None:
        """Kill the queue's pool: its runs are finished, nothing in flight matters."""
        pool = self.pools.pop(queue, None)
        if pool is not None:
            for process in pool.processes:
                pool.kill(process)

    def close(self) -> None:
        for queue in list(self.pools):
            self.release(queue)


# -- the operator ---------------------------------------------------------------------------


def _worker_env(pipeline: dict[str, Any], extra: Mapping[str, str]) -> None:
    """Add ``extra`` to the Pipeline's worker pod environment (over equal names)."""
    worker = pipeline["spec"].setdefault("worker", {})
    env = [e for e in worker.get("env") or [] if e.get("name") not in extra]
    worker["env"] = env + [{"name": name, "value": value} for name, value in extra.items()]


@dataclass
class OperatorDriver:
    """Runs scenarios as PipelineRuns in one namespace of the test cluster.

    Each Pipeline gets ``WORKERS_PER_QUEUE`` worker pods for good (``replicas`` min =
    max), started before its run and awaited like the broker driver's workers: the
    pods' start-up must not count against ``timeoutSeconds``, and both Redis drivers
    then run on the same number of workers. A Pipeline no later scenario needs is
    deleted, which takes its pods away.
    """

    env: KubeEnv
    redis_url: str
    last_run: str | None = None

    # Manifests go to kubectl as JSON (dicts), never re-dumped as YAML: kubectl reads YAML
    # 1.1, where a plain `n` or `y` is a boolean that PyYAML would leave unquoted.
    def _pipelines(self, scenario: Scenario) -> list[dict[str, Any]]:
        documents = []
        for pipeline in scenario.pipelines:
            document = copy.deepcopy(pipeline)
            # The tasks' counters live in the suite's Redis, as for the other drivers.
            _worker_env(document, {REDIS_ENV: self.redis_url})
            replicas = {"min": WORKERS_PER_QUEUE, "max": WORKERS_PER_QUEUE}
            document["spec"]["worker"]["replicas"] = replicas
            documents.append(document)
        return documents

    def _run(self, scenario: Scenario, name: str, inputs: Mapping[str, str]) -> dict[str, Any]:
        run = copy.deepcopy(scenario.run)
        metadata = run.setdefault("metadata", {})
        metadata.pop("generateName", None)
        # One namespace for every scenario: each run gets a name of its own.
        metadata["name"] = name
        run["spec"]["inputs"] = {**(run["spec"].get("inputs") or {}), **inputs}
        return run

    def prepare(self, scenarios: Sequence[Scenario]) -> None:
        """Apply the scenarios' Pipelines: their pods start while earlier runs go on."""
        for scenario in scenarios:
            self.env.apply(*self._pipelines(scenario))

    def wait_ready(self, scenario: Scenario) -> None:
        """Wait until the Pipeline's worker pods all read their queue."""
        deployment = deployment_name(scenario.pipeline["metadata"]["name"])
        pods = self.env.kubelet.pods
        deadline = time.monotonic() + WORKER_READY_TIMEOUT
        while True:
            running = [pod for pod in pods.pods.get(deployment, []) if pod.alive]
            logs = [pod.output() for pod in running]
            if len(running) >= WORKERS_PER_QUEUE and all("Listening started" in x for x in logs):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(running)} worker pods of {deployment} listening after "
                    f"{WORKER_READY_TIMEOUT}s:\n" + "\n".join(logs)
                )
            time.sleep(0.05)  # polling the pods' logs, with the deadline above

    def _kill_pods(self, deployment: str) -> None:
        # SIGKILL, as `kubectl delete pod --force --grace-period=0`: the pods are idle
        # (their runs finished), and the test kubelet's graceful stop waits its full
        # timeout on each idle worker, one pod after another, blocking every other
        # Deployment's pods meanwhile.
        for pod in self.env.kubelet.pods.pods.get(deployment, []):
            pod.kill()

    def release(self, scenario: Scenario) -> None:
        """Delete the scenario's Pipeline; its Deployment goes (garbage collection) and
        its pods with it."""
        name = scenario.pipeline["metadata"]["name"]
        deployment = deployment_name(name)
        path = f"/apis/apps/v1/namespaces/{self.env.namespace}/deployments/{deployment}"
        kubelet = self.env.kubelet
        # Paused, the kubelet cannot restart the killed pods while the Deployment exists.
        kubelet.paused = True
        try:
            self.env.kubectl("delete", "pipeline", name, "--wait=false")
            deadline = time.monotonic() + COLLECTED_TIMEOUT
            while (found := self.env.cluster.api.get(path)) is not None:
                if found["metadata"].get("deletionTimestamp"):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"Deployment {deployment} still there: {found}")
                time.sleep(0.05)  # polling the API server, with the deadline above
            self._kill_pods(deployment)
        finally:
            kubelet.paused = False

    def close(self) -> None:
        """Kill every worker pod left, before the environment stops (see ``_kill_pods``)."""
        self.env.kubelet.paused = True
        for deployment in list(self.env.kubelet.pods.pods):
            self._kill_pods(deployment)

    def run(self, scenario: Scenario) -> Record:
        """Apply the scenario's run, wait for it to finish, return its record."""
        inputs = scenario.fresh_inputs("operator")
        name = self.last_run = f"{scenario.name[:50]}-{uuid.uuid4().hex[:6]}"
        pipeline = scenario.pipeline["metadata"]["name"]
        self.env.apply(*self._pipelines(scenario), self._run(scenario, name, inputs))
        api = self.env.cluster.api
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            # The REST API, not kubectl: a poll every 0.2 s must stay cheap on 2 cores.
            status = (api.get(self.env.path("pipelineruns", name)) or {}).get("status") or {}
            phase = status.get("phase")
            if phase in FINISHED:
                if phase == "Failed" and not status.get("steps"):
                    # Failed before any step ran (the operator's rejected run): what the
                    # CLI's exit 2 is.
                    return refused_record()
                return record_from_status(status, status.get("outputs"), inputs)
            found = api.get(self.env.path("pipelines", pipeline)) or {}
            if (found.get("status") or {}).get("phase") == "Invalid" and phase is not None:
                # The operator judged the Pipeline invalid, so the run never starts: a
                # refusal, with the run's phase as it stays.
                record = refused_record()
                record["phase"] = str(phase)
                return record
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"PipelineRun {name} not finished after {RUN_TIMEOUT}s: "
                    + json.dumps(status, indent=2)
                )
            time.sleep(0.2)  # polling the API server, with the deadline above
