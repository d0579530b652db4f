"""The ``Pipeline`` and ``PipelineRun`` resources as pydantic models.

These models are the single source of truth for the manifests: ``taskiq-flow validate``
checks documents against them, ``taskiq_flow.manifests.crds`` generates the CRDs' OpenAPI
schemas from them, and ``docs/manifests.md`` describes them. Python attribute names are
snake_case; the manifest spelling (camelCase, as in api.md) is each field's alias.

Unknown fields are errors everywhere except ``metadata`` (which belongs to Kubernetes)
and the free JSON values (``inputs``, ``args``, defaults, outputs).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "DATA_NAME_PATTERN",
    "OBJECT_NAME_MAX",
    "OBJECT_NAME_PATTERN",
    "STEP_NAME_PATTERN",
    "Condition",
    "Dependency",
    "DagStatus",
    "ErrorMode",
    "ItemCounts",
    "MapSpec",
    "Mode",
    "ObjectMeta",
    "Pipeline",
    "PipelineInput",
    "PipelinePhase",
    "PipelineRef",
    "PipelineRun",
    "PipelineRunSpec",
    "PipelineRunStatus",
    "Outcome",
    "PipelineSpec",
    "PipelineStatus",
    "Replicas",
    "RetrySpec",
    "RunPhase",
    "StepPhase",
    "StepSpec",
    "StepStatus",
    "WorkerSpec",
    "WorkerStatus",
]

API_GROUP = "flow.taskiq.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"

STEP_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1123 label: step names become parts of task ids and Kubernetes names."""

DATA_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""Data names are passed to tasks as keyword arguments, so they are identifiers."""

_STEP_NAME = re.compile(STEP_NAME_PATTERN)

OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS-1123 subdomain: the names the Kubernetes API server accepts for Pipelines and
PipelineRuns (at most ``OBJECT_NAME_MAX`` characters)."""
OBJECT_NAME_MAX = 253

_OBJECT_NAME = re.compile(OBJECT_NAME_PATTERN)
_OBJECT_NAME_RULE = (
    "use lower-case letters, digits, '-' and '.', starting and ending with a letter or "
    f"digit, at most {OBJECT_NAME_MAX} characters (a DNS-1123 subdomain, as Kubernetes "
    "requires)"
)

StepName = Annotated[str, Field(pattern=STEP_NAME_PATTERN, min_length=1, max_length=63)]
DataName = Annotated[str, Field(pattern=DATA_NAME_PATTERN, min_length=1)]
FreeObject = dict[str, Any]
"""A JSON object of any shape (``x-kubernetes-preserve-unknown-fields``)."""


class _Model(BaseModel):
    """Strict: unknown fields are errors; camelCase aliases; Python names accepted too."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
    )


class Mode(StrEnum):
    """How steps are connected."""

    DATAFLOW = "dataflow"
    SEQUENTIAL = "sequential"


class ErrorMode(StrEnum):
    """What a run does when a step fails for good (see docs/error-modes.md)."""

    FAIL_FAST = "FailFast"
    CONTINUE_ON_ERROR = "ContinueOnError"
    SKIP_FAILED = "SkipFailed"


class Outcome(StrEnum):
    """How a step ended, as a ``dependsOn`` entry may wait for it."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"


class PipelinePhase(StrEnum):
    """Whether a Pipeline can run."""

    READY = "Ready"
    INVALID = "Invalid"


class RunPhase(StrEnum):
    """The phase of a PipelineRun."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class StepPhase(StrEnum):
    """The phase of one step of a run."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


