"""Fixtures of the conformance suite: the environment of every driver, worker pools for
the broker driver, an operator environment, and the records the drivers produced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.conformance_tasks import REDIS_ENV
from tests.conformance.drivers import OperatorDriver, WorkerPools
from tests.conformance.records import Record
from tests.kube import KubeCluster, start_kube_env
from tests.workers import attach_logs

Records = dict[str, dict[str, Record]]
"""Scenario name → driver → the record its run produced."""

Skips = dict[str, dict[str, str]]
"""Scenario name → driver → why its test was skipped (the cluster tier could not run)."""

_SKIPS = pytest.StashKey[Skips]()
_DRIVER_OF_TEST = {"test_in_process": "in-process", "test_broker": "broker"}
_DRIVER_OF_TEST["test_operator"] = "operator"


@pytest.fixture(scope="session")
def conformance_records() -> Records:
    """What each driver recorded, for the comparison tests that run last."""
    return {}


@pytest.fixture(scope="session")
def conformance_skips(request: pytest.FixtureRequest) -> Skips:
    """Which driver tests were skipped, and why (filled in by the report hook below)."""
    return request.config.stash.setdefault(_SKIPS, {})


@pytest.fixture(scope="module")
def conformance_redis(redis_server: str) -> str:
    """The session's Redis, never emptied during this module.

    Not ``redis_url``: it empties Redis before each test, which would delete the
    consumer groups of the worker pools and the operator's state that the module's
    scenarios share. The tasks' counters are keyed by a token per run instead.
    """
    return redis_server


@pytest.fixture(scope="module")
def cli_env(conformance_redis: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of ``taskiq-flow run`` and of the workers."""
    return {
        REDIS_ENV: conformance_redis,
        # The CLI records every run in its local store: keep it out of the home directory.
        "TASKIQ_FLOW_HOME": str(tmp_path_factory.mktemp("taskiq-flow-home")),
        "COLUMNS": "100",
    }


@pytest.fixture(scope="module")
def worker_pools(
    conformance_redis: str, cli_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPools]:
    pools = WorkerPools(conformance_redis, tmp_path_factory.mktemp("workers"), cli_env)
    try:
        yield pools
    finally:
        pools.close()


@pytest.fixture(scope="module")
def operator_driver(
    kube_cluster: KubeCluster, conformance_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorDriver]:
    """One operator environment (a namespace, the operator, its worker pods) for every
    scenario: each run has a name of its own."""
    logs: Path = tmp_path_factory.mktemp("operator-logs")
    with start_kube_env(kube_cluster, "tf-conformance", conformance_redis, logs) as env:
        driver = OperatorDriver(env, conformance_redis)
        try:
            yield driver
        finally:
            driver.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed broker test's report carries what its workers logged meanwhile, a failed
    operator test's the operator's log and its PipelineRun."""
    outcome: Any = yield
    report = outcome.get_result()
    driver_name = _DRIVER_OF_TEST.get(getattr(item, "originalname", ""))
    callspec = getattr(item, "callspec", None)
    if report.skipped and driver_name and callspec is not None:
        # tests/kube skips the cluster tier where its binaries cannot be had: the
        # comparison then says which driver did not run instead of failing for want of it.
        longrepr = report.longrepr
        reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
        skips = item.config.stash.setdefault(_SKIPS, {}).setdefault(
            str(callspec.params["scenario"]), {}
        )
        skips[driver_name] = reason.removeprefix("Skipped: ")
    if report.when == "call":
        attach_logs(item, report)
        driver = getattr(item, "funcargs", {}).get("operator_driver")
        if report.failed and isinstance(driver, OperatorDriver):
            env = driver.env
            report.sections.append(("operator log (tail)", env.operator_log()[-6000:]))
            if driver.last_run is not None:
                found = env.kubectl(
                    "get", "pipelinerun", driver.last_run, "-o", "yaml", check=False
                )
                report.sections.append(
                    (f"PipelineRun {driver.last_run}", found.stdout + found.stderr)
                )
