"""The Helm chart: what `helm lint` and `helm template` give a user, checked against the
Kubernetes schemas and against the operator's own code (its CLI, its HTTP endpoints)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from taskiq_flow.manifests.crds import render_crds
from taskiq_flow.manifests.loading import load_text, parse_resource
from taskiq_flow_operator.cli import URL_ENV, operator_command
from taskiq_flow_operator.serving import serve_http
from tests.chart.conftest import (
    CHART,
    COMBINATIONS,
    EXTERNAL_SECRET,
    EXTERNAL_URL,
    FULLNAME,
    HA,
    NAMESPACE,
    NAMESPACED,
    ROOT,
    Helm,
    find,
    one,
)

Render = Callable[[str], list[dict[str, Any]]]
Rules = dict[tuple[str, str, tuple[str, ...]], set[str]]

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubectl
# in .tools: every manifest must be valid for both.
KUBERNETES_VERSIONS = ("1.27.0", "1.35.0")

# ServiceMonitor and the kopf peering objects are custom resources: kubernetes_validate has
# no schema for them. These small schemas cover the fields the chart sets (the upstream
# CRDs of prometheus-operator and kopf define more); unknown fields are rejected.
_META = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
CUSTOM_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matchLabels": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            }
                        },
                    },
                    "namespaceSelector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matchNames": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                                "scrapeTimeout": {
                                    "type": "string",
                                    "pattern": "^([0-9]+(ms|s|m|h))+$",
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    ("kopf.dev/v1", "ClusterKopfPeering"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "kopf.dev/v1"},
            "kind": {"const": "ClusterKopfPeering"},
            "metadata": {**_META, "not": {"required": ["namespace"]}},
        },
    },
    ("kopf.dev/v1", "KopfPeering"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "kopf.dev/v1"},
            "kind": {"const": "KopfPeering"},
            "metadata": {**_META, "required": ["name", "namespace", "labels"]},
        },
    },
}


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", FULLNAME)


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = operator_deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return dict(containers[0])


def operator_args(docs: list[dict[str, Any]], priority: str = "7") -> list[str]:
    """The arguments `taskiq-flow operator` receives (in HA mode, from the sh wrapper)."""
    container = operator_container(docs)
    if "command" not in container:
        return list(container["args"])
    assert container["command"] == ["/bin/sh", "-c"]
    script, _zero, *args = container["args"]
    assert script.startswith('exec taskiq-flow operator "$@" --priority ')
    return [*args, "--priority", priority]


def parse_operator_args(args: list[str]) -> dict[str, Any]:
    """The parameters the real click command parses from ``args`` (fails on unknown flags)."""
    with operator_command.make_context("operator", list(args)) as ctx:
        return dict(ctx.params)


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def rules_of(role: dict[str, Any]) -> Rules:
    """(apiGroup, resource, resourceNames) → verbs, one entry per pair in the rules."""
    granted: Rules = {}
    for rule in role["rules"]:
        names = tuple(rule.get("resourceNames", ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource, names), set()).update(rule["verbs"])
    return granted


# What the operator's code calls (kube.py, supervising.py) and what kopf does for its
# handlers (watch, patch annotations and finalizers, post events), in each namespace.
NAMESPACED_RULES: Rules = {
    ("flow.taskiq.dev", "pipelines", ()): {"get", "list", "watch", "patch"},
    ("flow.taskiq.dev", "pipelineruns", ()): {"get", "list", "watch", "patch", "delete"},
    ("flow.taskiq.dev", "pipelines/status", ()): {"patch"},
    ("flow.taskiq.dev", "pipelineruns/status", ()): {"patch"},
    ("flow.taskiq.dev", "pipelines/finalizers", ()): {"update"},
    ("flow.taskiq.dev", "pipelineruns/finalizers", ()): {"update"},
    ("apps", "deployments", ()): {"get", "create", "patch"},
    ("", "events", ()): {"create"},
}
# kopf's resource scanning, cluster-wide only (namespaced mode passes --no-scanning).
SCANNING_RULES: Rules = {
    ("apiextensions.k8s.io", "customresourcedefinitions", ()): {"list", "watch"}
}


def peering_rules(resource: str) -> Rules:
    return {
        ("kopf.dev", resource, ()): {"list", "watch"},
        ("kopf.dev", resource, (FULLNAME,)): {"patch"},
    }


# -- lint and schema -----------------------------------------------------------------------


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_lint_strict_is_clean(helm: Helm, combination: str) -> None:
    result = helm.lint(COMBINATIONS[combination])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCont": 2}, "replicaCont"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
        ({"watchNamespaces": "team-a"}, "watchNamespaces"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"redis": {"bundled": {"persistense": {"enabled": True}}}}, "persistense"),
        ({"redis": {"url": "http://redis:6379"}}, "url"),
        ({"extraArgs": "--verbose"}, "extraArgs"),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, values: dict[str, Any], complaint: str) -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp"))
    values_file = path / f"taskiq-flow-chart-{os.getpid()}-{complaint}.yaml"
    values_file.write_text(yaml.safe_dump(values), encoding="utf-8")
    try:
        result = helm.template_text(extra=["-f", str(values_file)])
    finally:
        values_file.unlink()
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis.url": "redis://elsewhere:6379/0"},
            "an external Redis (redis.url or redis.existingSecret.name) needs "
            "redis.bundled.enabled=false",
        ),
        (
            {"redis.bundled.enabled": False},
            "with redis.bundled.enabled=false, set redis.url or redis.existingSecret.name",
        ),
        (
            {**EXTERNAL_URL, "redis.existingSecret.name": "my-redis"},
            "set either redis.url or redis.existingSecret.name, not both",
        ),
    ],
)
def test_ambiguous_redis_settings_fail_with_a_message(
    helm: Helm, values: dict[str, Any], message: str
) -> None:
    result = helm.template_text(values)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_every_values_key_has_a_comment() -> None:
    """values.yaml documents each key it sets (free-form maps' contents aside)."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    free_form = {"resources", "nodeSelector", "tolerations", "affinity", "podAnnotations"}
    undocumented = []
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        stack.append((indent, key))
        if free_form & set(parents):
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            undocumented.append(".".join([*parents, key]))
    assert undocumented == []


# -- the rendered manifests ----------------------------------------------------------------


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_manifest_is_valid_kubernetes(render: Render, combination: str) -> None:
    for doc in render(combination):
        custom = CUSTOM_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            jsonschema.validate(doc, custom)
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_object_carries_the_standard_labels(render: Render, combination: str) -> None:
    for doc in render(combination):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "taskiq-flow"
        assert labels["app.kubernetes.io/instance"] == "tf"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "taskiq-flow-0.1.0"
        assert "app.kubernetes.io/component" in labels
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert "namespace" in doc["metadata"], doc["kind"]


def test_defaults_render_the_operator_with_a_bundled_redis(render: Render) -> None:
    docs = render("defaults")
    assert sorted(d["kind"] for d in docs) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/taskiq-python/taskiq-flow-operator:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    deployment = operator_deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_image_tag_overrides_the_app_version(helm: Helm) -> None:
    docs = helm.template({"image.tag": "0.2.0-rc1", "image.pullPolicy": "Always"})
    container = operator_container(docs)
    assert container["image"] == "ghcr.io/taskiq-python/taskiq-flow-operator:0.2.0-rc1"
    assert container["imagePullPolicy"] == "Always"


# -- the operator's command line -----------------------------------------------------------


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_operator_args_parse_with_the_real_cli(render: Render, combination: str) -> None:
    docs = render(combination)
    params = parse_operator_args(operator_args(docs))
    container = operator_container(docs)
    # The URL comes from the Secret through the environment, never as a literal flag.
    assert params["redis_url"] is None
    url = env_of(container)[URL_ENV]["valueFrom"]["secretKeyRef"]
    # Workers are pointed at the same Secret and key the operator reads.
    assert params["redis_secret"] == f"{url['name']}:{url['key']}"
    assert params["metrics_port"] == 9090
    namespaces = COMBINATIONS[combination].get("watchNamespaces", [])
    assert list(params["namespaces"]) == namespaces
    # Exact namespaces: kopf must not list namespaces or CRDs, which the Roles do not allow.
    assert params["no_scanning"] is bool(namespaces)
    ha = COMBINATIONS[combination].get("replicaCount", 1) > 1
    assert params["peering"] == (FULLNAME if ha else None)


def test_worker_env_and_extra_args_reach_the_operator(helm: Helm) -> None:
    docs = helm.template(
        {
            "workerEnv": {"LOG_LEVEL": "debug", "TZ": "UTC"},
            "extraArgs": ["--status-interval", "2", "--verbose"],
            "metrics.port": 9100,
        }
    )
    params = parse_operator_args(operator_args(docs))
    assert sorted(params["worker_env"]) == ["LOG_LEVEL=debug", "TZ=UTC"]
    assert params["status_interval"] == 2.0
    assert params["verbose"] is True
    assert params["metrics_port"] == 9100
    container = operator_container(docs)
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]