# -- metadata ----------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """Kubernetes object metadata. Only the fields taskiq-flow reads are typed; the API
    server owns the rest, so unknown fields are kept rather than rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str | None = Field(default=None, description="The object's name.")
    generate_name: str | None = Field(default=None, description="A prefix for a generated name.")
    namespace: str | None = Field(default=None, description="The object's namespace.")
    labels: dict[str, str] | None = Field(default=None, description="Labels.")
    annotations: dict[str, str] | None = Field(default=None, description="Annotations.")

    @field_validator("name")
    @classmethod
    def _name_is_a_subdomain(cls, value: str | None) -> str | None:
        if value is not None and not is_object_name(value):
            raise ValueError(f"{value!r} is not a valid name: {_OBJECT_NAME_RULE}")
        return value

    @field_validator("generate_name")
    @classmethod
    def _prefix_is_a_subdomain(cls, value: str | None) -> str | None:
        # The API server checks a prefix as a name, a trailing '-' allowed (it is followed
        # by the random suffix); an empty prefix is no prefix.
        if value and not is_object_name(value[:-1] + "a" if value.endswith("-") else value):
            raise ValueError(
                f"{value!r} is not a valid generateName: {_OBJECT_NAME_RULE}; it may end with '-'"
            )
        return value


# -- Pipeline ----------------------------------------------------------------------------


class Replicas(_Model):
    """Bounds for the operator's autoscaling of the pipeline's worker Deployment."""

    min: int = Field(default=0, ge=0, description="Workers kept when idle (0 scales to zero).")
    max: int = Field(default=1, ge=1, description="Most workers the operator starts.")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Replicas:
        if self.min > self.max:
            raise ValueError("replicas.min must not exceed replicas.max")
        return self


class LocalObjectReference(_Model):
    """A reference to an object in the same namespace, by name."""

    name: str = Field(min_length=1, description="The object's name.")


class WorkerSpec(_Model):
    """The worker that runs the pipeline's tasks: its code, its scale, its pod fields."""

    image: str | None = Field(
        default=None,
        min_length=1,
        description="Container image holding the task code and taskiq-flow (operator only).",
    )
    modules: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1,
        description="Python modules the worker imports to register its tasks.",
    )
    replicas: Replicas = Field(
        default_factory=Replicas, description="Autoscaling bounds of the worker Deployment."
    )
    concurrency: int = Field(default=10, ge=1, description="Tasks in flight per worker pod.")
    env: list[FreeObject] | None = Field(
        default=None, description="Container environment variables (pass-through)."
    )
    env_from: list[FreeObject] | None = Field(
        default=None, description="Container envFrom sources (pass-through)."
    )
    resources: FreeObject | None = Field(
        default=None, description="Container resource requests and limits (pass-through)."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Pod node selector (pass-through)."
    )
    tolerations: list[FreeObject] | None = Field(
        default=None, description="Pod tolerations (pass-through)."
    )
    affinity: FreeObject | None = Field(default=None, description="Pod affinity (pass-through).")
    service_account_name: str | None = Field(
        default=None, description="Pod service account (pass-through)."
    )
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, description="Pod image pull secrets (pass-through)."
    )
    scale_down_delay_seconds: float = Field(
        default=60,
        ge=0,
        description="Seconds with nothing in flight before the operator scales the workers "
        "back to replicas.min.",
    )


class PipelineInput(_Model):
    """An external input of the pipeline: required unless it has a default.

    A ``null`` default counts as none: the Kubernetes API server drops null fields, so a
    cluster would never see it, and the manifest must mean the same everywhere.
    """

    name: DataName = Field(description="The data name steps consume.")
    default: Any = Field(
        default=None,
        description="JSON value used when the run does not give one (null: no default).",
    )
    description: str | None = Field(default=None, description="What the input is for.")

    @property
    def required(self) -> bool:
        """True when the input has no default."""
        return self.default is None


class RetrySpec(_Model):
    """How often and how patiently a failed step is retried (exponential backoff)."""

    limit: int = Field(default=0, ge=0, description="Attempts after the first one.")
    delay_seconds: float = Field(default=1.0, ge=0, description="Wait before the first retry.")
    backoff: float = Field(default=2.0, ge=1, description="Factor applied to each next wait.")
    max_delay_seconds: float | None = Field(default=None, gt=0, description="Cap on a single wait.")
    jitter: bool = Field(
        default=True, description="Each wait is uniform in [w/2, w] rather than exactly w."
    )
    max_duration_seconds: float | None = Field(
        default=None,
        gt=0,
        description="No new attempt starts later than this after the first attempt began.",
    )


