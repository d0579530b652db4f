"""Worker pods as local processes: what a Deployment controller and a kubelet would run.

Both test tiers that run the operator (kmock in tests/operator, a real API server in
tests/cluster) have no kubelet, so ``Pods`` starts each Deployment's pods itself: real
processes with exactly the command, arguments and environment of the Deployment's
container, as many as its ``spec.replicas``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.kube.processes import ROOT, Process


def container_env(
    container: Mapping[str, Any], image_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a kubelet gives the container (literal values only).

    ``image_env`` stands for the image's own environment (Dockerfile ``ENV``): the
    container's entries override it, as in a pod.
    """
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        **(image_env or {}),
    }
    for entry in container.get("env") or []:
        assert "value" in entry, f"the test kubelet cannot resolve {entry}"
        env[entry["name"]] = entry["value"]
    return env


def _tmp_is_empty_dir(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> bool:
    """Whether the container mounts an ``emptyDir`` volume at ``/tmp`` (the worker
    Deployment does: its root filesystem is read-only)."""
    empty = {v["name"] for v in pod_spec.get("volumes") or [] if "emptyDir" in v}
    return any(
        m.get("mountPath") == "/tmp" and m.get("name") in empty
        for m in container.get("volumeMounts") or []
    )


class Pods:
    """The pods of a set of Deployments, kept in line with them by ``sync``.

    A changed pod template replaces every pod; a Deployment that is gone or being
    deleted loses its pods. A pod that goes is terminated as a kubelet does it, without
    blocking the next sync: SIGTERM to its main process, SIGKILL to all of it once that
    exits or after ``terminationGracePeriodSeconds``. Each pod gets a private ``/tmp``
    (as ``$TMPDIR``) when its container mounts an ``emptyDir`` there.
    """

    def __init__(
        self, logs: Path, *, image_env: Mapping[str, str] | None = None, cwd: Path = ROOT
    ) -> None:
        self.logs = logs
        self.image_env = dict(image_env or {})
        self.cwd = cwd
        self.pods: dict[str, list[Process]] = {}
        self.started: dict[str, int] = {}
        self.max_seen: dict[str, int] = {}
        self.commands: dict[str, list[str]] = {}
        self._templates: dict[str, str] = {}
        self._terminating: list[tuple[Process, float]] = []  # (pod, SIGKILL deadline)

    def sync(self, deployments: Iterable[Mapping[str, Any]]) -> None:
        """Start or stop pods until each Deployment has ``spec.replicas`` running."""
        seen: set[str] = set()
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            seen.add(name)
            deleting = bool(deployment["metadata"].get("deletionTimestamp"))
            wanted = 0 if deleting else int(deployment["spec"].get("replicas") or 0)
            self._scale(name, deployment["spec"]["template"]["spec"], wanted)
        for name in set(self.pods) - seen:
            self._scale(name, None, 0)
        self._reap()

    def _terminate(self, pod: Process, pod_spec: Mapping[str, Any] | None) -> None:
        grace = float((pod_spec or {}).get("terminationGracePeriodSeconds", 30))
        pod.terminate()
        self._terminating.append((pod, time.monotonic() + grace))

    def _reap(self) -> None:
        now = time.monotonic()
        for pod, deadline in list(self._terminating):
            if not pod.alive or now > deadline:
                pod.kill()
                self._terminating.remove((pod, deadline))

    def _scale(self, name: str, pod_spec: Mapping[str, Any] | None, wanted: int) -> None:
        pods = self.pods.setdefault(name, [])
        for exited in [p for p in pods if not p.alive]:
            exited.kill()  # a crashed pod: reap it and whatever it forked
        pods = [p for p in pods if p.alive]
        if pod_spec is not None:
            template = json.dumps(pod_spec, sort_keys=True)
            if self._templates.get(name, template) != template:
                for pod in pods:
                    self._terminate(pod, pod_spec)
                pods = []
            self._templates[name] = template
            container = pod_spec["containers"][0]
            env = container_env(container, self.image_env)
            argv = [
                shutil.which(container["command"][0], path=env["PATH"]) or container["command"][0],
                *container["args"],
            ]
            self.commands[name] = argv
            while len(pods) < wanted:
                self.started[name] = self.started.get(name, 0) + 1
                pod_name = f"{name}-{self.started[name]}"
                pod_env = dict(env)
                if _tmp_is_empty_dir(pod_spec, container):
                    tmp = self.logs / f"{pod_name}.tmp"
                    tmp.mkdir()
                    pod_env["TMPDIR"] = str(tmp)
                pods.append(Process(argv, pod_env, self.logs / f"{pod_name}.log", self.cwd))
        while len(pods) > wanted:
            self._terminate(pods.pop(), pod_spec)
        self.pods[name] = pods
        self.max_seen[name] = max(self.max_seen.get(name, 0), len(pods))

    def running(self, deployment: str) -> int:
        """How many pods of ``deployment`` are alive."""
        return len([p for p in self.pods.get(deployment, []) if p.alive])

    def stop_all(self) -> None:
        """SIGKILL every pod: the end of a test, nothing to wait for."""
        for pods in self.pods.values():
            for pod in pods:
                pod.kill()
        for pod, _ in self._terminating:
            pod.kill()
        self._terminating.clear()
