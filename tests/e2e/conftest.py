"""The real-cluster suite's fixtures: tools, images, a namespace, the operator's release.

Collected only with ``pytest --e2e`` or ``TASKIQ_FLOW_E2E=1`` (tests/conftest.py). Needs a
cluster (KUBECONFIG or a current kube context) made by kind (or k3d), and ``kubectl``,
``helm``, ``docker`` and ``kind``/``k3d`` on PATH. Environment:

- ``TASKIQ_FLOW_E2E_CLUSTER``: the kind/k3d cluster to load the images into
  (default ``taskiq-flow-e2e``);
- ``TASKIQ_FLOW_E2E_TAG``: the tag of the images built here (default ``e2e``);
- ``TASKIQ_FLOW_E2E_KEEP=1``: leave the namespace and the release behind for a look.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "taskiq-flow"
CLUSTER = os.environ.get("TASKIQ_FLOW_E2E_CLUSTER", "taskiq-flow-e2e")
TAG = os.environ.get("TASKIQ_FLOW_E2E_TAG", "e2e")
KEEP = os.environ.get("TASKIQ_FLOW_E2E_KEEP") == "1"
RELEASE = "taskiq-flow-e2e"

OPERATOR_IMAGE = f"taskiq-flow-operator:{TAG}"
WORKER_IMAGE = f"taskiq-flow-worker:{TAG}"
EXAMPLES_IMAGE = f"taskiq-flow-examples:{TAG}"


def sh(
    command: Sequence[str], *, timeout: float = 300, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; fail with its output when it fails."""
    try:
        result = subprocess.run(
            list(command),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"timed out after {timeout}s: {' '.join(command)}\n{error.output}")
    if check and result.returncode != 0:
        pytest.fail(
            f"exit {result.returncode}: {' '.join(command)}\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result


@dataclass(frozen=True)
class Tools:
    """The cluster tools found on PATH."""

    loader: str  # "kind" or "k3d"

    def load(self, image: str) -> None:
        """Put a locally built image into the cluster's nodes."""
        if self.loader == "kind":
            sh(["kind", "load", "docker-image", image, "--name", CLUSTER], timeout=600)
        else:
            sh(["k3d", "image", "import", image, "--cluster", CLUSTER], timeout=600)


@pytest.fixture(scope="session")
def tools() -> Tools:
    """kubectl, helm, docker, kind or k3d, and a reachable cluster; else a clear failure."""
    bundled = REPO / ".tools" / "bin"  # `bash scripts/tools` puts helm and kubectl here
    if bundled.is_dir():
        os.environ["PATH"] = f"{os.environ.get('PATH', '')}{os.pathsep}{bundled}"
    missing = [tool for tool in ("kubectl", "helm", "docker") if shutil.which(tool) is None]
    loader = next((tool for tool in ("kind", "k3d") if shutil.which(tool)), None)
    if loader is None:
        missing.append("kind (or k3d)")
    if missing:
        pytest.fail(
            f"tests/e2e needs {', '.join(missing)} on PATH (and a kind or k3d cluster): "
            "see tests/README.md. Run it without --e2e/TASKIQ_FLOW_E2E=1 to skip it.",
            pytrace=False,
        )
    context = sh(["kubectl", "config", "current-context"], check=False, timeout=30)
    if not os.environ.get("KUBECONFIG") and context.returncode != 0:
        pytest.fail(
            "tests/e2e needs a cluster: set KUBECONFIG or a current kube context "
            f"(e.g. `kind create cluster --name {CLUSTER}`).\n{context.stderr}",
            pytrace=False,
        )
    reachable = sh(["kubectl", "version", "--output=json"], check=False, timeout=60)
    if reachable.returncode != 0:
        pytest.fail(f"the cluster does not answer:\n{reachable.stderr}", pytrace=False)
    if not (CHART / "Chart.yaml").is_file():
        pytest.fail(f"the Helm chart is missing: {CHART}", pytrace=False)
    return Tools(loader)


@pytest.fixture(scope="session")
def images(tools: Tools) -> dict[str, str]:
    """The operator, worker and examples images, built here and loaded into the cluster."""
    builds = [
        (OPERATOR_IMAGE, "operator/Dockerfile", []),
        (WORKER_IMAGE, "worker/Dockerfile", []),
        (EXAMPLES_IMAGE, "examples/Dockerfile", ["--build-arg", f"WORKER_IMAGE={WORKER_IMAGE}"]),
    ]
    for image, dockerfile, extra in builds:
        sh(["docker", "build", "-f", dockerfile, "-t", image, *extra, "."], timeout=1200)
    for image, _, _ in builds:
        tools.load(image)
    return {"operator": OPERATOR_IMAGE, "worker": WORKER_IMAGE, "examples": EXAMPLES_IMAGE}


class Kube:
    """kubectl in one namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def __call__(
        self, *args: str, timeout: float = 120, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return sh(
            ["kubectl", "--namespace", self.namespace, *args],
            timeout=timeout,
            stdin=stdin,
            check=check,
        )

    def apply(self, manifest: dict[str, Any]) -> str:
        """Apply (or, for ``generateName``, create) a manifest; returns its name."""
        verb = "create" if "generateName" in manifest["metadata"] else "apply"
        text = yaml.safe_dump(manifest, sort_keys=False)
        return self(verb, "-f", "-", "-o", "jsonpath={.metadata.name}", stdin=text).stdout

    def get(self, kind: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("get", f"{kind}/{name}", "-o", "json").stdout)
        return result

    def wait(self, what: str, condition: str, timeout: int = 300) -> None:
        """``kubectl wait``: the only way these tests wait for the cluster."""
        self("wait", what, f"--for={condition}", f"--timeout={timeout}s", timeout=timeout + 30)

    def diagnostics(self) -> str:
        """What a failed test needs to be understood: objects, events, every pod's log."""
        parts = []
        for args in (
            ["get", "all,pipelines,pipelineruns", "-o", "wide"],
            ["get", "pipelineruns", "-o", "yaml"],
            ["get", "events", "--sort-by=.lastTimestamp"],
        ):
            result = self(*args, check=False, timeout=60)
            parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
        pods = self("get", "pods", "-o", "name", check=False, timeout=60).stdout.split()
        for pod in pods:
            result = self("logs", pod, "--all-containers", "--tail=200", check=False, timeout=60)
            parts.append(f"$ kubectl logs {pod}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)


@pytest.fixture(scope="session")
def kube(tools: Tools) -> Iterator[Kube]:
    """A fresh namespace, deleted at the end (with everything in it)."""
    namespace = f"taskiq-flow-e2e-{uuid.uuid4().hex[:6]}"
    sh(["kubectl", "create", "namespace", namespace], timeout=60)
    yield Kube(namespace)
    if not KEEP:
        sh(["kubectl", "delete", "namespace", namespace, "--wait", "--timeout=300s"],
           timeout=360, check=False)  # fmt: skip


@pytest.fixture(scope="session")
def operator(images: dict[str, str], kube: Kube) -> Iterator[Kube]:
    """The chart installed in the namespace, watching it, with its bundled Redis."""
    repository, tag = images["operator"].rsplit(":", 1)
    sh(
        [
            "helm", "install", RELEASE, str(CHART),
            "--namespace", kube.namespace,
            "--set", f"image.repository={repository}",
            "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=IfNotPresent",
            "--set", "redis.bundled.enabled=true",
            "--set", f"watchNamespaces={{{kube.namespace}}}",
            "--wait", "--timeout", "5m",
        ],
        timeout=420,
    )  # fmt: skip
    yield kube
    if KEEP:
        return
    # Runs and pipelines go first, while the operator can still clear their finalizers.
    kube("delete", "pipelineruns,pipelines", "--all", "--wait", "--timeout=120s",
         timeout=180, check=False)  # fmt: skip
    sh(["helm", "uninstall", RELEASE, "--namespace", kube.namespace, "--wait"],
       timeout=300, check=False)  # fmt: skip


_KUBE = pytest.StashKey[Kube]()


@pytest.fixture(autouse=True)
def _remember_namespace(request: pytest.FixtureRequest) -> None:
    if "operator" in request.fixturenames:
        request.node.stash[_KUBE] = request.getfixturevalue("kube")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    kube = item.stash.get(_KUBE, None)
    if report.failed and kube is not None and call.when == "call":
        report.sections.append(("cluster", kube.diagnostics()))