def test_ha_pods_get_distinct_priorities_from_a_real_shell(render: Render, tmp_path: Path) -> None:
    """kopf pauses every peer of equal priority: each pod's priority is its IP as a number."""
    docs = render("ha")
    container = operator_container(docs)
    fake = tmp_path / "taskiq-flow"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n', encoding="utf-8")
    fake.chmod(0o755)
    path = f"{tmp_path}:{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    seen = []
    for ip in ("10.244.1.17", "10.244.2.5", "fd00:10:244::1a"):
        result = subprocess.run(
            [*container["command"], *container["args"]],
            env={"PATH": path, "POD_IP": ip},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        args = result.stdout.splitlines()
        assert args[0] == "operator"
        params = parse_operator_args(args[1:])
        assert params["peering"] == FULLNAME
        seen.append(params["priority"])
    assert len(set(seen)) == 3
    assert all(0 <= p < 2**31 for p in seen)
    assert env_of(container)["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    deployment = operator_deployment(docs)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


def test_ha_creates_the_peering_objects_the_operator_joins(render: Render) -> None:
    peering = one(render("ha"), "ClusterKopfPeering")
    assert peering["metadata"]["name"] == FULLNAME
    namespaced = find(render("ha-namespaced"), "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in namespaced) == ["team-a", "team-b"]
    assert {p["metadata"]["name"] for p in namespaced} == {FULLNAME}
    assert find(render("defaults"), "ClusterKopfPeering") == []
    assert find(render("namespaced"), "KopfPeering") == []


# -- probes, security ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serving() -> tuple[SimpleNamespace, Callable[[str], Any]]:
    """serving.serve_http on a free port, with a stand-in for the Operator it reports on."""
    op = SimpleNamespace(
        ready=False, kube=None, metrics=SimpleNamespace(render=lambda: "taskiq_flow_x 1\n")
    )
    port = _free_port()

    async def get(path: str) -> int:
        stopping = asyncio.Event()
        server = asyncio.create_task(serve_http(op, port, stopping))  # type: ignore[arg-type]
        try:
            deadline = asyncio.get_running_loop().time() + 10
            async with aiohttp.ClientSession() as session:
                while True:
                    try:
                        async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                            return response.status
                    except aiohttp.ClientConnectorError:
                        assert asyncio.get_running_loop().time() < deadline, "no server"
                        await asyncio.sleep(0.01)
        finally:
            stopping.set()
            await server

    return op, get


async def test_probes_hit_the_operators_real_endpoints(
    render: Render, serving: tuple[SimpleNamespace, Callable[[str], Any]]
) -> None:
    container = operator_container(render("defaults"))
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    port = next(p for p in container["ports"] if p["name"] == liveness["port"])
    assert readiness["port"] == liveness["port"] == "metrics"
    assert (
        port["containerPort"]
        == parse_operator_args(operator_args(render("defaults")))["metrics_port"]
    )
    op, get = serving
    assert await get(liveness["path"]) == 200
    assert await get(readiness["path"]) == 503, "ready before the operator started"
    op.ready, op.kube = True, object()
    assert await get(readiness["path"]) == 200
    assert await get("/metrics") == 200


RESTRICTED_CONTAINER = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("combination", ["defaults", "ha", "persistence"])
def test_pods_run_restricted(render: Render, combination: str) -> None:
    docs = render(combination)
    deployment = operator_deployment(docs)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(docs)
    assert container["securityContext"] == {
        **RESTRICTED_CONTAINER,
        "runAsUser": 10001,
        "runAsGroup": 10001,
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert set(container["resources"]) == {"requests", "limits"}
    redis = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    assert redis["securityContext"]["runAsNonRoot"] is True
    assert redis["automountServiceAccountToken"] is False
    (redis_container,) = redis["containers"]
    assert redis_container["securityContext"] == {**RESTRICTED_CONTAINER, "runAsUser": 999}


# -- RBAC ----------------------------------------------------------------------------------


def test_cluster_mode_grants_exactly_what_the_operator_calls(render: Render) -> None:
    docs = render("defaults")
    role = one(docs, "ClusterRole")
    assert rules_of(role) == {**NAMESPACED_RULES, **SCANNING_RULES}
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    assert find(docs, "Role") == find(docs, "RoleBinding") == []


def test_namespaced_mode_has_a_role_per_namespace_and_nothing_cluster_wide(
    render: Render,
) -> None:
    docs = render("namespaced")
    assert find(docs, "ClusterRole") == find(docs, "ClusterRoleBinding") == []
    roles = find(docs, "Role")
    bindings = find(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == NAMESPACED_RULES
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == FULLNAME
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]


def test_ha_adds_only_the_peering_rules(render: Render) -> None:
    assert rules_of(one(render("ha"), "ClusterRole")) == {
        **NAMESPACED_RULES,
        **SCANNING_RULES,
        **peering_rules("clusterkopfpeerings"),
    }
    for role in find(render("ha-namespaced"), "Role"):
        assert rules_of(role) == {**NAMESPACED_RULES, **peering_rules("kopfpeerings")}


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_no_wildcards_and_no_secrets_access(render: Render, combination: str) -> None:
    for doc in render(combination):
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], rule
            assert "secrets" not in rule["resources"], "the kubelet reads the Redis Secret"


def test_rbac_can_be_left_to_the_user(helm: Helm) -> None:
    docs = helm.template(
        {
            "rbac.create": False,
            "serviceAccount.create": False,
            "serviceAccount.name": "flow-operator",
        }
    )
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert "ServiceAccount" not in kinds
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "flow-operator"


# -- Redis ---------------------------------------------------------------------------------


def test_bundled_redis_requires_the_generated_password(render: Render) -> None:
    docs = render("defaults")
    secret = one(docs, "Secret", f"{FULLNAME}-redis")
    data = secret_data(secret)
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["password"])
    assert data["url"] == (f"redis://:{data['password']}@{FULLNAME}-redis.{NAMESPACE}.svc:6379/0")
    service = one(docs, "Service", f"{FULLNAME}-redis")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["port"] == 6379
    statefulset = one(docs, "StatefulSet", f"{FULLNAME}-redis")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-redis",
        "key": "password",
    }
    assert {"name": "data", "emptyDir": {}} in statefulset["spec"]["template"]["spec"]["volumes"]
    assert "volumeClaimTemplates" not in statefulset["spec"]
    operator = operator_container(docs)
    assert env_of(operator)[URL_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FULLNAME}-redis",
        "key": "url",
    }


