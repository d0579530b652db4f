"""Every fenced code block in docs/*.md is run here, or marked as a fragment on purpose.

A block is one of:

- **a fragment**: the line right before its opening fence is ``<!-- fragment: REASON -->``
  (an HTML comment, which the site does not show). It is not run; REASON says why (a
  cluster command, an install, a server that runs until stopped, a diagram...) and must
  not be empty.
- **```python**: a page's Python blocks run in order, in one namespace and one event
  loop, in a fresh interpreter (``tests/docs/python_blocks.py``): as in the
  ``python -m asyncio`` REPL, a block may ``await`` at the top level, and it may use what
  earlier blocks of its page defined. A top-level expression whose line ends in a comment
  holding a Python literal (``result.return_value  # [3, 3, 3, 3]``) must equal that
  literal, and ``print(x)  # TEXT`` must print ``TEXT``.
- **```yaml holding flow.taskiq.dev documents**: saved, in a scratch directory, beside the
  task modules its Pipeline's ``spec.worker.modules`` names (copied from the one
  directory of examples/ that holds them all; the docs' own are in examples/docs/). A
  block with a PipelineRun is run with ``taskiq-flow run`` together with its Pipeline (a
  block of the same page, or else the examples/ manifest of that name) and must succeed;
  a block of Pipelines must pass ``taskiq-flow validate``.
- **```console or ```bash whose commands are all** ``taskiq-flow`` (or
  ``.venv/bin/taskiq-flow``), ``sed``, ``rm`` or ``echo``: a page's commands run in order
  with bash, from a scratch copy of the repository's examples/ (``.venv`` links to this
  interpreter's environment), so that commands writing files leave the checkout alone.
  In a console block, ``$ `` starts a command and the lines under it are what it prints:

  - its exit status must be 0, or what a following ``$ echo $?`` shows, or 2 when the
    lines shown hold a problem (``FILE: Kind/name: ...``, not a warning);
  - every line shown must be among the lines it printed (stdout or stderr), where
    ``[...]`` stands for any text, a line ``...`` for lines left out, a duration
    (``0.04s``) for any duration and a generated run-id suffix (``5725e842`` in
    ``audio-analysis-5725e842``) for any other of its length;
  - ``taskiq-flow worker`` runs in the background until the page is done (then its
    process group is killed); the lines shown under it are awaited, up to
    ``WORKER_START_SECONDS``, before the next command runs;
  - ``redis://localhost:6379/0`` is the tests' Redis server (``redis_url``).

docs/control-flow.md is run by tests/cli/test_control_flow_docs.py: its Pipelines and the
JSON and console blocks under them (the blocks that test reads, recognised by their text)
count as run here. That page tells users to save each of its Pipelines as
``examples/control_flow/<name>.yaml``; so does the scratch copy for its other console
blocks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.test_control_flow_docs import page_examples

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
RUNNER = Path(__file__).with_name("python_blocks.py")
VENV = Path(sys.prefix)
CLI = Path(sys.executable).with_name("taskiq-flow")

FRAGMENT, PYTHON, YAML, SHELL, COVERED = "fragment", "python", "yaml", "shell", "covered"
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<language>\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*fragment:(?P<reason>.*?)-->\s*$")
FLOW_API = "flow.taskiq.dev/"
# Pages that tell users where to save their manifests: {page: path pattern}.
SAVED_AS = {"control-flow.md": "examples/control_flow/{name}.yaml"}

PROGRAMS = {"taskiq-flow", ".venv/bin/taskiq-flow", "sed", "rm", "echo"}
CLI_PROGRAMS = {"taskiq-flow", ".venv/bin/taskiq-flow"}
SERVERS = {"dashboard", "operator"}  # taskiq-flow commands that run until stopped
OPERATORS = {"|", "||", "&&", ";", "&"}
REDIRECTS = {">", ">>", "<", "2>", "&>"}
LOCAL_REDIS = "redis://localhost:6379/0"
ECHO_STATUS = "echo $?"
PROBLEM = re.compile(r"^\S+: [A-Za-z]+/\S+: (?!.*: warning: )")
VARIABLE = re.compile(r"(?P<duration>\b\d+\.\d+s\b)|(?<=-)(?P<id>[0-9a-f]*\d[0-9a-f]*)\b")
RUN_ID_LENGTHS = {5, 8}  # generateName suffixes and generated run names
WORKER_START_SECONDS = 30.0
COMMAND_TIMEOUT_SECONDS = 120.0


# -- reading the pages ---------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced block of a page."""

    page: str  # its file name in docs/
    line: int  # the line of its opening fence
    language: str
    text: str  # its content, de-indented as the fence is
    fragment: str | None  # the fragment marker's reason; None without a marker

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def read_blocks(path: Path) -> tuple[list[Block], list[int]]:
    """The blocks of a page, and the lines of fragment markers not right before a fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    used: set[int] = set()
    number = 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        end = number + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"docs/{path.name}:{number + 1}: the block is never closed"
        indent = opening["indent"]
        body = [line.removeprefix(indent) for line in lines[number + 1 : end]]
        marker = MARKER.match(lines[number - 1]) if number else None
        if marker is not None:
            used.add(number - 1)
        blocks.append(
            Block(
                page=path.name,
                line=number + 1,
                language=opening["language"],
                text="".join(f"{line}\n" for line in body),
                fragment=marker["reason"].strip() if marker else None,
            )
        )
        number = end + 1
    stray = [n + 1 for n, line in enumerate(lines) if MARKER.match(line) and n not in used]
    return blocks, stray


PAGES = sorted(path.name for path in DOCS.glob("*.md"))
READ = {page: read_blocks(DOCS / page) for page in PAGES}
BLOCKS = {page: blocks for page, (blocks, _) in READ.items()}


# -- what runs a block ---------------------------------------------------------------


def _control_flow_tested() -> tuple[set[str], set[str], list[Any]]:
    """The texts of the blocks tests/cli/test_control_flow_docs.py runs."""
    manifests: set[str] = set()
    transcripts: set[str] = set()
    runs: list[Any] = []
    for example in page_examples():
        manifests.add(example.manifest.strip())
        transcripts.update(text.strip() for text in example.validations)
        runs.extend(example.runs)
    return manifests, transcripts, runs


CONTROL_FLOW_MANIFESTS, CONTROL_FLOW_TRANSCRIPTS, CONTROL_FLOW_RUNS = _control_flow_tested()


def covered_by_control_flow_test(block: Block) -> bool:
    if block.page != "control-flow.md":
        return False
    if block.language == "yaml":
        return block.text.strip() in CONTROL_FLOW_MANIFESTS
    if block.language == "console":
        return block.text.strip() in CONTROL_FLOW_TRANSCRIPTS
    if block.language == "json":
        with suppress(ValueError):
            return json.loads(block.text) in CONTROL_FLOW_RUNS
    return False


def flow_documents(text: str) -> list[dict[str, Any]]:
    """The flow.taskiq.dev documents of a YAML text (none when it does not parse)."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return []
    return [
        document
        for document in documents
        if isinstance(document, dict) and str(document.get("apiVersion", "")).startswith(FLOW_API)
    ]


