"""The Pipeline and PipelineRun models: what a manifest may say, and what it may not."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from taskiq_flow.manifests.models import ErrorMode, Mode, Pipeline, PipelineRun
from tests.unit.manifests.conftest import pipeline_doc


def _validate(model: type[Pipeline] | type[PipelineRun], data: dict[str, Any]) -> Any:
    return model.model_validate(data, by_alias=True, by_name=False)


def _error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.value.errors()]


class TestPipeline:
    def test_defaults_fill_what_the_manifest_leaves_out(self) -> None:
        pipeline = _validate(Pipeline, pipeline_doc([{"name": "a", "task": "m:f"}]))
        spec = pipeline.spec
        assert spec.mode == Mode.DATAFLOW
        assert spec.parallelism is None  # no run-level bound
        assert spec.error_mode == ErrorMode.FAIL_FAST
        assert spec.worker.concurrency == 10
        assert (spec.worker.replicas.min, spec.worker.replicas.max) == (0, 1)
        assert spec.steps[0].output_name == "a"

    def test_the_api_md_example_is_accepted(self) -> None:
        doc = pipeline_doc(
            [
                {
                    "name": "extract",
                    "task": "audio.tasks:extract_audio",
                    "output": "audio_features",
                    "inputs": ["paths"],
                },
                {
                    "name": "mir",
                    "task": "audio.tasks:compute_mir",
                    "output": "mir_features",
                    "inputs": ["audio_features"],
                    "retries": {
                        "limit": 3,
                        "delaySeconds": 1,
                        "backoff": 2.0,
                        "maxDelaySeconds": 60,
                    },
                    "timeoutSeconds": 120,
                },
                {
                    "name": "per-track",
                    "task": "audio.tasks:analyse_track",
                    "map": {"over": "paths", "as": "path", "maxParallel": 16},
                    "output": "track_features",
                },
                {
                    "name": "summary",
                    "task": "audio.tasks:summarise",
                    "inputs": ["track_features", "mir_features"],
                    "args": {"top_k": 5},
                    "dependsOn": ["extract"],
                },
            ],
            mode="dataflow",
            parallelism=8,
            errorMode="FailFast",
            timeoutSeconds=3600,
            inputs=[{"name": "paths"}, {"name": "config", "default": {"mode": "fast"}}],
        )
        doc["spec"]["worker"].update(
            image="ghcr.io/acme/audio-tasks:1.4", replicas={"min": 0, "max": 8}, concurrency=10
        )
        pipeline = _validate(Pipeline, doc)
        assert pipeline.spec.steps[2].map.as_ == "path"
        assert pipeline.spec.steps[1].retries.max_delay_seconds == 60
        inputs = {i.name: i for i in pipeline.spec.inputs}
        assert inputs["paths"].required
        assert not inputs["config"].required

    def test_a_default_of_null_is_no_default(self) -> None:
        # The API server drops null fields: on a cluster the input arrives without one.
        doc = pipeline_doc([{"name": "a", "task": "m:f"}], inputs=[{"name": "x", "default": None}])
        assert _validate(Pipeline, doc).spec.inputs[0].required

    @pytest.mark.parametrize(
        ("step", "loc"),
        [
            ({"name": "a", "task": "m:f", "tsk": "m:f"}, ("spec", "steps", 0, "tsk")),
            (
                {"name": "a", "task": "m:f", "timeout_seconds": 3},
                ("spec", "steps", 0, "timeout_seconds"),
            ),
            (
                {"name": "a", "task": "m:f", "map": {"over": "x", "az": "y"}},
                ("spec", "steps", 0, "map", "az"),
            ),
        ],
    )
    def test_unknown_fields_are_errors(self, step: dict[str, Any], loc: tuple[Any, ...]) -> None:
        with pytest.raises(ValidationError) as exc:
            _validate(Pipeline, pipeline_doc([step]))
        assert loc in _error_locs(exc)

    @pytest.mark.parametrize("name", ["Extract", "a_b", "-a", "a" * 64])
    def test_step_names_are_dns_labels(self, name: str) -> None:
        with pytest.raises(ValidationError) as exc:
            _validate(Pipeline, pipeline_doc([{"name": name, "task": "m:f"}]))
        assert ("spec", "steps", 0, "name") in _error_locs(exc)

    def test_data_names_are_identifiers(self) -> None:
        with pytest.raises(ValidationError) as exc:
            _validate(Pipeline, pipeline_doc([{"name": "a", "task": "m:f", "inputs": ["a-b"]}]))
        assert ("spec", "steps", 0, "inputs", 0) in _error_locs(exc)

    def test_map_and_filter_exclude_each_other(self) -> None:
        step = {"name": "a", "task": "m:f", "map": {"over": "x"}, "filter": {"over": "x"}}
        with pytest.raises(ValidationError, match="at most one of map and filter"):
            _validate(Pipeline, pipeline_doc([step]))

    def test_replicas_min_may_not_exceed_max(self) -> None:
        doc = pipeline_doc([{"name": "a", "task": "m:f"}])
        doc["spec"]["worker"]["replicas"] = {"min": 3, "max": 2}
        with pytest.raises(ValidationError, match=r"replicas.min must not exceed"):
            _validate(Pipeline, doc)

    def test_a_pipeline_needs_steps_and_modules(self) -> None:
        doc = pipeline_doc([])
        doc["spec"]["worker"]["modules"] = []
        with pytest.raises(ValidationError) as exc:
            _validate(Pipeline, doc)
        assert {("spec", "steps"), ("spec", "worker", "modules")} <= set(_error_locs(exc))

    def test_metadata_keeps_kubernetes_fields(self) -> None:
        doc = pipeline_doc([{"name": "a", "task": "m:f"}])
        doc["metadata"].update(uid="123", resourceVersion="7")
        assert _validate(Pipeline, doc).metadata.name == "test"


class TestPipelineRun:
    def _run(self, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": "flow.taskiq.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"generateName": "x-"},
            "spec": spec,
        }

    def test_pipeline_ref_with_overrides(self) -> None:
        run = _validate(
            PipelineRun,
            self._run(
                pipelineRef={"name": "p"},
                inputs={"paths": ["a"]},
                parallelism=4,
                timeoutSeconds=600,
                errorMode="ContinueOnError",
                cancel=False,
                ttlSecondsAfterFinished=86400,
            ),
        )
        assert run.spec.error_mode == ErrorMode.CONTINUE_ON_ERROR
        assert run.spec.inputs == {"paths": ["a"]}

    @pytest.mark.parametrize(
        "spec",
        [
            {},
            {
                "pipelineRef": {"name": "p"},
                "pipelineSpec": {
                    "worker": {"modules": ["m"]},
                    "steps": [{"name": "a", "task": "m:f"}],
                },
            },
        ],
    )
    def test_exactly_one_of_ref_and_inline_spec(self, spec: dict[str, Any]) -> None:
        with pytest.raises(ValidationError, match="exactly one of pipelineRef and pipelineSpec"):
            _validate(PipelineRun, self._run(**spec))

    def test_status_accepts_the_api_md_example(self) -> None:
        doc = self._run(pipelineRef={"name": "p"})
        doc["status"] = {
            "phase": "Running",
            "progress": "3/5",
            "durationSeconds": 12.4,
            "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}],
            "steps": {
                "extract": {"phase": "Succeeded", "attempts": 1, "durationSeconds": 0.8},
                "per-track": {
                    "phase": "Running",
                    "items": {"total": 1000, "succeeded": 640, "failed": 0, "running": 16},
                },
                "mir": {"phase": "Retrying", "attempts": 2, "message": "ConnectionError: ..."},
            },
            "outputs": {
                "tags": ["electronic"],
                "track_features": {"truncated": True, "bytes": 1843212},
            },
        }
        run = _validate(PipelineRun, doc)
        assert run.status.steps["per-track"].items.running == 16

    def test_an_unknown_step_phase_is_an_error(self) -> None:
        doc = self._run(pipelineRef={"name": "p"})
        doc["status"] = {"steps": {"a": {"phase": "Done"}}}
        with pytest.raises(ValidationError):
            _validate(PipelineRun, doc)
