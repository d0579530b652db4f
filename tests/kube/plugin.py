"""The cluster tier's pytest fixtures (registered in tests/conftest.py).

- ``kube_cluster`` (session): a real etcd, kube-apiserver and kube-controller-manager
  with the repository's CRDs; one per session.
- ``kube_env`` (function): a fresh namespace of it with the operator and the kubelet.

Where the binaries cannot be had, the tier is skipped with "cluster tier did not run:
<why>" (repeated at the end of the run), or fails when it is required: ``CI`` set, or
``TASKIQ_FLOW_REQUIRE_CLUSTER=1``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.kube.assets import AssetsUnavailable, KubeAssets, find_assets
from tests.kube.cluster import KubeCluster, start_kube_cluster
from tests.kube.env import KubeEnv, start_kube_env

NOT_RUN = "cluster tier did not run"
# scripts/test points this at a file, and prints it after pytest: the last line of a run
# says the tier did not run, never a silent pass.
REPORT_ENV = "TASKIQ_FLOW_CLUSTER_REPORT"

_assets = pytest.StashKey[KubeAssets | AssetsUnavailable]()
_not_run = pytest.StashKey[str]()


def cluster_required() -> str | None:
    """Why the tier must run here (then a missing binary fails it), or ``None``."""
    if os.environ.get("TASKIQ_FLOW_REQUIRE_CLUSTER") == "1":
        return "TASKIQ_FLOW_REQUIRE_CLUSTER=1"
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        return f"CI={os.environ['CI']}"
    return None


def _resolve(config: pytest.Config) -> KubeAssets | AssetsUnavailable:
    if _assets not in config.stash:
        reporter = config.pluginmanager.get_plugin("terminalreporter")

        def announce(line: str) -> None:
            if reporter is not None:
                reporter.write_line(line)

        try:
            config.stash[_assets] = find_assets(announce)
        except AssetsUnavailable as error:
            config.stash[_assets] = error
    return config.stash[_assets]


def _uses_cluster(item: pytest.Item) -> bool:
    return "kube_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The control plane lives for the rest of the session once started: the modules
    # using it go last (whole, in their order: a module's later tests may read what
    # earlier ones recorded), so that no other test shares the two cores with it.
    modules = {item.nodeid.split("::")[0] for item in items if _uses_cluster(item)}
    later = [item for item in items if item.nodeid.split("::")[0] in modules]
    items[:] = [item for item in items if item.nodeid.split("::")[0] not in modules] + later
    # Find (or build) the binaries now, outside every test's timeout: a first build takes
    # minutes. Only when a selected test needs them (trylast: after -k/-m deselection).
    if config.option.collectonly:
        return
    if any(_uses_cluster(item) for item in items):
        _resolve(config)


@pytest.fixture(scope="session")
def kube_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """A control plane for the whole session (see tests/kube/cluster.py)."""
    found = _resolve(request.config)
    if isinstance(found, AssetsUnavailable):
        required = cluster_required()
        if required is not None:
            pytest.fail(f"{NOT_RUN} and it is required ({required}): {found}", pytrace=False)
        request.config.stash[_not_run] = str(found)
        pytest.skip(f"{NOT_RUN}: {found}")
    with start_kube_cluster(found, tmp_path_factory.mktemp("kube-cluster")) as cluster:
        yield cluster


def namespace_for(test_name: str) -> str:
    """A namespace name of the test's name and a random suffix (DNS label rules)."""
    base = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
    return f"{base[:50].rstrip('-')}-{secrets.token_hex(3)}"


@pytest.fixture
def kube_env(
    kube_cluster: KubeCluster,
    redis_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[KubeEnv]:
    """A fresh namespace with the operator and the kubelet running in it."""
    namespace = namespace_for(request.node.name.removeprefix("test_"))
    with start_kube_env(kube_cluster, namespace, redis_url, tmp_path / "logs") as env:
        yield env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure: the operator's and pods' logs, the namespace's objects and Events."""
    report = yield
    env = getattr(item, "funcargs", {}).get("kube_env")
    if report.when == "call" and report.failed and isinstance(env, KubeEnv):
        for log in sorted(env.logs.glob("*.log")):
            report.sections.append((f"log {log.name}", log.read_text(errors="replace")[-6000:]))
        report.sections.append(("cluster objects", env.diagnostics()))
        if env.kubelet.last_error:
            report.sections.append(("kubelet", env.kubelet.last_error))
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    why = config.stash.get(_not_run, None)
    if why is None:
        return
    line = f"{NOT_RUN}: {why}"
    terminalreporter.write_line(line, yellow=True, bold=True)
    report = os.environ.get(REPORT_ENV)
    if report:
        Path(report).write_text(line + "\n")