@dataclass
class Command:
    """A shell command of a block, and the lines the page shows it prints."""

    line: int
    text: str
    shown: list[str] = field(default_factory=list)

    def programs(self) -> list[list[str]] | None:
        """Each simple command's words before any redirection (None: not shell words)."""
        lexer = shlex.shlex(self.text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:
            return None
        found: list[list[str]] = [[]]
        redirected = False
        for token in tokens:
            if token in OPERATORS:
                found.append([])
                redirected = False
            elif token in REDIRECTS:
                redirected = True
            elif not redirected:
                found[-1].append(token)
        return [words for words in found if words]

    def runnable(self) -> bool:
        programs = self.programs()
        if not programs:
            return False
        for words in programs:
            if words[0] not in PROGRAMS:
                return False
            if words[0] in CLI_PROGRAMS and len(words) > 1 and words[1] in SERVERS:
                return False
        return True

    @property
    def in_background(self) -> bool:
        programs = self.programs() or []
        return any(w[0] in CLI_PROGRAMS and w[1:2] == ["worker"] for w in programs)


def shell_commands(block: Block) -> list[Command]:
    """The commands of a console or bash block ([] when it holds none)."""
    commands: list[Command] = []
    lines = block.text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        page_line = block.line + 1 + number
        if block.language == "console":
            if not line.startswith("$ "):
                if commands:
                    commands[-1].shown.append(line)
                elif line.strip():
                    return []  # output before any command: not a transcript
                number += 1
                continue
            text = line[2:]
        elif not line.strip() or line.lstrip().startswith("#"):
            number += 1
            continue
        else:
            text = line
        while text.endswith("\\") and number + 1 < len(lines):
            number += 1
            text = f"{text[:-1].rstrip()} {lines[number].strip()}"
        commands.append(Command(page_line, text))
        number += 1
    return commands


def how_run(block: Block) -> str | None:
    """How the harness runs the block (None: it cannot, and the block is not marked)."""
    if block.fragment is not None:
        return FRAGMENT
    if covered_by_control_flow_test(block):
        return COVERED
    if block.language == "python":
        return PYTHON
    if block.language == "yaml" and flow_documents(block.text):
        return YAML
    if block.language in {"console", "bash"}:
        commands = shell_commands(block)
        if commands and all(command.runnable() for command in commands):
            return SHELL
    return None


def pages_with(kind: str) -> list[str]:
    return [page for page in PAGES if any(how_run(b) == kind for b in BLOCKS[page])]


def blocks_of(kind: str) -> list[Block]:
    return [block for page in PAGES for block in BLOCKS[page] if how_run(block) == kind]


# -- every block is run or marked ------------------------------------------------------


def test_the_harness_reads_every_fence() -> None:
    for page in PAGES:
        fences = sum(1 for line in (DOCS / page).read_text().splitlines() if line.strip() == "```")
        opened = sum(1 for block in BLOCKS[page] if not block.language)
        assert fences - opened == len(BLOCKS[page]), page


@pytest.mark.parametrize("page", PAGES)
def test_every_block_is_run_or_marked(page: str) -> None:
    blocks, stray = READ[page]
    problems = [f"docs/{page}:{line}: a fragment marker not right before a fence" for line in stray]
    for block in blocks:
        if block.fragment == "":
            problems.append(f"{block.where}: the fragment marker gives no reason")
        elif how_run(block) is None:
            problems.append(
                f"{block.where}: a ```{block.language} block that is neither run nor marked "
                "with <!-- fragment: REASON --> on the line before it"
            )
    assert not problems, "\n".join(problems)


def test_control_flow_blocks_said_to_be_covered_are() -> None:
    """The blocks of docs/control-flow.md counted as run are the ones its test runs."""
    covered = [block for block in BLOCKS["control-flow.md"] if how_run(block) == COVERED]
    examples = page_examples()
    manifests = sum(1 for block in covered if block.language == "yaml")
    assert manifests == len(examples)
    assert len(covered) == len(examples) + sum(
        len(example.runs) + len(example.validations) for example in examples
    )


# -- Python ----------------------------------------------------------------------------


@pytest.mark.parametrize("page", pages_with(PYTHON))
def test_the_python_blocks_of_the_page_run(page: str, tmp_path: Path) -> None:
    blocks = [block for block in BLOCKS[page] if how_run(block) == PYTHON]
    request = {
        "page": str(DOCS / page),
        "blocks": [{"line": block.line, "code": block.text} for block in blocks],
    }
    completed = subprocess.run(
        [sys.executable, str(RUNNER)],
        input=json.dumps(request),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    ran = [int(n) for n in re.findall(r"^\[docs-block\] ran (\d+)$", completed.stdout, re.M)]
    failed = next((b for b in blocks if b.line not in ran), None)
    assert completed.returncode == 0, (
        f"{failed.where if failed else page}: the block failed\n{completed.stderr[-6000:]}"
    )
    assert ran == [block.line for block in blocks]


# -- YAML ------------------------------------------------------------------------------


def _module_file(directory: Path, module: str) -> bool:
    path = directory.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def module_home(modules: list[str]) -> Path:
    """The one directory of examples/ holding every module of ``modules``."""
    homes = [
        directory
        for directory in sorted(EXAMPLES.iterdir())
        if directory.is_dir() and all(_module_file(directory, m) for m in modules)
    ]
    assert len(homes) == 1, (
        f"worker.modules {modules} should be in exactly one directory of examples/ "
        f"(put the docs' task modules in examples/docs/); found {homes}"
    )
    return homes[0]


@dataclass
class PipelineSource:
    """Where a PipelineRun's Pipeline is written: a block of the page, or an example."""

    document: dict[str, Any]
    block: Block | None = None
    path: Path | None = None


def find_pipeline(name: str, page: str) -> PipelineSource:
    for block in BLOCKS[page]:
        for document in flow_documents(block.text):
            if document.get("kind") == "Pipeline" and document["metadata"].get("name") == name:
                return PipelineSource(document, block=block)
    found = [
        PipelineSource(document, path=path)
        for path in sorted(EXAMPLES.glob("*/*.yaml"))
        for document in flow_documents(path.read_text(encoding="utf-8"))
        if document.get("kind") == "Pipeline" and document["metadata"].get("name") == name
    ]
    assert len(found) == 1, (
        f"Pipeline {name!r}: on no block of docs/{page}, and {found} in examples/"
    )
    return found[0]


def _modules(pipeline: dict[str, Any]) -> list[str]:
    return [str(module) for module in pipeline["spec"]["worker"]["modules"]]


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(CLI), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert "Traceback" not in completed.stdout + completed.stderr, completed.stderr
    return completed


@pytest.mark.parametrize("block", blocks_of(YAML), ids=lambda block: block.where)
def test_the_yaml_block_validates_or_runs(block: Block, tmp_path: Path) -> None:
    documents = flow_documents(block.text)
    runs = [d for d in documents if d.get("kind") == "PipelineRun"]
    pipelines = [d for d in documents if d.get("kind") == "Pipeline"]
    source: PipelineSource | None = None
    if runs and not pipelines:
        spec = runs[0]["spec"]
        if "pipelineSpec" in spec:
            pipelines = [{"spec": spec["pipelineSpec"]}]
        else:
            source = find_pipeline(str(spec["pipelineRef"]["name"]), block.page)
            pipelines = [source.document]
    modules = sorted({module for pipeline in pipelines for module in _modules(pipeline)})
    # An example's Pipeline runs where it is, beside its own task modules.
    home = source.path.parent if source and source.path else module_home(modules)
    scratch = tmp_path / home.name
    shutil.copytree(home, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    stem = Path(block.page).stem
    saved = scratch / f"{stem}-{block.line}.yaml"
    saved.write_text(block.text, encoding="utf-8")
    files = [saved]
    if source is not None and source.block is not None:
        files.insert(0, scratch / f"{stem}-{source.block.line}.yaml")
        files[0].write_text(source.block.text, encoding="utf-8")
    elif source is not None and source.path is not None:
        files.insert(0, scratch / source.path.name)
        if not files[0].exists():
            shutil.copy(source.path, files[0])
    if runs:
        completed = cli("run", *files, "--progress", "none", "-o", "json", cwd=scratch)
        assert completed.returncode == 0, f"{block.where}\n{completed.stdout}{completed.stderr}"
        assert json.loads(completed.stdout)["status"]["phase"] == "Succeeded"
    else:
        completed = cli("validate", saved, cwd=scratch)
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, f"{block.where}\n{output}"
        assert output.startswith("valid: "), output


# -- console and bash ------------------------------------------------------------------


def shown_pattern(shown: str) -> re.Pattern[str] | None:
    """What a line the page shows matches (None: it stands for nothing in particular)."""
    shown = shown.rstrip()
    if not shown.strip() or shown.strip() == "...":
        return None
    pattern = ""
    for number, part in enumerate(shown.split("[...]")):
        if number:
            pattern += ".*"
        position = 0
        for found in VARIABLE.finditer(part):
            run_id = found["id"]
            if run_id is not None and len(run_id) not in RUN_ID_LENGTHS:
                continue
            pattern += re.escape(part[position : found.start()])
            pattern += r"\d+\.\d+s" if run_id is None else f"[0-9a-f]{{{len(run_id)}}}"
            position = found.end()
        pattern += re.escape(part[position:])
    return re.compile(pattern)


def missing_lines(shown: list[str], printed: list[str]) -> list[str]:
    printed = [line.rstrip() for line in printed]
    missing = []
    for line in shown:
        pattern = shown_pattern(line)
        if pattern is not None and not any(pattern.fullmatch(p) for p in printed):
            missing.append(line)
    return missing


def expected_status(commands: list[Command], index: int) -> int:
    following = commands[index + 1] if index + 1 < len(commands) else None
    if following is not None and following.text.strip() == ECHO_STATUS and following.shown:
        return int(following.shown[0].strip())
    if any(PROBLEM.match(line) for line in commands[index].shown):
        return 2
    return 0


class Worker:
    """A command running in the background, its output gathered line by line."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, shown: list[str], timeout: float) -> list[str]:
        """Wait until every line of ``shown`` was printed; the ones that were not."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while missing := missing_lines(shown, self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or not self.reader.is_alive():
                    return missing
                self.changed.wait(left)
        return []

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.reader.join()


@dataclass
class Session:
    """A page's shell: a scratch copy of examples/, the environment, workers started."""

    directory: Path
    redis_url: str | None
    workers: list[Worker] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        path = f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "PATH": path, "COLUMNS": "80", "NO_COLOR": "1"}

    def _command(self, text: str, background: bool = False) -> list[str]:
        if self.redis_url is not None:
            text = text.replace(LOCAL_REDIS, self.redis_url)
        return ["bash", "-c", f"exec {text}" if background else text]

    def _as_shown(self, output: str) -> str:
        return output if self.redis_url is None else output.replace(self.redis_url, LOCAL_REDIS)

    def run(self, command: Command, expected: int) -> str | None:
        """Run ``command``; what is wrong with what it did (None: nothing)."""
        where = f"$ {command.text}"
        if command.in_background:
            worker = Worker(self._command(command.text, True), self.directory, self.env)
            self.workers.append(worker)
            missing = worker.wait_for(command.shown, WORKER_START_SECONDS)
            if missing:
                output = self._as_shown("\n".join(worker.lines))
                return f"{where}\n  never printed {missing}\n  it printed:\n{output}"
            return None
        completed = subprocess.run(
            self._command(command.text),
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
        output = self._as_shown(completed.stdout + completed.stderr)
        problems = []
        if completed.returncode != expected:
            problems.append(f"exit status {completed.returncode}, the page says {expected}")
        if "Traceback" in output:
            problems.append("a traceback")
        missing = missing_lines(command.shown, output.splitlines())
        if missing:
            problems.append(f"these lines shown were not printed: {missing}")
        if not problems:
            return None
        return f"{where}\n  " + "\n  ".join(problems) + f"\n  it printed:\n{output}"

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()


def scratch_copy(directory: Path, page: str) -> Path:
    """examples/ in ``directory``, with ``.venv`` and what the page says to save."""
    shutil.copytree(EXAMPLES, directory / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (directory / ".venv").symlink_to(VENV, target_is_directory=True)
    pattern = SAVED_AS.get(page)
    if pattern is not None:
        for block in BLOCKS[page]:
            for document in flow_documents(block.text):
                if document.get("kind") == "Pipeline":
                    target = directory / pattern.format(name=document["metadata"]["name"])
                    target.write_text(block.text, encoding="utf-8")
    return directory


@contextmanager
def session(directory: Path, redis_url: str | None) -> Iterator[Session]:
    shell = Session(directory, redis_url)
    try:
        yield shell
    finally:
        shell.close()


@pytest.mark.parametrize("page", pages_with(SHELL))
def test_the_commands_of_the_page_do_what_it_shows(
    page: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    blocks = [block for block in BLOCKS[page] if how_run(block) == SHELL]
    commands = [(block, shell_commands(block)) for block in blocks]
    uses_redis = any(LOCAL_REDIS in c.text for _, cs in commands for c in cs)
    redis_url = str(request.getfixturevalue("redis_url")) if uses_redis else None
    problems = []
    with session(scratch_copy(tmp_path, page), redis_url) as shell:
        for block, block_commands in commands:
            for index, command in enumerate(block_commands):
                if command.text.strip() == ECHO_STATUS:
                    continue  # the status of the command before it, checked with it
                problem = shell.run(command, expected_status(block_commands, index))
                if problem is not None:
                    problems.append(f"docs/{page}:{command.line} (block {block.where}): {problem}")
    assert not problems, "\n\n".join(problems)
