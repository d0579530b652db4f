"""A Kubernetes emulator (kmock over HTTP), the operator process, and a fake kubelet.

kmock stores objects as plain JSON; ``FilledEmulator`` fills in what a real API server
would: ``uid``, ``resourceVersion``, ``generation`` and ``creationTimestamp``
(tests/README.md lists every gap). The "kubelet" starts real worker processes with the
exact command, arguments and environment of each Deployment the operator wrote, as many
as its ``spec.replicas`` (``tests.kube.pods``, shared with the cluster tier).

What kmock cannot check is checked by tests/cluster against a real kube-apiserver:
schema validation and defaulting, printer columns as ``kubectl get`` shows them, real
uids and generations, Events as ``kubectl get events`` lists them, garbage collection
through ``ownerReferences``, finalizers and deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import aiohttp.web
import kmock
from kmock._internal import enums

from tests.kube import processes as kube_processes
from tests.kube.pods import Pods

# Moved to tests/kube (the cluster tier runs them too); still importable from here.
from tests.kube.pods import container_env as container_env
from tests.kube.processes import ROOT as ROOT
from tests.kube.processes import Process as Process
from tests.kube.processes import free_port as free_port

GROUP = "flow.taskiq.dev/v1alpha1"
NAMESPACE = "tf-test"
T = TypeVar("T")

_versions = itertools.count(1)


class FilledEmulator(kmock.KubernetesEmulator):
    """kmock with the metadata a real API server fills in.

    Events are kept in ``posted_events`` instead of kmock's object store: kmock scans
    every stored object on every request, and Events pile up (one to a few per run).
    """

    posted_events: list[dict[str, Any]]

    async def _handle(self, request: Any) -> Any:
        data = request.data
        if (
            request.resource is not None
            and request.resource.plural == "events"
            and request.action == enums.action.CREATE
            and isinstance(data, dict)
        ):
            if not hasattr(self, "posted_events"):
                self.posted_events = []
            self.posted_events.append(data)
            return aiohttp.web.json_response(data, status=201)
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault(
                    "creationTimestamp",
                    datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                )
                if request.namespace and "namespace" not in meta:
                    meta["namespace"] = request.namespace
            if request.action in (enums.action.CREATE, enums.action.UPDATE):
                meta["resourceVersion"] = str(next(_versions))
                if (
                    request.action == enums.action.UPDATE
                    and request.subresource is None
                    and "spec" in data
                    and request.name is not None
                ):
                    key = (request.resource, request.namespace, request.name)
                    current = self.objects[key] if key in self.objects else None  # noqa: SIM401
                    if current is not None and not current.deleted:
                        generation = current.raw.get("metadata", {}).get("generation", 1)
                        meta["generation"] = generation + 1
        return await super()._handle(request)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """What discovery reports: our CRDs, Deployments, Events, kopf's peering."""
    for plural, kind, short in (
        ("pipelines", "Pipeline", "tfp"),
        ("pipelineruns", "PipelineRun", "tfpr"),
    ):
        info = emulator.resources[f"{GROUP}/{plural}"]
        info.kind = kind
        info.namespaced = True
        info.singular = kind.lower()
        info.shortnames = {short}
        info.categories = {"taskiq-flow"}
        info.subresources = {"status"}
        info.verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
    for key, kind in (
        ("apps/v1/deployments", "Deployment"),
        ("v1/events", "Event"),
        # kopf's peering (HA, with --peering and --namespace): a KopfPeering per namespace.
        ("kopf.dev/v1/kopfpeerings", "KopfPeering"),
    ):
        info = emulator.resources[key]
        info.kind = kind
        info.namespaced = True
        info.verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
    # kopf waits for these in discovery even with scanning disabled (kmock gap: it cannot
    # create cluster-scoped core objects over HTTP, so the namespace itself cannot exist).
    for key, kind in (
        ("v1/namespaces", "Namespace"),
        ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition"),
    ):
        info = emulator.resources[key]
        info.kind = kind
        info.namespaced = False
        info.verbs = {"get", "list", "watch"}


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something truthy (no sleeps as synchronisation)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