def test_bundled_redis_persistence_uses_a_volume_claim(render: Render) -> None:
    statefulset = one(render("persistence"), "StatefulSet")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    volumes = [v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]]
    assert "data" not in volumes
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"


def test_bundled_redis_with_an_existing_auth_secret(helm: Helm) -> None:
    docs = helm.template(
        {"redis.bundled.auth.existingSecret": "redis-auth", "watchNamespaces": ["team-a"]}
    )
    assert find(docs, "Secret") == [], "the chart cannot know the password: no copies either"
    (container,) = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-auth",
        "key": "password",
    }
    params = parse_operator_args(operator_args(docs))
    assert params["redis_secret"] == "redis-auth:url"


def test_external_redis_by_url(render: Render) -> None:
    docs = render("external-url")
    assert find(docs, "StatefulSet") == []
    assert find(docs, "Service", f"{FULLNAME}-redis") == []
    secret = one(docs, "Secret")
    assert secret_data(secret) == {"url": EXTERNAL_URL["redis.url"]}
    url = env_of(operator_container(docs))[URL_ENV]["valueFrom"]["secretKeyRef"]
    assert url == {"name": secret["metadata"]["name"], "key": "url"}


def test_external_redis_by_existing_secret(render: Render) -> None:
    docs = render("external-secret")
    assert find(docs, "StatefulSet") == []
    assert find(docs, "Secret") == []
    url = env_of(operator_container(docs))[URL_ENV]["valueFrom"]["secretKeyRef"]
    assert url == {"name": "my-redis", "key": "connection"}
    assert parse_operator_args(operator_args(docs))["redis_secret"] == "my-redis:connection"


