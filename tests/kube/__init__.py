"""A real Kubernetes control plane for the tests (the cluster tier), with a sync API.

``plugin`` holds the pytest fixtures (``kube_cluster``, ``kube_env``), registered for the
whole suite in tests/conftest.py; tests/cluster and tests/conformance use them. Outside
pytest, ``start_kube_cluster`` and ``start_kube_env`` are plain context managers.
"""

from tests.kube.api import KubeApi, eventually
from tests.kube.assets import AssetsUnavailable, KubeAssets, find_assets
from tests.kube.cluster import ClusterError, KubeCluster, start_kube_cluster
from tests.kube.env import KubeEnv, Kubelet, start_kube_env

__all__ = [
    "AssetsUnavailable",
    "ClusterError",
    "KubeApi",
    "KubeAssets",
    "KubeCluster",
    "KubeEnv",
    "Kubelet",
    "eventually",
    "find_assets",
    "start_kube_cluster",
    "start_kube_env",
]
