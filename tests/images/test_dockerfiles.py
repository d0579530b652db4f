"""The container images, checked without a Docker engine.

There is no Docker engine on the machines these tests run on, so no image is built here
(tests/e2e builds and runs them on a real cluster). What can be checked without one is:

- each Dockerfile (operator/, worker/, examples/) parses into instructions and stages
  (a small parser below: comments, parser directives, line continuations, exec and shell
  forms);
- the base image is pinned to an exact patch release (no ``latest``, no bare
  ``3.11-slim``), the same in both stages of both images;
- the final stage runs as a numeric non-root USER (the uid the operator's worker pods run
  as), copies nothing but ``/opt/venv`` from the builder and installs nothing;
- the environment suits a read-only root filesystem, the worker finds its middleware,
  the OCI labels are set, ENTRYPOINT/CMD name the project's real console script and match
  the command of the worker Deployment the operator writes;
- the build context (``.dockerignore``) keeps what the builder copies and drops the rest;
- the install steps work: the project's wheel is built from exactly the files the builder
  copies, installed with each image's extra into a fresh venv, and the image's entrypoint
  is run from it with the image's environment. SLOW (network, one venv per image per
  session, about a minute in all): see ``worker_venv`` and ``operator_venv``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker

from taskiq_flow.manifests.models import PipelineSpec
from taskiq_flow_operator.deployments import (
    WORKER_MIDDLEWARE,
    RedisSource,
    build_worker_deployment,
    queue_for,
)
from tests.workers import WorkerProcesses

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VENV = "/opt/venv"
UID = 10001

# An exact patch release of the official Python image on a named Debian release,
# optionally with a digest (which Renovate/Dependabot add).
PINNED_BASE = re.compile(r"^python:3\.\d+\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?$")
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|dnf|yum)\b|\bpip3?\s+install\b|-m\s+pip\s+install\b"
    r"|\b(gcc|g\+\+|make|build-essential|python3?-dev)\b"
)

# ---------------------------------------------------------------------------------------
# A tiny Dockerfile parser


KEYWORDS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
}  # fmt: skip


@dataclass(frozen=True)
class Instruction:
    """One instruction, its continuation lines joined."""

    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD/RUN, else None."""
        if not self.value.startswith("["):
            return None
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), self
        assert all(isinstance(item, str) for item in parsed), self
        return parsed

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` flags and the other words (COPY, ADD, FROM)."""
        flags, args = {}, []
        for word in shlex.split(self.value):
            if word.startswith("--"):
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                args.append(word)
        return flags, args

    def pairs(self) -> dict[str, str]:
        """``KEY=VALUE`` pairs of ENV, LABEL and ARG (``ENV KEY VALUE`` too)."""
        words = shlex.split(self.value)
        if self.keyword == "ENV" and words and "=" not in words[0]:
            return {words[0]: " ".join(words[1:])}
        pairs = {}
        for word in words:
            key, sep, value = word.partition("=")
            pairs[key] = value if sep else ""
        return pairs


@dataclass
class Stage:
    """A ``FROM`` and the instructions up to the next one."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions of one kind, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The ENV the stage sets (later ones win)."""
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            env.update(instruction.pairs())
        return env

    def last(self, keyword: str) -> Instruction | None:
        """The instruction of this kind that takes effect."""
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    """Global ARGs (before the first FROM), then the stages."""

    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile; raises ValueError on what Docker would reject."""
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comments (and parser directives) may sit inside continuations too
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append((start, (pending + line).strip()))
        pending = ""
    if pending:
        raise ValueError("the file ends in a line continuation")
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword not in KEYWORDS:
            raise ValueError(f"line {number}: unknown instruction {keyword!r}")
        instruction = Instruction(keyword, value.strip(), number)
        if keyword == "FROM":
            _, args = instruction.flags_and_args()
            if len(args) == 3 and args[1].upper() == "AS":
                stages.append(Stage(args[0], args[2]))
            elif len(args) == 1:
                stages.append(Stage(args[0], None))
            else:
                raise ValueError(f"line {number}: bad FROM {value!r}")
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"line {number}: {keyword} before the first FROM")
            global_args.update(instruction.pairs())
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise ValueError("no FROM")
    return Dockerfile(global_args, stages)


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context drops ``path`` or one of its parents (no ``!`` rules)."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "negated .dockerignore rules are not handled"
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(Path(prefix).name, bare)
            ):
                return True
    return False


# ---------------------------------------------------------------------------------------
# The images


@dataclass(frozen=True)
class Image:
    name: str
    extra: str
    entrypoint: list[str]

    @property
    def dockerfile(self) -> Dockerfile:
        return parse((REPO / self.name / "Dockerfile").read_text())


WORKER = Image("worker", "redis", ["taskiq-flow"])
OPERATOR = Image("operator", "operator", ["taskiq-flow", "operator"])
IMAGES = [pytest.param(OPERATOR, id="operator"), pytest.param(WORKER, id="worker")]
EXAMPLES = parse((REPO / "examples" / "Dockerfile").read_text())


def example_pipelines() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(REPO.glob("examples/*/pipeline.yaml")):
        document = yaml.safe_load(path.read_text())
        found[path.parent.name] = document
    return found


@pytest.mark.parametrize("image", IMAGES)
class TestDockerfile:
    def test_parses_into_a_builder_and_a_final_stage(self, image: Image) -> None:
        dockerfile = image.dockerfile
        assert [s.name for s in dockerfile.stages] == ["builder", None]
        assert dockerfile.final.all("FROM") == []

    def test_base_is_pinned_to_an_exact_patch_release(self, image: Image) -> None:
        bases = {stage.base for stage in image.dockerfile.stages}
        assert len(bases) == 1, f"both stages must use one base (the venv's python): {bases}"
        (base,) = bases
        assert PINNED_BASE.match(base), f"{base!r} is not pinned to an exact patch tag"
        assert "digest" in (REPO / image.name / "Dockerfile").read_text()

    def test_builder_builds_the_wheel_and_installs_the_extra_into_the_venv(
        self, image: Image
    ) -> None:
        runs = " ".join(i.value for i in image.dockerfile.stage("builder").all("RUN"))
        assert "pip wheel --no-deps" in runs
        assert f"-m venv {VENV}" in runs
        assert f"{VENV}/bin/pip install" in runs
        assert f"[{image.extra}]" in runs
        assert image.extra in PYPROJECT["project"]["optional-dependencies"]

    def test_builder_copies_sources_that_the_build_context_keeps(self, image: Image) -> None:
        patterns = dockerignore()
        for instruction in image.dockerfile.stage("builder").all("COPY"):
            _, args = instruction.flags_and_args()
            for source in args[:-1]:
                assert (REPO / source).exists(), source
                assert not ignored(source, patterns), f".dockerignore drops {source}"

    def test_final_stage_copies_only_the_venv(self, image: Image) -> None:
        final = image.dockerfile.final
        assert final.all("ADD") == []
        copies = [i.flags_and_args() for i in final.all("COPY")]
        assert copies == [({"from": "builder"}, [VENV, VENV])]

    def test_final_stage_installs_no_build_tools(self, image: Image) -> None:
        for run in image.dockerfile.final.all("RUN"):
            assert not BUILD_TOOLS.search(run.value), run

    def test_final_stage_runs_as_the_numeric_non_root_worker_uid(self, image: Image) -> None:
        final = image.dockerfile.final
        user = final.last("USER")
        assert user is not None
        assert user.value == str(UID)
        # The same uid as the worker pods the operator writes (runAsUser).
        pod = deployment_for("etl")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == UID
        # A matching user exists (tools that look the uid up find a name and a home).
        runs = " ".join(i.value for i in final.all("RUN"))
        assert f"useradd --uid {UID}" in runs
        assert f"groupadd --gid {UID}" in runs

    def test_environment_suits_a_read_only_root_filesystem(self, image: Image) -> None:
        env = image.dockerfile.final.env()
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["HOME"].startswith("/tmp")
        assert env.get("XDG_CACHE_HOME", "/tmp").startswith("/tmp")
        assert env["PATH"].startswith(f"{VENV}/bin:")
        assert env["VIRTUAL_ENV"] == VENV

    def test_oci_labels(self, image: Image) -> None:
        final = image.dockerfile.final
        labels: dict[str, str] = {}
        for instruction in final.all("LABEL"):
            labels.update(instruction.pairs())
        prefix = "org.opencontainers.image."
        assert labels[prefix + "source"].startswith("https://github.com/")
        assert labels[prefix + "title"] == f"taskiq-flow-{image.name}"
        assert labels[prefix + "licenses"] == PYPROJECT["project"]["license"]["text"]
        assert labels[prefix + "version"] == "${VERSION}"
        args: dict[str, str] = {}
        for instruction in final.all("ARG"):
            args.update(instruction.pairs())
        assert args["VERSION"] == PYPROJECT["project"]["version"]

    def test_entrypoint_is_the_projects_cli(self, image: Image) -> None:
        entrypoint = image.dockerfile.final.last("ENTRYPOINT")
        assert entrypoint is not None
        assert entrypoint.exec_form() == image.entrypoint
        assert image.entrypoint[0] in PYPROJECT["project"]["scripts"]


def test_worker_image_finds_the_middleware_and_the_task_modules() -> None:
    final = WORKER.dockerfile.final
    env = final.env()
    assert env["TASKIQ_FLOW_MIDDLEWARES"] == WORKER_MIDDLEWARE
    assert env["PYTHONPATH"] == "/app"
    workdir = final.last("WORKDIR")
    assert workdir is not None
    assert workdir.value == "/app"
    cmd = final.last("CMD")
    assert cmd is not None
    assert cmd.exec_form() == ["worker", "--help"]


def test_worker_image_runs_the_command_of_the_operators_deployment() -> None:
    container = deployment_for("etl")["spec"]["template"]["spec"]["containers"][0]
    entrypoint = WORKER.dockerfile.final.last("ENTRYPOINT")
    assert entrypoint is not None
    assert container["command"] == entrypoint.exec_form()
    assert container["args"][0] == "worker"


def test_build_context_drops_what_the_images_do_not_need() -> None:
    patterns = dockerignore()
    for path in [".venv", ".tools", ".git", "tests", "benchmarks", "site", ".pytest_cache",
                 ".mypy_cache", ".ruff_cache", "taskiq_flow/__pycache__"]:  # fmt: skip
        assert ignored(path, patterns), path
    for path in ["pyproject.toml", "README.md", "taskiq_flow", "worker", "operator", "examples"]:
        assert not ignored(path, patterns), path


def test_examples_image_extends_the_worker_image() -> None:
    assert "WORKER_IMAGE" in EXAMPLES.global_args
    assert [s.base for s in EXAMPLES.stages] == ["${WORKER_IMAGE}"]
    # It keeps the worker image's user, entrypoint and environment.
    for keyword in ("USER", "ENTRYPOINT", "CMD", "ENV", "RUN"):
        assert EXAMPLES.final.all(keyword) == [], keyword


def test_examples_image_holds_every_examples_worker_module() -> None:
    copied: set[str] = set()
    patterns = dockerignore()
    for instruction in EXAMPLES.final.all("COPY"):
        flags, args = instruction.flags_and_args()
        assert flags == {}
        assert args[-1] == "/app/"
        for source in args[:-1]:
            assert (REPO / source).is_file(), source
            assert not ignored(source, patterns), source
            copied.add(Path(source).stem)
    for name, document in example_pipelines().items():
        for module in document["spec"]["worker"]["modules"]:
            assert module in copied, f"examples/{name}: module {module} is not in /app"


# ---------------------------------------------------------------------------------------
# The install steps, run for real (SLOW: network; one venv per image per session)


def deployment_for(example: str, *, redis_url: str = "redis://redis:6379/0") -> dict[str, Any]:
    """The worker Deployment the operator writes for an example's Pipeline."""
    document = yaml.safe_load((REPO / "examples" / example / "pipeline.yaml").read_text())
    return build_worker_deployment(
        pipeline=document["metadata"]["name"],
        namespace="default",
        uid="uid",
        spec=PipelineSpec.model_validate(document["spec"]),
        redis=RedisSource(url=redis_url),
    )


def run(command: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run a command; fail the test with its output if it fails."""
    result = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{command} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


@dataclass(frozen=True)
class ImageRoot:
    """An installed image, laid out under ``root``: the venv, /app and /tmp."""

    root: Path
    image: Image

    @property
    def venv(self) -> Path:
        return self.root / "opt" / "venv"

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The image's ENV with its paths moved under ``root``; nothing from this process."""
        env: dict[str, str] = {}
        for key, value in self.image.dockerfile.final.env().items():
            value = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
            value = re.sub(
                r"(?<![\w/])/(opt/venv|app|tmp)\b", lambda m: f"{self.root}/{m[1]}", value
            )
            env[key] = value
        env["TMPDIR"] = str(self.tmp)  # where tempfile puts things in the image: /tmp
        env.update(extra or {})
        return env

    def files(self) -> set[Path]:
        """Every file of the read-only part (the venv and /app)."""
        return {p for top in (self.venv, self.app) for p in top.rglob("*")}


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from exactly what the builder stage copies."""
    context = tmp_path_factory.mktemp("context")
    patterns = dockerignore()
    for instruction in WORKER.dockerfile.stage("builder").all("COPY"):
        _, args = instruction.flags_and_args()
        for source in args[:-1]:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(
                    src,
                    context / source,
                    ignore=lambda d, names: [
                        n for n in names
                        if ignored(str((Path(d) / n).relative_to(REPO)), patterns)
                        or n.endswith(".egg-info")
                    ],
                )  # fmt: skip
            else:
                shutil.copy2(src, context / source)
    wheels = tmp_path_factory.mktemp("wheels")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "--quiet", str(context), "--wheel-dir", str(wheels)], timeout=300)  # fmt: skip
    (wheel,) = wheels.glob("taskiq_flow-*.whl")
    return wheel


def install(image: Image, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageRoot:
    """What the builder stage does (venv, pip install wheel[extra]), under a fresh root."""
    root = ImageRoot(tmp_path_factory.mktemp(f"{image.name}-root"), image)
    root.app.mkdir()
    root.tmp.mkdir()
    run([sys.executable, "-m", "venv", str(root.venv)])
    run([str(root.venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--quiet",
         f"{wheel}[{image.extra}]"], timeout=600)  # fmt: skip
    return root


@pytest.fixture(scope="session")
def worker_root(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageRoot:
    """SLOW: the worker image's venv (``wheel[redis]``) and its /app with the examples."""
    root = install(WORKER, project_wheel, tmp_path_factory)
    for instruction in EXAMPLES.final.all("COPY"):
        _, args = instruction.flags_and_args()
        for source in args[:-1]:
            shutil.copy2(REPO / source, root.app)
    return root


@pytest.fixture(scope="session")
def operator_root(project_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageRoot:
    """SLOW: the operator image's venv (``wheel[operator]``)."""
    return install(OPERATOR, project_wheel, tmp_path_factory)


SLOW = pytest.mark.timeout(900)


@SLOW
def test_slow_operator_venv_runs_the_operator_entrypoint(operator_root: ImageRoot) -> None:
    env = operator_root.env()
    command = [*OPERATOR.entrypoint, "--help"]
    result = run(command, env=env, cwd=operator_root.tmp)
    assert "--namespace" in result.stdout
    # The operator's own package and kopf are importable from the venv; the kubernetes
    # client is not shipped (in a cluster kopf logs in with the service account).
    run(["python", "-c", "import kopf, taskiq_flow_operator"], env=env)
    probe = "import importlib.util; print(importlib.util.find_spec('kubernetes') is None)"
    assert run(["python", "-c", probe], env=env).stdout.strip() == "True"


@SLOW
def test_slow_worker_venv_runs_the_worker_entrypoint(worker_root: ImageRoot) -> None:
    env = worker_root.env()
    result = run([*WORKER.entrypoint, "worker", "--help"], env=env, cwd=worker_root.app)
    assert "--queue" in result.stdout
    # The middleware the image's environment names imports from the venv.
    module, _, attr = env["TASKIQ_FLOW_MIDDLEWARES"].partition(":")
    run(["python", "-c", f"from {module} import {attr}"], env=env, cwd=worker_root.app)
    # The examples image's modules import from /app (PYTHONPATH), whatever the cwd.
    modules = sorted(
        {m for d in example_pipelines().values() for m in d["spec"]["worker"]["modules"]}
    )
    run(["python", "-c", f"import {', '.join(modules)}"], env=env, cwd=worker_root.tmp)


@pytest.fixture
def stopped_workers() -> Iterator[WorkerProcesses]:
    workers = WorkerProcesses()
    yield workers
    workers.stop()


@SLOW
def test_slow_worker_runs_an_example_task_as_the_operators_deployment_says(
    worker_root: ImageRoot, redis_url: str, stopped_workers: WorkerProcesses
) -> None:
    """The worker container's command, args and env, run from the installed venv with /app
    as cwd, imports the example module and runs its task; it writes only under /tmp."""
    container = deployment_for("etl", redis_url=redis_url)["spec"]["template"]["spec"][
        "containers"
    ][0]
    queue = queue_for("default", "etl")
    assert queue in container["args"]
    state = worker_root.tmp / "taskiq-flow-etl" / "image-check.attempts"

    async def kick() -> None:
        broker = RedisStreamBroker(redis_url, queue_name=queue)
        try:
            kicker = AsyncKicker(task_name="etl_tasks:load", broker=broker, labels={})
            await kicker.kiq(valid_rows=[], batch="image-check", flaky_failures=0)
        finally:
            await broker.shutdown()

    # Sent before the worker starts: its group reads the stream from the start.
    asyncio.run(kick())
    before = worker_root.files()
    env = worker_root.env({e["name"]: e["value"] for e in container["env"]})
    log = worker_root.tmp / "worker.log"
    with log.open("wb") as out:
        stopped_workers.processes.append(
            subprocess.Popen(
                [*container["command"], *container["args"]],
                cwd=worker_root.app,  # WORKDIR
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    process = stopped_workers.processes[0]
    deadline = time.monotonic() + 60
    while not state.exists():
        assert process.poll() is None, f"the worker exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"the task did not run:\n{log.read_text()}"
        time.sleep(0.1)  # polling with a deadline for a file another process writes
    assert state.read_text() == "1"
    stopped_workers.stop()
    assert worker_root.files() == before, "the worker wrote outside /tmp"
    client = redis.Redis.from_url(redis_url)
    try:
        groups = client.xinfo_groups(queue)
    finally:
        client.close()
    assert groups, "the worker did not read the pipeline's queue"