class MapSpec(_Model):
    """Run the step's task once per item of a list.

    In dataflow mode ``over`` names the list (an input or another step's output) and
    ``as`` the parameter that receives each item (default: the item is passed as the
    task's first positional argument). In sequential mode both may be omitted: the list
    is the previous step's output and the item is the task's first argument. Passing
    by position needs no task code, so the operator passes items exactly as
    ``taskiq-flow run`` does.
    """

    over: DataName | None = Field(default=None, description="Data name of the list.")
    as_: DataName | None = Field(
        default=None, alias="as", description="Parameter that receives each item."
    )
    max_parallel: int | None = Field(default=None, ge=1, description="Items in flight at most.")


class Dependency(_Model):
    """A step to wait for, and the outcomes of it that let this step run."""

    step: StepName = Field(description="The step waited for.")
    on: list[Outcome] = Field(
        default_factory=lambda: [Outcome.SUCCEEDED],
        min_length=1,
        description="Outcomes of it after which this step runs (default: Succeeded).",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_read_as_true(cls, data: Any) -> Any:
        # YAML 1.1 parsers (PyYAML, and kubectl's) read the bare key ``on`` as the
        # boolean true; kubectl then sends it as the key "true". Both mean ``on``.
        if isinstance(data, dict) and "on" not in data:
            for key in (True, "true"):
                if key in data:
                    data = {("on" if k == key else k): v for k, v in data.items()}
                    break
        return data


_NAMED, _SPELT_OUT = "dependsOn:name", "dependsOn:object"
UNION_TAGS = frozenset({_NAMED, _SPELT_OUT})
"""The tags pydantic puts in an error's location inside a ``dependsOn`` entry; a field
path leaves them out (``field_path``)."""

DependsOnEntry = Annotated[
    Annotated[StepName, Tag(_NAMED)] | Annotated[Dependency, Tag(_SPELT_OUT)],
    # An entry is validated as what it is: a mapping as ``{step, on}``, anything else as
    # a name; so a wrong entry gets the errors of one form, not of both.
    Discriminator(lambda value: _SPELT_OUT if isinstance(value, dict | Dependency) else _NAMED),
]


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> tuple[int | str, ...]:
    """A validation error's location as a field path: without union tags."""
    return tuple(part for part in loc if part not in UNION_TAGS)


class StepSpec(_Model):
    """One step: a task, what it consumes and produces, and how it is retried."""

    name: StepName = Field(description="DNS-1123 label, unique in the pipeline.")
    task: str = Field(min_length=1, description="The taskiq task name (module:function).")
    output: DataName | None = Field(
        default=None, description="Data name the step produces (default: the step name)."
    )
    inputs: list[DataName] | None = Field(
        default=None,
        description=(
            "Data names consumed, passed as keyword arguments (default: the task's "
            "required parameters)."
        ),
    )
    args: FreeObject | None = Field(
        default=None, description="Static keyword arguments (JSON values)."
    )
    depends_on: list[DependsOnEntry] | None = Field(
        default=None,
        description=(
            "Steps to wait for, without passing data: a name (after it Succeeded) or "
            "{step, on: [outcomes]} (Succeeded, Failed, Skipped)."
        ),
    )
    when: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description=(
            "CEL condition over inputs, outputs and steps, checked when the step's "
            "dependencies are done; false: the step is Skipped."
        ),
    )
    map: MapSpec | None = Field(
        default=None, description="Run the task once per item; the output is the results."
    )
    filter: MapSpec | None = Field(
        default=None,
        description="Run the task once per item; the output keeps items it returned true for.",
    )
    retries: RetrySpec | None = Field(default=None, description="Retry policy.")
    continue_on_failure: bool = Field(
        default=False,
        description="Its failure (after retries) does not fail the run; its consumers are skipped.",
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Time limit of one attempt (of one item, for a map)."
    )

    @model_validator(mode="after")
    def _one_of_map_filter(self) -> StepSpec:
        if self.map is not None and self.filter is not None:
            raise ValueError("a step has at most one of map and filter")
        return self

    @property
    def dependencies(self) -> list[Dependency]:
        """``dependsOn`` with each plain name as ``{step: name, on: [Succeeded]}``."""
        return [
            entry if isinstance(entry, Dependency) else Dependency(step=entry)
            for entry in self.depends_on or ()
        ]

    @property
    def output_name(self) -> str:
        """The data name this step produces."""
        return self.output or self.name.replace("-", "_")

    @property
    def each(self) -> MapSpec | None:
        """The step's ``map`` or ``filter`` spec."""
        return self.map if self.map is not None else self.filter


