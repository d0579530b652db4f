"""Pipeline and PipelineRun manifests: models, CRDs, loading, compiling to a DAG."""

from taskiq_flow.manifests.compiler import CompiledPipeline, TaskResolver, compile_pipeline
from taskiq_flow.manifests.loading import Document, load_file, load_files, load_text
from taskiq_flow.manifests.models import Pipeline, PipelineRun, PipelineRunSpec, PipelineSpec
from taskiq_flow.manifests.problems import ManifestError, Problem

__all__ = [
    "CompiledPipeline",
    "Document",
    "ManifestError",
    "Pipeline",
    "PipelineRun",
    "PipelineRunSpec",
    "PipelineSpec",
    "Problem",
    "TaskResolver",
    "compile_pipeline",
    "load_file",
    "load_files",
    "load_text",
]