class Cluster:
    """HTTP access to the emulator, as kubectl would use it."""

    def __init__(self, emulator: FilledEmulator, url: str) -> None:
        self.emulator = emulator
        self.url = url.rstrip("/")
        self.session = aiohttp.ClientSession()

    def path(self, plural: str, name: str | None = None) -> str:
        group = {
            "deployments": "apis/apps/v1",
            "events": "api/v1",
            "kopfpeerings": "apis/kopf.dev/v1",
        }.get(plural, f"apis/{GROUP}")
        base = f"{self.url}/{group}/namespaces/{NAMESPACE}/{plural}"
        return base if name is None else f"{base}/{name}"

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        body = json.loads(json.dumps(body))
        body.setdefault("metadata", {})["namespace"] = NAMESPACE
        async with self.session.post(self.path(plural), json=body) as response:
            assert response.status < 400, await response.text()
            created: dict[str, Any] = await response.json()
            return created

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        async with self.session.get(self.path(plural, name)) as response:
            if response.status == 404:
                return None
            assert response.status < 400, await response.text()
            found: dict[str, Any] = await response.json()
            return found

    async def list(self, plural: str) -> list[dict[str, Any]]:
        async with self.session.get(self.path(plural)) as response:
            assert response.status < 400, await response.text()
            items: list[dict[str, Any]] = (await response.json())["items"]
            return items

    async def patch(self, plural: str, name: str, patch: dict[str, Any]) -> None:
        async with self.session.patch(
            self.path(plural, name),
            data=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            assert response.status < 400, await response.text()

    async def delete(self, plural: str, name: str) -> None:
        async with self.session.delete(self.path(plural, name)) as response:
            assert response.status < 400 or response.status == 404, await response.text()

    async def events_for(self, name: str) -> list[dict[str, Any]]:
        return [
            e
            for e in getattr(self.emulator, "posted_events", [])
            if e.get("involvedObject", {}).get("name") == name
            and e.get("source", {}).get("component") == "taskiq-flow-operator"
        ]

    async def wait_run(self, name: str, phases: set[str], timeout: float = 60.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            run = await self.get("pipelineruns", name)
            if run and (run.get("status") or {}).get("phase") in phases:
                return run
            return None

        return await eventually(probe, timeout, f"run {name} to be {phases}")

    async def close(self) -> None:
        await self.session.close()


class Operator(kube_processes.Operator):
    """``python -m taskiq_flow_operator`` against the emulator, in namespace ``tf-test``."""

    def __init__(
        self,
        kubeconfig: Path,
        redis_url: str,
        logs: Path,
        *,
        verbose: bool = True,
        name: str = "operator",
        args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(
            kubeconfig,
            redis_url,
            logs,
            namespace=NAMESPACE,
            verbose=verbose,
            name=name,
            args=args,
        )


class Kubelet:
    """Runs each Deployment's worker pods as real processes, ``spec.replicas`` of them
    (``tests.kube.pods.Pods``, fed from the emulator)."""

    def __init__(self, cluster: Cluster, logs: Path) -> None:
        self.cluster = cluster
        self.logs = logs
        self._pods = Pods(logs)
        # The same dicts as Pods keeps: scenarios read them.
        self.pods = self._pods.pods
        self.started = self._pods.started
        self.max_seen = self._pods.max_seen
        self.commands = self._pods.commands
        self._task: asyncio.Task[None] | None = None
        self.paused = False

    async def _sync(self) -> None:
        self._pods.sync(await self.cluster.list("deployments"))

    async def run(self) -> None:
        while True:
            if not self.paused:
                with contextlib.suppress(aiohttp.ClientError):
                    await self._sync()
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    def running(self, deployment: str) -> int:
        return self._pods.running(deployment)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._pods.stop_all()


@contextlib.asynccontextmanager
async def emulated_cluster() -> AsyncIterator[tuple[FilledEmulator, str]]:
    """kmock serving HTTP on a local port."""
    emulator = FilledEmulator()
    declare_resources(emulator)
    async with emulator, kmock.Server(emulator) as server:
        yield emulator, str(server.url)


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": url.rstrip("/")}}],
                "users": [{"name": "tester", "user": {}}],
                "contexts": [
                    {
                        "name": "kmock",
                        "context": {"cluster": "kmock", "user": "tester", "namespace": NAMESPACE},
                    }
                ],
                "current-context": "kmock",
            }
        )
    )
    return path