class PipelineSpec(_Model):
    """A pipeline: its steps, its inputs, its worker and its run settings."""

    mode: Mode = Field(default=Mode.DATAFLOW, description="dataflow (default) or sequential.")
    worker: WorkerSpec = Field(description="The worker that runs the tasks.")
    parallelism: int | None = Field(
        default=None,
        ge=1,
        description="Tasks in flight per run, map and filter items included (unset: no bound).",
    )
    error_mode: ErrorMode = Field(
        default=ErrorMode.FAIL_FAST, description="What a run does when a step fails."
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Time limit of a whole run."
    )
    inputs: list[PipelineInput] | None = Field(
        default=None, description="External inputs; required unless a default is given."
    )
    steps: list[StepSpec] = Field(min_length=1, description="The steps.")
    finally_: list[StepSpec] | None = Field(
        default=None,
        alias="finally",
        description=(
            "Steps run once every other step is over, whatever the outcome (also after "
            "a cancel or the run timeout); they may consume the data name run."
        ),
    )

    @property
    def all_steps(self) -> list[StepSpec]:
        """The steps, then the ``finally`` steps."""
        return [*self.steps, *(self.finally_ or ())]


class DagStatus(_Model):
    """The compiled graph."""

    levels: list[list[str]] | None = Field(
        default=None, description="Step names by depth: level n depends only on levels < n."
    )
    critical_path: list[str] | None = Field(default=None, description="The longest chain of steps.")


class WorkerStatus(_Model):
    """The pipeline's worker Deployment."""

    deployment: str | None = Field(default=None, description="The Deployment's name.")
    replicas: int | None = Field(default=None, description="Desired replicas.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas.")


class Condition(_Model):
    """A Kubernetes-style condition."""

    type: str = Field(description="The condition's type (Ready, Succeeded).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="CamelCase reason.")
    message: str | None = Field(default=None, description="Human-readable detail.")
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The generation the condition was computed for."
    )


class PipelineStatus(_Model):
    """What the operator found out about a Pipeline."""

    phase: PipelinePhase | None = Field(default=None, description="Ready or Invalid.")
    conditions: list[Condition] | None = Field(default=None, description="Condition Ready.")
    observed_generation: int | None = Field(
        default=None, description="The generation this status describes."
    )
    message: str | None = Field(default=None, description="Why the pipeline is invalid.")
    step_count: int | None = Field(default=None, description="Number of steps.")
    dag: DagStatus | None = Field(default=None, description="The compiled graph.")
    worker: WorkerStatus | None = Field(default=None, description="The worker Deployment.")


class Pipeline(_Model):
    """A reusable pipeline definition: steps connected by data, run by a worker."""

    api_version: Literal["flow.taskiq.dev/v1alpha1"] = Field(description="flow.taskiq.dev/v1alpha1")
    kind: Literal["Pipeline"] = Field(description="Pipeline")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: PipelineSpec = Field(description="The pipeline.")
    status: PipelineStatus | None = Field(default=None, description="Set by the operator.")


# -- PipelineRun -------------------------------------------------------------------------


class PipelineRef(_Model):
    """A Pipeline in the run's namespace."""

    name: str = Field(min_length=1, description="The Pipeline's name.")


