"""Where the cluster tier's binaries come from.

etcd, kube-apiserver and kube-controller-manager are found the envtest way: the
directory ``$KUBEBUILDER_ASSETS``, else all three on ``PATH``, else the directory the
provisioning script ``<repo>/../shared/tools/kube-binaries`` prints (it builds them once,
as root, and caches them). kubectl is ``$KUBECTL`` or ``.tools/bin/kubectl`` (put there
by ``scripts/tools``, as the chart tests' helm).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.kube.processes import ROOT

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
PROVISIONER = ROOT.parent / "shared" / "tools" / "kube-binaries"
# A first build takes some 5 minutes on 2 cores; a cached one answers at once.
PROVISION_TIMEOUT = 1800


@dataclass(frozen=True)
class KubeAssets:
    """The binaries a cluster is made of, and the kubectl that drives it."""

    etcd: Path
    apiserver: Path
    controller_manager: Path
    kubectl: Path

    @classmethod
    def in_directory(cls, directory: Path, kubectl: Path) -> KubeAssets:
        return cls(
            directory / "etcd",
            directory / "kube-apiserver",
            directory / "kube-controller-manager",
            kubectl,
        )


class AssetsUnavailable(Exception):
    """The binaries cannot be had on this machine; the message says why."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _missing(directory: Path) -> list[str]:
    return [name for name in BINARIES if not _executable(directory / name)]


def find_kubectl() -> Path:
    path = Path(os.environ.get("KUBECTL") or ROOT / ".tools" / "bin" / "kubectl")
    if not _executable(path):
        raise AssetsUnavailable(f"kubectl not found at {path} (run: bash scripts/tools)")
    return path


def find_binaries(announce: Callable[[str], None] = lambda _: None) -> Path:
    """The directory holding etcd, kube-apiserver and kube-controller-manager.

    ``announce`` is told before the provisioning script runs: it may build for minutes.
    """
    configured = os.environ.get("KUBEBUILDER_ASSETS")
    if configured:
        missing = _missing(Path(configured))
        if missing:
            raise AssetsUnavailable(f"KUBEBUILDER_ASSETS={configured} lacks {', '.join(missing)}")
        return Path(configured)
    on_path = {Path(found).parent for found in map(shutil.which, BINARIES) if found}
    if len(on_path) == 1 and not _missing(directory := on_path.pop()):
        return directory
    if not PROVISIONER.is_file():
        raise AssetsUnavailable(
            f"KUBEBUILDER_ASSETS is not set, {', '.join(BINARIES)} are not on PATH "
            f"and there is no {PROVISIONER} to provision them"
        )
    announce(f"cluster tier: binaries from {PROVISIONER} (a first build takes minutes)")
    try:
        result = subprocess.run(
            ["bash", str(PROVISIONER)],
            capture_output=True,
            text=True,
            timeout=PROVISION_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssetsUnavailable(f"{PROVISIONER} did not finish in {PROVISION_TIMEOUT}s") from None
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise AssetsUnavailable(f"{PROVISIONER.name} failed: {why[0]}")
    printed = result.stdout.strip().splitlines()
    if not printed:
        raise AssetsUnavailable(f"{PROVISIONER.name} printed no directory")
    directory = Path(printed[-1])
    missing = _missing(directory)
    if missing:
        raise AssetsUnavailable(f"{PROVISIONER.name} printed {directory}, which lacks {missing}")
    return directory


def find_assets(announce: Callable[[str], None] = lambda _: None) -> KubeAssets:
    """Everything the tier needs, or ``AssetsUnavailable`` saying what is missing."""
    kubectl = find_kubectl()
    return KubeAssets.in_directory(find_binaries(announce), kubectl)
