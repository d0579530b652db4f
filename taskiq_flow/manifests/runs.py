"""Pick what to run from a set of documents: a PipelineRun and its Pipeline, or the one
Pipeline given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from taskiq_flow.manifests.loading import Document
from taskiq_flow.manifests.models import Pipeline, PipelineRun, PipelineRunSpec, PipelineSpec
from taskiq_flow.manifests.problems import ManifestError, Problem

__all__ = ["RunRequest", "select_run"]


@dataclass
class RunRequest:
    """A pipeline spec to run, where it came from, and the run that asked for it."""

    name: str
    spec: PipelineSpec
    document: Document
    prefix: str
    run: PipelineRunSpec | None = None
    run_document: Document | None = None

    @property
    def run_name(self) -> str | None:
        """The PipelineRun's name, if a PipelineRun was given."""
        return None if self.run_document is None else self.run_document.name


def _pipeline_name(document: Document, fallback: str = "pipeline") -> str:
    name = document.name or fallback
    return name.rstrip("*-") or fallback


def select_run(documents: Sequence[Document], pipeline: str | None = None) -> RunRequest:
    """The pipeline to run: the PipelineRun's (by ``pipelineRef`` or inline), else the only
    Pipeline, else the Pipeline named ``pipeline``. Raises ``ManifestError`` otherwise."""
    pipelines = [d for d in documents if isinstance(d.resource, Pipeline)]
    runs = [d for d in documents if isinstance(d.resource, PipelineRun)]
    files = ", ".join(dict.fromkeys(d.file for d in documents)) or "the given files"
    if len(runs) > 1:
        labels = ", ".join(d.label for d in runs)
        raise ManifestError.single(
            "", f"the files hold several PipelineRuns ({labels}); run one at a time"
        )
    if runs:
        run_doc = runs[0]
        run = run_doc.resource
        assert isinstance(run, PipelineRun)
        if run.spec.pipeline_spec is not None:
            return RunRequest(
                name=_pipeline_name(run_doc),
                spec=run.spec.pipeline_spec,
                document=run_doc,
                prefix="spec.pipelineSpec",
                run=run.spec,
                run_document=run_doc,
            )
        assert run.spec.pipeline_ref is not None
        wanted = run.spec.pipeline_ref.name
        for doc in pipelines:
            if doc.name == wanted:
                assert isinstance(doc.resource, Pipeline)
                return RunRequest(wanted, doc.resource.spec, doc, "spec", run.spec, run_doc)
        raise ManifestError(
            [
                run_doc.problem(
                    ("spec", "pipelineRef", "name"),
                    f"no Pipeline named {wanted!r} in {files}: pass its file too",
                )
            ]
        )
    candidates = [d for d in pipelines if pipeline is None or d.name == pipeline]
    if len(candidates) == 1:
        doc = candidates[0]
        assert isinstance(doc.resource, Pipeline)
        return RunRequest(_pipeline_name(doc), doc.resource.spec, doc, "spec")
    if not candidates:
        what = f"no Pipeline named {pipeline!r}" if pipeline else "no Pipeline or PipelineRun"
        raise ManifestError([Problem("", f"{what} in {files}")])
    names = ", ".join(d.name or "?" for d in candidates)
    raise ManifestError(
        [
            Problem(
                "",
                f"{files} hold several Pipelines ({names}): choose one with --pipeline NAME "
                "or add a PipelineRun",
            )
        ]
    )