class PipelineRunSpec(_Model):
    """One run of a pipeline, with its inputs and overrides of the pipeline's settings."""

    pipeline_ref: PipelineRef | None = Field(
        default=None, description="The Pipeline to run (or give pipelineSpec)."
    )
    pipeline_spec: PipelineSpec | None = Field(
        default=None, description="An inline pipeline (or give pipelineRef)."
    )
    inputs: FreeObject | None = Field(
        default=None, description="JSON values for the pipeline's inputs, by name."
    )
    parallelism: int | None = Field(
        default=None, ge=1, description="Overrides the pipeline's parallelism."
    )
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Overrides the pipeline's timeoutSeconds."
    )
    error_mode: ErrorMode | None = Field(
        default=None, description="Overrides the pipeline's errorMode."
    )
    cancel: bool = Field(default=False, description="Set true to cancel a running run.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the run this long after it ends."
    )

    @model_validator(mode="after")
    def _exactly_one_pipeline(self) -> PipelineRunSpec:
        if (self.pipeline_ref is None) == (self.pipeline_spec is None):
            raise ValueError("give exactly one of pipelineRef and pipelineSpec")
        return self


class ItemCounts(_Model):
    """Items of a map step."""

    total: int = Field(default=0, ge=0, description="Items to process.")
    succeeded: int = Field(default=0, ge=0, description="Items that succeeded.")
    failed: int = Field(default=0, ge=0, description="Items that failed for good.")
    running: int = Field(default=0, ge=0, description="Items in flight.")


class StepStatus(_Model):
    """One step of a run."""

    phase: StepPhase = Field(description="The step's phase.")
    attempts: int | None = Field(default=None, ge=0, description="Attempts started.")
    started_at: str | None = Field(default=None, description="First attempt's start (RFC 3339).")
    finished_at: str | None = Field(default=None, description="When it finished (RFC 3339).")
    duration_seconds: float | None = Field(default=None, description="Finished minus started.")
    message: str | None = Field(default=None, description="The last error, if any.")
    items: ItemCounts | None = Field(default=None, description="Item counters of a map step.")


class PipelineRunStatus(_Model):
    """Where a run is: its phase, each step's, and its outputs."""

    phase: RunPhase | None = Field(default=None, description="The run's phase.")
    progress: str | None = Field(
        default=None, description="Steps done (Succeeded or Skipped) / all steps."
    )
    started_at: str | None = Field(default=None, description="When the run started.")
    finished_at: str | None = Field(default=None, description="When the run finished.")
    duration_seconds: float | None = Field(default=None, description="How long it ran.")
    observed_generation: int | None = Field(
        default=None, description="The generation this status describes."
    )
    message: str | None = Field(default=None, description="Why the run failed, if it did.")
    conditions: list[Condition] | None = Field(
        default=None, description="Condition Succeeded: Unknown while running, then True/False."
    )
    steps: dict[str, StepStatus] | None = Field(default=None, description="Steps by name.")
    outputs: FreeObject | None = Field(
        default=None, description="Small outputs inline; large ones as {truncated, bytes}."
    )


class PipelineRun(_Model):
    """One execution of a pipeline, with its inputs; its status tracks every step."""

    api_version: Literal["flow.taskiq.dev/v1alpha1"] = Field(description="flow.taskiq.dev/v1alpha1")
    kind: Literal["PipelineRun"] = Field(description="PipelineRun")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: PipelineRunSpec = Field(description="The run.")
    status: PipelineRunStatus | None = Field(default=None, description="Set by the driver.")


def is_object_name(name: str) -> bool:
    """True for a valid Pipeline or PipelineRun name (a DNS-1123 subdomain)."""
    return len(name) <= OBJECT_NAME_MAX and _OBJECT_NAME.match(name) is not None


def is_step_name(name: str) -> bool:
    """True for a valid step name (a DNS-1123 label of at most 63 characters)."""
    return len(name) <= 63 and _STEP_NAME.match(name) is not None
