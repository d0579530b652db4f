"""From a PipelineRun's spec to the compiled pipeline it runs, or the reason it cannot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from taskiq_flow.manifests.compiler import CompiledPipeline, compile_pipeline
from taskiq_flow.manifests.models import PipelineRunSpec, PipelineSpec, field_path
from taskiq_flow.manifests.problems import ManifestError

__all__ = ["RunProblem", "describe_problem", "generation_of", "resolve_pipeline", "run_key"]


class RunProblem(Exception):
    """A run cannot start: ``reason`` is the condition reason, ``final`` if it never will."""

    def __init__(self, reason: str, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.final = final


def describe_problem(error: ManifestError | ValidationError) -> str:
    """One line naming every problem of an invalid spec."""
    if isinstance(error, ManifestError):
        return "; ".join(
            f"{problem.path}: {problem.message}" if problem.path else problem.message
            for problem in error.problems
        )
    return "; ".join(
        f"spec.{'.'.join(str(x) for x in field_path(e['loc']))}: {e['msg']}" for e in error.errors()
    )


def generation_of(body: Mapping[str, Any]) -> int | None:
    """The object's generation, read now: kopf's body is a live view, so a dict taken from
    it when the run started would be stale."""
    generation = (body.get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else None


def run_key(run: str) -> str:
    """The scaler's key of an inline run's workers: no Pipeline name holds a ":"."""
    return f"run:{run}"


def resolve_pipeline(
    run_spec: Mapping[str, Any], namespace: str, pipeline_body: Mapping[str, Any] | None
) -> tuple[str, CompiledPipeline, PipelineRunSpec]:
    """The run's pipeline, compiled without its task code (the operator image does not
    hold it); raises ``RunProblem``."""
    try:
        run = PipelineRunSpec.model_validate(dict(run_spec))
    except ValidationError as exc:
        raise RunProblem("InvalidRun", describe_problem(exc), final=True) from exc
    if run.pipeline_spec is not None:
        try:
            compiled = compile_pipeline(
                run.pipeline_spec, name="inline", prefix="spec.pipelineSpec"
            )
        except ManifestError as exc:
            raise RunProblem("PipelineInvalid", describe_problem(exc), final=True) from exc
        return "", compiled, run
    if run.pipeline_ref is None:
        raise RunProblem("InvalidRun", "set spec.pipelineRef or spec.pipelineSpec", final=True)
    name = run.pipeline_ref.name
    if pipeline_body is None:
        raise RunProblem(
            "PipelineNotFound",
            f"Pipeline {name!r} not found in namespace {namespace!r}; "
            "the run starts when it is created",
            final=False,
        )
    try:
        spec = PipelineSpec.model_validate(dict(pipeline_body.get("spec") or {}))
        return name, compile_pipeline(spec, name=name), run
    except (ManifestError, ValidationError) as exc:
        raise RunProblem(
            "PipelineInvalid", f"Pipeline {name!r} is invalid: {describe_problem(exc)}", final=True
        ) from exc
