"""Compile a Pipeline spec into the library's ``DAG``.

Steps become ``DAGNode``s that name their task by string, so a graph can be built and
checked without the task code. When a ``TaskResolver`` has imported the pipeline's
``worker.modules``, the compiler also checks that every task exists and that each step
passes what its function needs, and reads signatures where the manifest leaves
something implicit (a map's item parameter, the sequential "first argument").

Every problem is collected, with the field path it belongs to, before anything is
raised: a user fixes a manifest in one round, not one error at a time.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from taskiq.abc.broker import AsyncBroker

from taskiq_flow.core.retry import NO_RETRY, RetryPolicy
from taskiq_flow.dataflow.dag import DAG, NOTHING, POSITIONAL_ITEM, DAGNode
from taskiq_flow.dataflow.memory import paused_gc
from taskiq_flow.decorators import context_parameter
from taskiq_flow.errors import (
    DAGError,
    DuplicateNodeError,
    DuplicateOutputError,
    ErrorHandlingMode,
    UnknownDependencyError,
)
from taskiq_flow.manifests.flow import RUN_DATA, consumed_at, control_flow, step_path
from taskiq_flow.manifests.models import (
    ErrorMode,
    Mode,
    PipelineInput,
    PipelineRunSpec,
    PipelineSpec,
    RetrySpec,
    StepSpec,
)
from taskiq_flow.manifests.problems import ManifestError, Problem

__all__ = [
    "CompiledPipeline",
    "RunSettings",
    "TaskResolver",
    "broker_task_message",
    "compile_pipeline",
    "error_mode_of",
    "retry_policy",
]

_ERROR_MODES = {
    ErrorMode.FAIL_FAST: ErrorHandlingMode.FAIL_FAST,
    ErrorMode.CONTINUE_ON_ERROR: ErrorHandlingMode.CONTINUE_ON_ERROR,
    ErrorMode.SKIP_FAILED: ErrorHandlingMode.SKIP_FAILED,
}


def error_mode_of(mode: ErrorMode | str) -> ErrorHandlingMode:
    """The library's mode for a manifest's ``errorMode``."""
    return _ERROR_MODES[ErrorMode(mode)]


def retry_policy(spec: RetrySpec | None) -> RetryPolicy:
    """The library's ``RetryPolicy`` for a step's ``retries``.

    A manifest's retries are bounded by their count, ``maxDurationSeconds`` when given and
    the step and run timeouts, not by the library's default cap on total retry time.
    """
    if spec is None:
        return NO_RETRY
    return RetryPolicy(
        retries=spec.limit,
        delay=spec.delay_seconds,
        backoff=spec.backoff,
        max_delay=spec.max_delay_seconds,
        jitter=spec.jitter,
        max_retry_time=spec.max_duration_seconds,
    )


# -- finding tasks -----------------------------------------------------------------------


def broker_task_message(name: str) -> str:
    """Why a task declared with a broker's own ``@broker.task`` cannot run a manifest."""
    return (
        f"task {name!r} is declared on the module's own broker (@broker.task): declare it "
        "with @taskiq_flow.task so every broker finds it"
    )


class TaskResolver:
    """Imports a pipeline's modules and finds the tasks they declare.

    Tasks declared with ``taskiq_flow.task`` are taskiq shared tasks, found by name in
    taskiq's global registry whatever broker runs them.
    """

    def __init__(self, modules: Iterable[str]) -> None:
        self.modules = list(dict.fromkeys(modules))
        self.failures: dict[str, str] = {}
        self._loaded: dict[str, Any] = {}
        for module in self.modules:
            try:
                self._loaded[module] = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                missing = exc.name or module
                if missing == module or module.startswith(f"{missing}."):
                    self.failures[module] = f"cannot import module {module!r}: no such module"
                else:
                    self.failures[module] = (
                        f"cannot import module {module!r}: it imports {missing!r}, "
                        "which is not installed"
                    )
            except Exception as exc:  # the module's own code failed
                self.failures[module] = (
                    f"cannot import module {module!r}: {type(exc).__name__}: {exc}"
                )

    @property
    def complete(self) -> bool:
        """True when every module was imported: then an unknown name is an error."""
        return not self.failures

    def find(self, name: str) -> Any | None:
        """The task named ``name``, if a shared task of that name exists."""
        return AsyncBroker.global_task_registry.get(name)

    def function(self, task: Any) -> Callable[..., Any]:
        """The user's function behind a task."""
        func: Callable[..., Any] = getattr(task, "original_func", task)
        return func

    def unknown_task_message(self, name: str) -> str:
        """Why ``name`` is not found, with a suggestion when one is close."""
        for module in self._loaded.values():
            for value in vars(module).values():
                if getattr(value, "task_name", None) == name:
                    return broker_task_message(name)
        where = ", ".join(self.modules)
        text = f"unknown task {name!r}: no module in worker.modules ({where}) defines it"
        close = difflib.get_close_matches(name, list(AsyncBroker.global_task_registry), n=1)
        if close:
            text += f"; did you mean {close[0]!r}?"
        return text


