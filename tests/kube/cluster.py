"""A real control plane for the tests: etcd, kube-apiserver, kube-controller-manager.

No scheduler and no kubelet: pods are created but never run (``tests.kube.env`` runs
worker pods as local processes instead). The controller manager runs only what the
operator relies on: the garbage collector (``ownerReferences``), the Deployment and
ReplicaSet controllers and the namespace controller.

Everything listens on free loopback ports, so sessions on one machine do not collide.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.kube.api import KubeApi
from tests.kube.assets import KubeAssets
from tests.kube.keys import rsa_private_key_pem
from tests.kube.processes import ROOT, Process, free_port, tail

CRDS = ROOT / "crds"
STARTUP_TIMEOUT = 60.0
ADMIN = "admin"


class ClusterError(RuntimeError):
    """The control plane failed; the message carries the tails of its logs."""


class KubeCluster:
    """A running control plane with the repository's CRDs applied.

    ``kubeconfig`` authenticates as a member of ``system:masters`` with a static token;
    ``api`` is a REST client with the same credentials.
    """

    def __init__(self, assets: KubeAssets, workdir: Path) -> None:
        self.assets = assets
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(24)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.cert_dir = workdir / "apiserver-certs"
        # The apiserver writes its self-signed serving certificate and the CA that
        # signed it to this file: trusting it is what kubectl and kopf need.
        self.cafile = self.cert_dir / "apiserver.crt"
        self.kubeconfig = workdir / "kubeconfig"
        self.api = KubeApi(self.server, self.token, self.cafile)
        self.etcd_url = ""
        self.processes: dict[str, Process] = {}
        self._etcd_data: Path | None = None

    # -- kubectl ---------------------------------------------------------------------

    def kubectl_argv(self, *args: str, namespace: str | None = None) -> list[str]:
        """The command line of ``kubectl ARGS`` on this cluster (for a ``Popen``)."""
        return [
            str(self.assets.kubectl),
            "--kubeconfig",
            str(self.kubeconfig),
            # Discovery cache per cluster: ports are reused by later sessions.
            "--cache-dir",
            str(self.workdir / "kubectl-cache"),
            *(["--namespace", namespace] if namespace else []),
            *args,
        ]

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        namespace: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS`` on this cluster; ``check`` fails with kubectl's stderr."""
        result = subprocess.run(
            self.kubectl_argv(*args, namespace=namespace),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )
        return result

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._start_etcd()
        self._start_apiserver()
        self._write_kubeconfig()
        self._apply_crds()
        # After the CRDs: the garbage collector learns the resources it watches from
        # discovery at start (and only every 30 s after), and it must know Pipelines
        # and PipelineRuns to collect what they own.
        self._start_controller_manager()

    def stop(self) -> None:
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.processes:
                self.processes[name].stop(15)
        if self._etcd_data is not None:
            shutil.rmtree(self._etcd_data, ignore_errors=True)

    def log_tails(self, chars: int = 3000) -> str:
        """The end of each component's log, for an error message."""
        return "\n".join(
            f"--- {name} ({process.log}):\n{tail(process.log, chars)}"
            for name, process in self.processes.items()
        )

    def check_alive(self) -> None:
        """Raise ``ClusterError`` if a component has exited."""
        for name, process in self.processes.items():
            if not process.alive:
                raise ClusterError(
                    f"{name} exited with {process.proc.returncode}\n{self.log_tails()}"
                )

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(argv, {"PATH": "/usr/bin:/bin"}, self.logs / f"{name}.log")
        self.processes[name] = process
        return process

    def _wait(self, what: str, probe: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not probe():
            self.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} not ready after {STARTUP_TIMEOUT}s\n{self.log_tails()}")
            time.sleep(0.1)

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        # On tmpfs when there is one: etcd fsyncs every write, and nothing here needs
        # the data to survive the session.
        shm = Path("/dev/shm")
        parent = shm if shm.is_dir() and shm.stat().st_mode & 0o002 else self.workdir
        self._etcd_data = Path(tempfile.mkdtemp(prefix="taskiq-flow-etcd-", dir=parent))
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(self.assets.etcd),
                "--name=default",
                f"--data-dir={self._etcd_data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                # A single member on loopback: elect it at once (the defaults, made for
                # networks, cost a second or two at every start).
                "--heartbeat-interval=10",
                "--election-timeout=50",
                "--log-level=warn",
            ],
        )
        health = KubeApi(self.etcd_url, "", None)
        self._wait("etcd", lambda: health.healthy("/health"))

    def _start_apiserver(self) -> None:
        self.cert_dir.mkdir(exist_ok=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},{ADMIN},{ADMIN},"system:masters"\n')
        service_account_key = self.workdir / "service-account.key"
        service_account_key.write_text(rsa_private_key_pem())
        self._spawn(
            "kube-apiserver",
            [
                str(self.assets.apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--insecure-port=0",  # 1.20 still opens 8080 unless told not to
                f"--cert-dir={self.cert_dir}",
                f"--token-auth-file={tokens}",
                # Every client is the admin: the operator's RBAC is the chart's concern
                # (tests/chart), not this tier's.
                "--authorization-mode=AlwaysAllow",
                # Required by 1.20 even though no pod ever gets a token here.
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={service_account_key}",
                f"--service-account-signing-key-file={service_account_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # Pods would need a ServiceAccount, which only a controller we do not
                # run creates.
                "--disable-admission-plugins=ServiceAccount",
                # A loopback address is not a valid endpoint of the kubernetes Service.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
            ],
        )
        self._wait("kube-apiserver", lambda: self.cafile.is_file() and self.api.healthy("/readyz"))

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {
                                "server": self.server,
                                "certificate-authority": str(self.cafile),
                            },
                        }
                    ],
                    "users": [{"name": ADMIN, "user": {"token": self.token}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": ADMIN}}],
                    "current-context": "test",
                },
                indent=2,
            )
        )

    def _apply_crds(self) -> None:
        # 1.20 predates CEL: the server drops x-kubernetes-validations, and kubectl's own
        # validation would reject them as unknown fields.
        self.kubectl("apply", "--validate=false", "-f", str(CRDS))
        names = [f"crd/{p.name.removesuffix('.yaml')}" for p in sorted(CRDS.glob("*.yaml"))]
        self.kubectl(
            "wait", "--for=condition=Established", f"--timeout={STARTUP_TIMEOUT:.0f}s", *names
        )

    def _start_controller_manager(self) -> None:
        port = free_port()
        self._spawn(
            "kube-controller-manager",
            [
                str(self.assets.controller_manager),
                f"--kubeconfig={self.kubeconfig}",
                "--controllers=garbagecollector,deployment,replicaset,namespace",
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--port=0",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            ],
        )
        health = KubeApi(f"https://127.0.0.1:{port}", "", None)
        self._wait("kube-controller-manager", lambda: health.healthy("/healthz"))


@contextlib.contextmanager
def start_kube_cluster(assets: KubeAssets, workdir: Path) -> Iterator[KubeCluster]:
    """Start a control plane in ``workdir`` (its logs in ``workdir/logs``); stop it."""
    cluster = KubeCluster(assets, workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