def test_namespaced_mode_puts_the_url_secret_where_the_workers_run(render: Render) -> None:
    docs = render("namespaced")
    secrets = find(docs, "Secret", f"{FULLNAME}-redis")
    by_namespace = {s["metadata"]["namespace"]: secret_data(s) for s in secrets}
    assert sorted(by_namespace) == sorted([NAMESPACE, *NAMESPACED["watchNamespaces"]])
    url = by_namespace[NAMESPACE]["url"]
    for namespace in NAMESPACED["watchNamespaces"]:
        assert by_namespace[namespace] == {"url": url}, "the URL only, not the password"
    # The secret a worker Deployment references (--redis-secret) is the one copied.
    params = parse_operator_args(operator_args(docs))
    assert params["redis_secret"] == f"{FULLNAME}-redis:url"
    assert find(render("namespaced-external-secret"), "Secret") == []


# -- metrics -------------------------------------------------------------------------------


def test_metrics_service_selects_the_operator(render: Render) -> None:
    docs = render("defaults")
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    pod_labels = operator_deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    redis_labels = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= redis_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_service_monitor_scrapes_the_metrics_service(render: Render) -> None:
    docs = render("service-monitor")
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert find(render("defaults"), "ServiceMonitor") == []


# -- CRDs and NOTES ------------------------------------------------------------------------