# -- the compiled pipeline ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSettings:
    """How one run executes: the pipeline's settings with the run's overrides applied."""

    parallelism: int | None  # tasks in flight, items included; None: no bound
    error_mode: ErrorHandlingMode
    timeout: float | None


@dataclass
class CompiledPipeline:
    """A validated pipeline: its DAG, its inputs, and which step each node came from."""

    name: str
    spec: PipelineSpec
    dag: DAG
    inputs: dict[str, PipelineInput]
    tasks: dict[str, Any] = field(default_factory=dict)

    @property
    def final_output(self) -> str:
        """The last step's output (the result of a sequential pipeline)."""
        return self.spec.steps[-1].output_name

    def settings(self, run: PipelineRunSpec | None = None) -> RunSettings:
        """The pipeline's run settings; a PipelineRun's overrides win."""
        spec = self.spec
        parallelism = spec.parallelism
        mode: ErrorMode | str = spec.error_mode
        timeout = spec.timeout_seconds
        if run is not None:
            parallelism = run.parallelism or parallelism
            mode = run.error_mode or mode
            timeout = run.timeout_seconds or timeout
        return RunSettings(parallelism, error_mode_of(mode), timeout)

    def run_inputs(self, *given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The run's inputs: defaults, overlaid by each of ``given`` in turn.

        Raises ``ManifestError`` naming every unknown input and every required input
        that is missing.
        """
        values: dict[str, Any] = {
            name: spec.default for name, spec in self.inputs.items() if not spec.required
        }
        problems: list[Problem] = []
        for source in given:
            for name, value in (source or {}).items():
                if name not in self.inputs:
                    known = ", ".join(self.inputs) or "none"
                    problems.append(
                        Problem(
                            "",
                            f"unknown input {name!r}; the pipeline's inputs are: {known}",
                        )
                    )
                values[name] = value
        for name, spec in self.inputs.items():
            if spec.required and name not in values:
                problems.append(
                    Problem(
                        "",
                        f"required input {name!r} is not given: pass --input {name}=JSON "
                        "or set spec.inputs in a PipelineRun",
                    )
                )
        if problems:
            raise ManifestError(problems)
        return values


# -- compiling ---------------------------------------------------------------------------


@dataclass
class _Signature:
    """What a step's function accepts."""

    required: list[str]
    optional: dict[str, Any]
    names: set[str]
    var_keyword: bool

    @classmethod
    def of(cls, func: Callable[..., Any]) -> _Signature:
        context = context_parameter(func)
        required: list[str] = []
        optional: dict[str, Any] = {}
        names: set[str] = set()
        var_keyword = False
        for name, param in inspect.signature(func).parameters.items():
            if name == context or name in ("self", "cls"):
                continue
            if param.kind is param.VAR_KEYWORD:
                var_keyword = True
                continue
            if param.kind is param.VAR_POSITIONAL:
                continue
            names.add(name)
            if param.default is inspect.Parameter.empty:
                required.append(name)
            else:
                optional[name] = param.default
        return cls(required, optional, names, var_keyword)

    def accepts(self, name: str) -> bool:
        return self.var_keyword or name in self.names

    @property
    def first(self) -> str | None:
        ordered = [*self.required, *self.optional]
        return ordered[0] if ordered else None


class _Compiler:
    def __init__(self, spec: PipelineSpec, resolver: TaskResolver | None, prefix: str) -> None:
        self.spec = spec
        self.resolver = resolver
        self.prefix = prefix
        self.problems: list[Problem] = []
        self.tasks: dict[str, Any] = {}
        self.signatures: dict[int, _Signature] = {}
        self.inputs = {i.name: i for i in spec.inputs or []}
        self.steps = spec.all_steps  # the finally steps after the others, numbered on

    def problem(self, index: int | None, where: str, message: str) -> None:
        """A problem of step ``index`` (of ``steps``: a finally step's path says so)."""
        path = step_path(self.spec, index, self.prefix)
        self.problems.append(Problem(f"{path}{where}", message))

    # -- tasks ---------------------------------------------------------------------------

    def resolve_tasks(self) -> None:
        resolver = self.resolver
        if resolver is None:
            return
        for module, message in resolver.failures.items():
            index = self.spec.worker.modules.index(module)
            self.problems.append(Problem(f"{self.prefix}.worker.modules[{index}]", message))
        for index, step in enumerate(self.steps):
            task = resolver.find(step.task)
            if task is None:
                if resolver.complete:
                    self.problem(index, ".task", resolver.unknown_task_message(step.task))
                continue
            self.tasks[step.name] = task
            try:
                self.signatures[index] = _Signature.of(resolver.function(task))
            except (TypeError, ValueError):  # a callable without a signature: trust the step
                continue

    # -- nodes ---------------------------------------------------------------------------

    def check_call(
        self, index: int, step: StepSpec, passed: Sequence[str], item: str | None
    ) -> None:
        """The step passes every required parameter and only parameters that exist."""
        signature = self.signatures.get(index)
        if signature is None:
            return
        for position, name in enumerate(step.inputs or []):
            if not signature.accepts(name):
                self.problem(
                    index, f".inputs[{position}]", f"task {step.task!r} has no parameter {name!r}"
                )
        for name in step.args or {}:
            if not signature.accepts(name):
                self.problem(
                    index, f".args.{name}", f"task {step.task!r} has no parameter {name!r}"
                )
        if item is not None and not signature.accepts(item):
            each = ".map" if step.map is not None else ".filter"
            self.problem(
                index, f"{each}.as", f"task {step.task!r} has no parameter {item!r} for the item"
            )
        given = {*passed, *(step.args or {}), *([item] if item else [])}
        missing = [name for name in signature.required if name not in given]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            self.problem(
                index,
                "",
                f"task {step.task!r} needs {names}, which step {step.name!r} does not pass: "
                "add them to inputs (data) or args (constants)",
            )

    def node(
        self,
        index: int,
        step: StepSpec,
        inputs: Sequence[str],
        *,
        optional: Mapping[str, Any] | None = None,
        bindings: Mapping[str, str] | None = None,
        depends_on: Sequence[str] = (),
        over: str | None = None,
        item: str | None = None,
        first_arg: str | None = None,
    ) -> DAGNode:
        each = step.each
        return DAGNode(
            name=step.name,
            task_name=step.task,
            outputs=(step.output_name,),
            inputs=tuple(dict.fromkeys(inputs)),
            optional_inputs=dict(optional) if optional else NOTHING,
            depends_on=tuple(dict.fromkeys([*depends_on, *(d.step for d in step.dependencies)])),
            task=self.tasks.get(step.name),
            retry=retry_policy(step.retries),
            timeout=step.timeout_seconds,
            args=dict(step.args) if step.args else NOTHING,
            bindings=dict(bindings) if bindings else NOTHING,
            kind="map" if each is not None else "task",
            map_over=over,
            map_param=item,
            max_parallel=each.max_parallel if each is not None else None,
            filter_items=step.filter is not None,
            continue_on_failure=step.continue_on_failure,
            first_arg=first_arg,
        )

    def item_passing(self, index: int, step: StepSpec, item: str | None) -> str:
        """How each item reaches the task: by ``map.as``, else as its first positional
        argument (so that a driver without the task's code passes it the same way)."""
        each = step.each
        assert each is not None
        if each.as_ is not None:
            return each.as_
        signature = self.signatures.get(index)
        if signature is not None and item is not None and item != signature.first:
            key = "map" if step.map is not None else "filter"
            self.problem(
                index,
                f".{key}",
                f"each item is passed as the first argument of {step.task!r}, "
                f"{signature.first!r}, but {item!r} is the parameter left for it: "
                f"set {key}.as",
            )
        return POSITIONAL_ITEM

    def item_param(self, index: int, step: StepSpec, taken: Iterable[str]) -> str | None:
        each = step.each
        assert each is not None
        if each.as_ is not None:
            return each.as_
        signature = self.signatures.get(index)
        if signature is None:
            return None
        busy = {*taken, *(step.args or {})}
        free = [name for name in [*signature.required, *signature.optional] if name not in busy]
        if not free:
            self.problem(
                index,
                "",
                f"task {step.task!r} has no parameter left to receive each item: "
                "set map.as (or filter.as)",
            )
            return None
        return free[0]

    def dataflow_nodes(self, first: int = 0) -> list[DAGNode]:
        """The nodes of ``steps[first:]``, each consuming what it names."""
        nodes = []
        for index, step in enumerate(self.steps[first:], start=first):
            signature = self.signatures.get(index)
            each = step.each
            args = step.args or {}
            optional: dict[str, Any] = {}
            if step.inputs is not None:
                inputs = list(step.inputs)
            elif signature is not None:
                inputs = [name for name in signature.required if name not in args]
                optional = {k: v for k, v in signature.optional.items() if k not in args}
            else:
                inputs = []
            over = item = None
            if each is not None:
                key = "map" if step.map is not None else "filter"
                over = each.over
                if over is None:
                    self.problem(
                        index,
                        f".{key}",
                        f"in dataflow mode {key}.over must name the list to go through "
                        "(a pipeline input or another step's output)",
                    )
                item = self.item_param(index, step, step.inputs or [])
                if step.inputs is None and item is not None:
                    inputs = [name for name in inputs if name != item]
                    optional.pop(item, None)
                optional.pop(item or "", None)
            self.check_call(index, step, inputs, item)
            nodes.append(
                self.node(
                    index,
                    step,
                    inputs,
                    optional=optional,
                    over=over,
                    item=self.item_passing(index, step, item),
                )
                if each is not None
                else self.node(index, step, inputs, optional=optional)
            )
        return nodes

    def sequential_nodes(self) -> list[DAGNode]:
        nodes: list[DAGNode] = []
        previous: StepSpec | None = None
        for index, step in enumerate(self.spec.steps):
            signature = self.signatures.get(index)
            each = step.each
            extra = list(step.inputs or [])
            after = [previous.name] if previous is not None else []
            if previous is None:
                # The first step receives the run's inputs as keyword arguments.
                if each is not None:
                    key = "map" if step.map is not None else "filter"
                    over = each.over
                    if over is None and len(self.inputs) == 1:
                        over = next(iter(self.inputs))
                    if over is None:
                        self.problem(
                            index,
                            f".{key}.over",
                            f"the first step of a sequential pipeline has no previous output: "
                            f"{key}.over must name a pipeline input",
                        )
                    item = self.item_param(index, step, extra)
                    self.check_call(index, step, extra, item)
                    node = self.node(
                        index, step, extra, over=over, item=self.item_passing(index, step, item)
                    )
                else:
                    if step.inputs is not None:
                        inputs = extra
                    elif self.spec.inputs is not None:
                        inputs = list(self.inputs)
                    elif signature is not None:
                        inputs = [n for n in signature.required if n not in (step.args or {})]
                    else:
                        inputs = []
                    self.check_call(index, step, inputs, None)
                    node = self.node(index, step, inputs)
            else:
                # Each later step receives the previous output as its first argument.
                flowing = previous.output_name
                if each is not None:
                    item = self.item_param(index, step, extra)
                    self.check_call(index, step, extra, item)
                    over = each.over or flowing
                    node = self.node(
                        index,
                        step,
                        extra,
                        depends_on=after,
                        over=over,
                        item=self.item_passing(index, step, item),
                    )
                else:
                    first = flowing
                    if signature is not None:
                        busy = {*extra, *(step.args or {})}
                        free = [
                            n for n in [*signature.required, *signature.optional] if n not in busy
                        ]
                        if not free:
                            self.problem(
                                index,
                                ".task",
                                f"task {step.task!r} takes no parameter to receive the previous "
                                f"step's output",
                            )
                        else:
                            first = free[0]
                            if first != signature.first:
                                self.problem(
                                    index,
                                    ".task",
                                    f"the previous step's output is passed as the first "
                                    f"argument of {step.task!r}, {signature.first!r}, which "
                                    "inputs or args set too",
                                )
                    self.check_call(index, step, [first, *extra], None)
                    node = self.node(
                        index, step, [flowing, *extra], depends_on=after, first_arg=flowing
                    )
            nodes.append(node)
            previous = step
        # Finally steps do not take part in the chain: they name what they consume.
        return [*nodes, *self.dataflow_nodes(first=len(nodes))]

    # -- the graph -----------------------------------------------------------------------

    def check_graph(self, nodes: list[DAGNode]) -> bool:
        """Every structural problem the DAG would raise, all of them; False if any."""
        ok = True
        steps = self.steps
        seen: dict[str, int] = {}
        for index, step in enumerate(steps):
            if step.name in seen:
                self.problem(index, ".name", DuplicateNodeError(step.name).message)
                ok = False
            seen.setdefault(step.name, index)
        for position, declared in enumerate(self.spec.inputs or ()):
            if declared.name == RUN_DATA:
                message = f"the data name {RUN_DATA!r} is reserved: rename the input"
                self.problems.append(Problem(f"{self.prefix}.inputs[{position}].name", message))
                ok = False
        producers: dict[str, str] = {}
        for index, step in enumerate(steps):
            output = step.output_name
            where = ".output" if step.output is not None else ".name"
            if output in self.inputs:
                self.problem(
                    index,
                    where,
                    f"output {output!r} has the name of a pipeline input; rename one of them",
                )
                ok = False
            elif output == RUN_DATA:
                self.problem(index, where, f"the data name {RUN_DATA!r} is reserved: rename it")
                ok = False
            elif output in producers and producers[output] != step.name:
                error = DuplicateOutputError(output, [producers[output], step.name])
                self.problem(index, where, error.message)
                ok = False
            producers.setdefault(output, step.name)
        for index, step in enumerate(steps):
            for position, dep in enumerate(d.step for d in step.dependencies):
                if dep not in seen:
                    unknown = UnknownDependencyError(step.name, dep)
                    self.problem(index, f".dependsOn[{position}]", unknown.message)
                    ok = False
        for index, (step, node) in enumerate(zip(steps, nodes, strict=True)):
            for name in node.consumed:
                if name in producers or name in self.inputs or name == RUN_DATA:
                    continue
                where = consumed_at(step, name)
                self.problem(
                    index,
                    where,
                    f"no step produces {name!r} (needed by step {step.name!r}) and spec.inputs "
                    "does not declare it",
                )
        return ok

    def build(self) -> DAG | None:
        self.resolve_tasks()
        nodes = (
            self.sequential_nodes() if self.spec.mode == Mode.SEQUENTIAL else self.dataflow_nodes()
        )
        if not self.check_graph(nodes):
            return None
        if not control_flow(self.spec, self.steps, nodes, self.problem):
            return None
        try:
            return DAG(nodes)
        except DAGError as exc:
            cycle: list[str] = list(getattr(exc, "cycle", []))
            names = [s.name for s in self.steps]
            index = names.index(cycle[0]) if cycle and cycle[0] in names else None
            self.problem(index, "", exc.message)
            return None


@paused_gc()
def compile_pipeline(
    spec: PipelineSpec,
    *,
    name: str = "pipeline",
    resolver: TaskResolver | None = None,
    prefix: str = "spec",
) -> CompiledPipeline:
    """The pipeline's DAG; raises ``ManifestError`` listing every problem found.

    Without a ``resolver`` task names are not checked and signatures are not read
    (enough to validate and draw a manifest without its code). ``prefix`` is the field
    path of ``spec`` in its document (``spec.pipelineSpec`` for an inline pipeline).
    """
    compiler = _Compiler(spec, resolver, prefix)
    dag = compiler.build()
    if compiler.problems or dag is None:
        raise ManifestError(compiler.problems)
    return CompiledPipeline(
        name=name, spec=spec, dag=dag, inputs=dict(compiler.inputs), tasks=dict(compiler.tasks)
    )
