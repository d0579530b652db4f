"""Fixtures shared by every test: a real Redis server, the cluster tier's control plane
(tests/kube). The opt-in for tests/e2e."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import running_redis

# kube_cluster and kube_env, for tests/cluster and tests/conformance (a plugin so that
# any directory can use them).
pytest_plugins = ("tests.kube.plugin",)

E2E_DIR = Path(__file__).parent / "e2e"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="Also collect tests/e2e (a real cluster; see tests/README.md). "
        "Same as TASKIQ_FLOW_E2E=1.",
    )


def e2e_enabled(config: pytest.Config) -> bool:
    """Whether the real-cluster suite was asked for (--e2e or TASKIQ_FLOW_E2E=1)."""
    return bool(config.getoption("--e2e")) or os.environ.get("TASKIQ_FLOW_E2E") == "1"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    # Not collected at all unless opted in (collect_ignore_glob is read at import time,
    # before the options are known; this hook sees them).
    if not e2e_enabled(config) and collection_path.is_relative_to(E2E_DIR):
        return True
    return None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """One real Redis server for the whole session; yields its URL."""
    with running_redis() as url:
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's Redis server, emptied before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server
