"""One namespace of the test cluster: the operator watching it, and a kubelet for it.

``start_kube_env`` creates the namespace (with kubectl), starts the operator as a real
process (``python -m taskiq_flow_operator --namespace <ns>``, as the kmock tier does) and
a thread that plays the kubelet: it polls the namespace's Deployments and runs their
worker pods as local processes (``tests.kube.pods``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.kube.api import ApiError, KubeApi
from tests.kube.cluster import KubeCluster
from tests.kube.pods import Pods
from tests.kube.processes import ROOT, Operator

GROUP = "flow.taskiq.dev"
VERSION = "v1alpha1"
FINISHED = frozenset({"Succeeded", "Failed", "Cancelled"})

# Worker pods run as if on the examples image (examples/Dockerfile): the examples' task
# modules are importable by their bare names (`modules: [etl_tasks]`). The repository
# is the pod's working directory, so the tests' own task modules import too.
EXAMPLES_IMAGE_ENV = {
    "PYTHONPATH": os.pathsep.join(
        str(d) for d in sorted(ROOT.glob("examples/*")) if any(d.glob("*.py"))
    )
}

Manifest = str | Path | Mapping[str, Any]


class Kubelet:
    """Keeps the pods of one namespace's Deployments running, polling the API server.

    Set ``paused`` to stop reconciling: pods neither start nor stop, as in a cluster
    with no node to schedule them on (e.g. to keep steps queued).
    """

    def __init__(self, api: KubeApi, namespace: str, pods: Pods, interval: float = 0.2) -> None:
        self.api = api
        self.path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        self.pods = pods
        self.interval = interval
        self.paused = False
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{namespace}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(30)
        self.pods.stop_all()

    def running(self, deployment: str) -> int:
        """How many pods of ``deployment`` are alive."""
        return self.pods.running(deployment)

    def _loop(self) -> None:
        # A poll interval, not a synchronisation: the tests wait on what the pods do.
        while not self._stopping.wait(self.interval):
            if self.paused:
                continue
            try:
                self.pods.sync(self.api.items(self.path))
                self.last_error = None
            except (OSError, ApiError) as error:  # the next poll tries again
                self.last_error = repr(error)


def manifest_text(manifest: Manifest) -> str:
    """YAML text for ``kubectl -f -``: a file's contents, text as is, a dict as JSON."""
    if isinstance(manifest, Path):
        return manifest.read_text()
    if isinstance(manifest, str):
        return manifest
    return json.dumps(manifest)


@dataclass
class KubeEnv:
    """A namespace with the operator and the kubelet running; kubectl scoped to it."""

    cluster: KubeCluster
    namespace: str
    redis_url: str
    logs: Path
    operator: Operator
    kubelet: Kubelet
    # Set by kill_operator: wait_run then does not take the operator's absence for a crash.
    _operator_killed: bool = field(default=False, repr=False)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl -n <namespace> ARGS``; ``check`` raises with kubectl's stderr."""
        return self.cluster.kubectl(*args, input=input, check=check, namespace=self.namespace)

    def apply(self, *manifests: Manifest, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl apply`` of files (``Path``), YAML texts or dicts, in one call."""
        text = "\n---\n".join(manifest_text(m) for m in manifests)
        return self.kubectl("apply", "-f", "-", input=text, check=check)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """``kubectl get KIND NAME -o json`` (any kind name kubectl knows: tfpr, deploy)."""
        found: dict[str, Any] = json.loads(self.kubectl("get", kind, name, "-o", "json").stdout)
        return found

    def exists(self, kind: str, name: str) -> bool:
        result = self.kubectl("get", kind, name, "--ignore-not-found", "-o", "name")
        return bool(result.stdout.strip())

    def path(self, plural: str, name: str = "") -> str:
        """The REST path of our custom resources in this namespace, for ``cluster.api``."""
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{plural}"
        return f"{base}/{name}" if name else base

    def wait_run(self, name: str, timeout: float = 120) -> dict[str, Any]:
        """The PipelineRun once its phase is Succeeded, Failed or Cancelled.

        Fails at once if the operator exited (unless ``kill_operator`` killed it), and
        on timeout with the run's status and the end of the operator's log.
        """
        path = self.path("pipelineruns", name)
        deadline = time.monotonic() + timeout
        while True:
            # The REST API rather than kubectl: a poll costs a request, not a process.
            found = self.cluster.api.get(path)
            status = (found or {}).get("status") or {}
            if found is not None and status.get("phase") in FINISHED:
                return found
            if not self.operator.running and not self._operator_killed:
                raise AssertionError(f"the operator exited:\n{self.operator_log()[-6000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"run {name} did not finish in {timeout}s; "
                    f"status: {json.dumps(status, indent=2) if found else 'no such run'}\n"
                    f"--- operator log (tail):\n{self.operator_log()[-6000:]}"
                )
            time.sleep(0.2)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The Events about object ``name``, as ``kubectl get events`` lists them."""
        selector = f"involvedObject.name={name}"
        found = json.loads(
            self.kubectl("get", "events", "--field-selector", selector, "-o", "json").stdout
        )
        items: list[dict[str, Any]] = found["items"]
        return items

    def operator_log(self) -> str:
        """Everything the operator logged, across restarts."""
        return self.operator.output()

    def kill_operator(self) -> None:
        """SIGKILL the operator: it writes nothing on the way out."""
        self._operator_killed = True
        self.operator.kill()

    def restart_operator(self) -> None:
        """Start the operator again (stopping it first if it still runs)."""
        if self.operator.running:
            self.operator.stop()
        self._operator_killed = False
        self.operator.start()

    def diagnostics(self) -> str:
        """What a failed test needs to be understood: the objects and the Events."""
        parts = []
        for args in (
            ("get", "pipelines,pipelineruns,deployments", "-o", "wide"),
            ("get", "pipelineruns", "-o", "yaml"),
            ("get", "events", "--sort-by=.lastTimestamp"),
        ):
            result = self.kubectl(*args, check=False)
            parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)


@contextlib.contextmanager
def start_kube_env(
    cluster: KubeCluster, namespace: str, redis_url: str, logs_dir: Path
) -> Iterator[KubeEnv]:
    """Create ``namespace``, run the operator and the kubelet in it; stop them, and
    delete the namespace, at the end. Logs (operator, each pod) go to ``logs_dir``."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    cluster.kubectl("create", "namespace", namespace)
    operator = Operator(cluster.kubeconfig, redis_url, logs_dir, namespace=namespace)
    kubelet = Kubelet(cluster.api, namespace, Pods(logs_dir, image_env=EXAMPLES_IMAGE_ENV))
    env = KubeEnv(cluster, namespace, redis_url, logs_dir, operator, kubelet)
    operator.start()
    kubelet.start()
    try:
        yield env
    finally:
        operator.stop()
        kubelet.stop()
        # Not waited for: the next test has a namespace of its own. Runs whose finalizer
        # the stopped operator can no longer release keep it Terminating; the cluster
        # goes at the end of the session anyway.
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