def test_rendered_crds_are_the_generated_ones(helm: Helm) -> None:
    docs = helm.template(extra=["--include-crds"])
    rendered = {d["metadata"]["name"]: d for d in find(docs, "CustomResourceDefinition")}
    generated = {
        name.removesuffix(".yaml"): yaml.safe_load(text) for name, text in render_crds().items()
    }
    on_disk = {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob("*.yaml")}
    assert rendered == generated == on_disk


def _notes(helm: Helm, values: dict[str, Any]) -> str:
    result = helm.run(
        "install",
        "tf",
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        *Helm.value_args(values),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_walk_through_a_first_pipeline_that_validates(helm: Helm) -> None:
    notes = _notes(helm, {})
    manifest = textwrap.dedent(notes.split("<<'EOF'", 1)[1].split("\n", 1)[1].split("  EOF")[0])
    documents, problems = load_text(manifest)
    assert problems == []
    assert [d.data["kind"] for d in documents] == ["Pipeline", "PipelineRun"]
    for document in documents:
        assert parse_resource(document) == [], document.data["kind"]
    commands = [
        shlex.split(line.split("#")[0])
        for line in notes.splitlines()
        if line.strip().startswith("kubectl") and not line.endswith("\\")
    ]
    assert ["kubectl", "-n", NAMESPACE, "get", "pipelineruns", "-w"] in commands
    assert [
        "kubectl",
        "-n",
        NAMESPACE,
        "wait",
        "--for=condition=Succeeded",
        "pipelinerun/wordcount-demo",
        "--timeout=5m",
    ] in commands


def test_notes_name_the_secret_workers_need(helm: Helm) -> None:
    assert 'Secret\n"my-redis" (key "connection")' in _notes(helm, EXTERNAL_SECRET)
    namespaced = _notes(helm, NAMESPACED)
    assert "The chart created it in team-a, team-b." in namespaced
    assert "kopf's peering CRDs" in _notes(helm, HA)


# -- docs/install.md -----------------------------------------------------------------------

INSTALL_DOC = ROOT / "docs" / "install.md"
FREE_FORM = {"resources", "nodeSelector", "affinity", "podAnnotations", "labels", "annotations"}


def _leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in FREE_FORM:
            keys += _leaf_keys(value, f"{path}.")
        else:
            keys.append(path)
    return keys


def test_install_doc_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    documented = set()
    for line in INSTALL_DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", line.split("|")[1])
        base = names[0].rsplit(".", 1)[0] if "." in names[0] else ""
        documented |= {f"{base}{n}" if n.startswith(".") else n for n in names}
    assert sorted(set(_leaf_keys(values)) - documented) == []


def test_install_doc_peering_crds_serve_the_chart_peering_objects(render: Render) -> None:
    text = INSTALL_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    crds = [d for block in blocks for d in yaml.safe_load_all(block) if d]
    served = set()
    for crd in crds:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(crd, version, strict=True)
        spec = crd["spec"]
        for v in spec["versions"]:
            served.add((f"{spec['group']}/{v['name']}", spec["names"]["kind"], spec["scope"]))
    objects = [
        *find(render("ha"), "ClusterKopfPeering"),
        *find(render("ha-namespaced"), "KopfPeering"),
    ]
    for obj in objects:
        scope = "Namespaced" if "namespace" in obj["metadata"] else "Cluster"
        assert (obj["apiVersion"], obj["kind"], scope) in served
