"""Runs the real helm binary on helm/taskiq-flow and parses what it renders."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "taskiq-flow"
RELEASE = "tf"
NAMESPACE = "flow-system"
FULLNAME = "tf-taskiq-flow"

# Values of each supported combination, as --set-json pairs (key, JSON value).
EXTERNAL_URL = {"redis.bundled.enabled": False, "redis.url": "redis://:pw@redis.example:6379/1"}
EXTERNAL_SECRET = {
    "redis.bundled.enabled": False,
    "redis.existingSecret.name": "my-redis",
    "redis.existingSecret.key": "connection",
}
NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
SERVICE_MONITOR = {"metrics.serviceMonitor.enabled": True}
PERSISTENCE = {"redis.bundled.persistence.enabled": True, "redis.bundled.persistence.size": "5Gi"}
HA = {"replicaCount": 2}
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-url": EXTERNAL_URL,
    "external-secret": EXTERNAL_SECRET,
    "namespaced": NAMESPACED,
    "service-monitor": SERVICE_MONITOR,
    "persistence": PERSISTENCE,
    "ha": HA,
    "ha-namespaced": {**HA, **NAMESPACED},
    "namespaced-external-secret": {**NAMESPACED, **EXTERNAL_SECRET},
}


def helm_binary() -> Path:
    """$HELM, or .tools/bin/helm; a missing binary fails the test (it never skips)."""
    path = Path(os.environ.get("HELM") or ROOT / ".tools" / "bin" / "helm")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"helm not found at {path}: run bash scripts/tools", pytrace=False)
    return path


@dataclass
class Helm:
    """The helm CLI on the chart."""

    binary: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``helm ARGS`` (no check: callers look at the return code)."""
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            # No repositories, plugins or caches from the developer's home.
            env={**os.environ, "HELM_CONFIG_HOME": "/nonexistent", "HELM_NO_PLUGINS": "1"},
        )

    @staticmethod
    def value_args(values: dict[str, Any]) -> list[str]:
        """--set-json for each value (JSON keeps the types: false, 2, lists)."""
        args: list[str] = []
        for key, value in values.items():
            args += ["--set-json", f"{key}={json.dumps(value)}"]
        return args

    def template_text(
        self, values: dict[str, Any] | None = None, extra: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """``helm template`` of the chart."""
        return self.run(
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            *self.value_args(values or {}),
            *extra,
        )

    def template(
        self, values: dict[str, Any] | None = None, extra: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """The rendered manifests, parsed; fails with helm's error if rendering fails."""
        result = self.template_text(values, extra)
        assert result.returncode == 0, result.stderr
        return [d for d in yaml.safe_load_all(result.stdout) if d]

    def lint(self, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
        """``helm lint --strict`` of the chart."""
        return self.run(
            "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *self.value_args(values or {})
        )


@pytest.fixture(scope="session")
def helm() -> Helm:
    """The real helm binary."""
    return Helm(helm_binary())


@pytest.fixture(scope="session")
def render(helm: Helm) -> Callable[[str], list[dict[str, Any]]]:
    """The manifests of a named combination (rendered once per session)."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def rendered(combination: str) -> list[dict[str, Any]]:
        if combination not in cache:
            cache[combination] = helm.template(COMBINATIONS[combination])
        return cache[combination]

    return rendered


def find(
    docs: Sequence[dict[str, Any]], kind: str, name: str | None = None
) -> list[dict[str, Any]]:
    """The documents of ``kind`` (and ``name``)."""
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The only document of ``kind`` (and ``name``)."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[d['kind'] for d in docs]}"
    return found[0]
