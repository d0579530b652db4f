"""The CRDs: generated from the models, structural, and identical to the files in crds/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from taskiq_flow.manifests.crds import CRD_FILES, crd_for, render_all, render_crds

ROOT = Path(__file__).resolve().parents[3]


def _schemas(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node below ``node`` with its path."""
    found = [(path, node)]
    for key, child in node.get("properties", {}).items():
        found.extend(_schemas(child, f"{path}.{key}"))
    if "items" in node:
        found.extend(_schemas(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        found.extend(_schemas(node["additionalProperties"], f"{path}{{}}"))
    return found


class TestGeneratedFiles:
    def test_crds_directory_matches_a_fresh_generation(self) -> None:
        # Regenerate with: taskiq-flow crds --output-dir crds
        generated = render_crds()
        on_disk = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "crds").glob("*.yaml")}
        assert sorted(on_disk) == sorted(generated), "crds/ holds other files than generated"
        for name, text in generated.items():
            assert on_disk[name] == text, (
                f"crds/{name} is stale: run `taskiq-flow crds --output-dir crds`"
            )

    def test_helm_chart_crds_match_a_fresh_generation(self) -> None:
        # Helm installs helm/taskiq-flow/crds/ as they are: the same bytes as crds/.
        generated = render_crds()
        chart = ROOT / "helm" / "taskiq-flow" / "crds"
        on_disk = {p.name: p.read_text(encoding="utf-8") for p in chart.glob("*.yaml")}
        assert sorted(on_disk) == sorted(generated), (
            "helm/taskiq-flow/crds/ holds other files than generated"
        )
        for name, text in generated.items():
            assert on_disk[name] == text, (
                f"helm/taskiq-flow/crds/{name} is stale: run "
                "`taskiq-flow crds --output-dir helm/taskiq-flow/crds`"
            )

    def test_render_all_is_every_file_in_one_stream(self) -> None:
        documents = list(yaml.safe_load_all(render_all()))
        assert [d["spec"]["names"]["kind"] for d in documents] == ["Pipeline", "PipelineRun"]


@pytest.mark.parametrize("kind", ["Pipeline", "PipelineRun"])
class TestStructuralSchema:
    def test_names_group_and_scope(self, kind: str) -> None:
        crd = crd_for(kind)
        names = crd["spec"]["names"]
        assert crd["spec"]["group"] == "flow.taskiq.dev"
        assert crd["spec"]["scope"] == "Namespaced"
        assert names["categories"] == ["taskiq-flow"]
        assert names["shortNames"] == [{"Pipeline": "tfp", "PipelineRun": "tfpr"}[kind]]
        assert crd["metadata"]["name"] == f"{names['plural']}.flow.taskiq.dev"
        assert CRD_FILES[kind] == f"{crd['metadata']['name']}.yaml"

    def test_status_subresource_and_printer_columns(self, kind: str) -> None:
        version = crd_for(kind)["spec"]["versions"][0]
        assert version["name"] == "v1alpha1"
        assert version["served"]
        assert version["storage"]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        expected = {
            "Pipeline": ["Mode", "Steps", "Phase", "Age"],
            "PipelineRun": ["Pipeline", "Phase", "Progress", "Duration", "Age"],
        }[kind]
        assert columns == expected

    def test_every_field_is_typed_or_free_json(self, kind: str) -> None:
        schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        text = yaml.safe_dump(schema)
        assert "$ref" not in text
        assert "anyOf" not in text
        assert "allOf" not in text
        for path, node in _schemas(schema):
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
            if node.get("type") == "object" and path not in (".metadata",):
                assert (
                    "properties" in node
                    or "additionalProperties" in node
                    or node.get("x-kubernetes-preserve-unknown-fields")
                ), f"{path} is an object with no schema"


def _spec_schema(kind: str) -> dict[str, Any]:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def test_free_json_fields_preserve_unknown_fields() -> None:
    steps = _spec_schema("Pipeline")["properties"]["steps"]
    assert steps["items"]["properties"]["args"]["x-kubernetes-preserve-unknown-fields"] is True
    default = _spec_schema("Pipeline")["properties"]["inputs"]["items"]["properties"]["default"]
    assert default == {
        "description": default["description"],
        "x-kubernetes-preserve-unknown-fields": True,
        "nullable": True,
    }
    run = _spec_schema("PipelineRun")["properties"]
    assert run["inputs"]["x-kubernetes-preserve-unknown-fields"] is True
    outputs = crd_for("PipelineRun")["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["status"]["properties"]["outputs"]
    assert outputs["x-kubernetes-preserve-unknown-fields"] is True


def test_defaults_and_enums_come_from_the_models() -> None:
    spec = _spec_schema("Pipeline")["properties"]
    assert spec["mode"]["default"] == "dataflow"
    assert spec["mode"]["enum"] == ["dataflow", "sequential"]
    assert spec["errorMode"]["enum"] == ["FailFast", "ContinueOnError", "SkipFailed"]
    assert "default" not in spec["parallelism"], "unset means no run-level bound"
    assert spec["worker"]["properties"]["replicas"]["default"] == {}
    run = _spec_schema("PipelineRun")["properties"]
    assert "default" not in run["parallelism"], "an override must not default"
    assert run["cancel"]["default"] is False
    phases = crd_for("PipelineRun")["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["status"]["properties"]["steps"]["additionalProperties"]["properties"]["phase"]["enum"]
    assert phases == [
        "Pending",
        "Queued",
        "Running",
        "Retrying",
        "Succeeded",
        "Failed",
        "Skipped",
        "Cancelled",
    ]


def test_cel_rules_and_list_maps() -> None:
    run = _spec_schema("PipelineRun")
    assert run["x-kubernetes-validations"][0]["rule"] == (
        "has(self.pipelineRef) != has(self.pipelineSpec)"
    )
    steps = _spec_schema("Pipeline")["properties"]["steps"]
    assert steps["x-kubernetes-list-type"] == "map"
    assert steps["x-kubernetes-list-map-keys"] == ["name"]
    assert steps["items"]["x-kubernetes-validations"][0]["rule"] == (
        "!(has(self.map) && has(self.filter))"
    )
