"""Validation of the control-flow fields (``when``, ``dependsOn`` outcomes, ``finally``):
every problem with the field path it belongs to, through the public entry points
(loading and ``compile_pipeline``; ``taskiq-flow validate`` for the line format)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from taskiq_flow.core import Phase
from taskiq_flow.manifests import CompiledPipeline, Pipeline, compile_pipeline, load_text
from taskiq_flow.manifests.loading import parse_resource
from taskiq_flow.manifests.problems import ManifestError, Problem
from tests.cli.conftest import taskiq_flow

FINALLY_RULE = (
    "a finally step: finally steps run after every other step, so only other finally "
    "steps may depend on them"
)


def manifest(steps: str, final: str | None = None, inputs: str = "[{name: n}]") -> str:
    """A Pipeline named ``p``: ``steps`` (and ``final``) are YAML list items, written at
    the left margin; tasks are not resolved, so every step names what it consumes."""
    text = textwrap.dedent(
        f"""\
        apiVersion: flow.taskiq.dev/v1alpha1
        kind: Pipeline
        metadata: {{name: p}}
        spec:
          worker: {{modules: [m]}}
          inputs: {inputs}
          steps:
        """
    )
    text += textwrap.indent(textwrap.dedent(steps), "    ")
    if final is not None:
        text += "  finally:\n" + textwrap.indent(textwrap.dedent(final), "    ")
    return text


def load(text: str) -> tuple[Pipeline | None, list[Problem]]:
    """The Pipeline of ``text`` and the problems loading it found (schema problems)."""
    documents, found = load_text(text, "p.yaml")
    assert len(documents) == 1
    found += parse_resource(documents[0])
    resource = documents[0].resource
    assert resource is None or isinstance(resource, Pipeline)
    return resource, found


def compiled(text: str) -> CompiledPipeline:
    """The compiled pipeline of a valid ``text``."""
    pipeline, found = load(text)
    assert found == []
    assert pipeline is not None
    return compile_pipeline(pipeline.spec, name="p")


def problems(steps: str, final: str | None = None, inputs: str = "[{name: n}]") -> dict[str, str]:
    """``{path: message}`` of every problem of ``manifest(steps, final, inputs)``, from
    loading or compiling (several problems at one path: messages joined by newlines)."""
    pipeline, found = load(manifest(steps, final, inputs))
    if pipeline is not None:
        with pytest.raises(ManifestError) as raised:
            compile_pipeline(pipeline.spec, name="p")
        found = raised.value.problems
    assert found, "expected problems"
    joined: dict[str, str] = {}
    for problem in found:
        joined[problem.path] = "\n".join(filter(None, [joined.get(problem.path), problem.message]))
    return joined


# -- when ------------------------------------------------------------------------------


def test_a_when_with_a_cel_syntax_error() -> None:
    found = problems(
        """\
        - name: a
          task: m:f
          inputs: [n]
          when: "inputs.n >"
        """
    )
    assert list(found) == ["spec.steps[0].when"]
    message = found["spec.steps[0].when"]
    assert message.startswith("invalid CEL expression: ")
    assert "Syntax error" in message
    assert "\n" not in message  # CEL's first line only, no caret drawing


def test_a_when_reading_an_input_the_pipeline_does_not_declare() -> None:
    found = problems(
        """\
        - name: a
          task: m:f
          inputs: [n]
        - name: b
          task: m:f
          inputs: [n]
          when: inputs.k > 1
        """
    )
    assert found == {"spec.steps[1].when": "inputs.k: spec.inputs declares no 'k'"}


def test_a_when_reading_an_output_nobody_produces() -> None:
    found = problems(
        """\
        - name: a
          task: m:f
          inputs: [n]
          output: x
        - name: b
          task: m:f
          inputs: [n]
          when: outputs.y > 1
        """
    )
    assert found == {"spec.steps[1].when": "outputs.y: no step produces 'y'"}


def test_a_when_reading_an_input_as_an_output() -> None:
    # n is a run input, not an output: outputs.n is not how to read it.
    found = problems("- {name: a, task: m:f, inputs: [n], when: outputs.n > 1}\n")
    assert found == {"spec.steps[0].when": "outputs.n: no step produces 'n'"}


def test_a_when_reading_the_steps_own_output() -> None:
    found = problems(
        """\
        - name: a
          task: m:f
          inputs: [n]
          output: x
          when: has(outputs.x)
        """
    )
    assert found == {"spec.steps[0].when": "outputs.x is this step's own output"}


def test_a_when_reading_an_unknown_step() -> None:
    found = problems(
        """\
        - name: a
          task: m:f
          inputs: [n]
        - name: b
          task: m:f
          inputs: [n]
          when: "steps['nope'].phase == 'Failed'"
        """
    )
    assert found == {"spec.steps[1].when": "steps['nope']: there is no step 'nope'"}


def test_a_when_reading_the_step_itself() -> None:
    found = problems(
        """\
        - name: my-step
          task: m:f
          inputs: [n]
          when: "steps['my-step'].phase == 'Succeeded'"
        """
    )
    assert found == {"spec.steps[0].when": "steps['my-step'] is this step itself"}


@pytest.mark.parametrize(
    ("when", "root"),
    [("outputs[inputs.k] == 1", "outputs"), ("steps[inputs.k].phase == 'Failed'", "steps")],
)
def test_a_when_reference_must_be_a_literal_name(when: str, root: str) -> None:
    found = problems(f'- {{name: a, task: m:f, inputs: [n], when: "{when}"}}\n')
    assert found == {
        "spec.steps[0].when": (
            f"invalid CEL expression: refer to {root} by name: {root}.NAME or {root}['NAME']"
        )
    }


def test_every_when_problem_of_a_step_is_reported_at_once() -> None:
    found = problems(
        """\
        - name: a
          task: m:f
          inputs: [n]
          when: "inputs.k > 1 && has(outputs.y) && steps['nope'].phase == 'Failed'"
        """
    )
    assert found == {
        "spec.steps[0].when": (
            "inputs.k: spec.inputs declares no 'k'\n"
            "outputs.y: no step produces 'y'\n"
            "steps['nope']: there is no step 'nope'"
        )
    }


def test_a_finally_step_when_has_its_own_path() -> None:
    found = problems(
        "- {name: a, task: m:f, inputs: [n]}\n",
        final="""\
        - name: report
          task: m:f
          inputs: [run]
          when: "steps['report'].phase == 'x' || inputs.k == 1"
        """,
    )
    assert found == {
        "spec.finally[0].when": (
            "inputs.k: spec.inputs declares no 'k'\nsteps['report'] is this step itself"
        )
    }


def test_names_inside_string_literals_are_not_references() -> None:
    pipeline = compiled(
        manifest(
            """\
            - name: a
              task: m:f
              inputs: [n]
              when: "'steps.nope' != \\"outputs['x']\\" && inputs.n > 0"
            """
        )
    )
    condition = pipeline.dag.nodes["a"].when
    assert condition is not None
    assert (condition.inputs, condition.outputs, condition.steps) == (("n",), (), ())


# -- dependsOn ---------------------------------------------------------------------------


def test_a_depends_on_object_naming_an_unknown_step() -> None:
    found = problems(
        """\
        - name: a
          task: m:f
          inputs: [n]
        - name: b
          task: m:f
          inputs: [n]
          dependsOn: [a, {step: nope, on: [Failed]}]
        """
    )
    assert found == {
        "spec.steps[1].dependsOn[1]": "step 'b' depends on 'nope', which is not a step"
    }


DEPENDS_ON_A = """\
- name: a
  task: m:f
  inputs: [n]
- name: b
  task: m:f
  inputs: [n]
  dependsOn: [{{step: a, {key}: {on}}}]
"""


def test_an_unknown_outcome_is_reported_at_its_place_in_on() -> None:
    # One problem, at the field of the manifest: not one per member of the union
    # StepName | Dependency, nor with pydantic's names of those members in the path.
    _, found = load(manifest(DEPENDS_ON_A.format(key="on", on="[Succeeded, Done]")))
    assert [(p.path, p.message) for p in found] == [
        (
            "spec.steps[1].dependsOn[0].on[1]",
            "Input should be 'Succeeded', 'Failed' or 'Skipped' (got 'Done')",
        )
    ]


def test_an_empty_on_is_reported_at_on() -> None:
    _, found = load(manifest(DEPENDS_ON_A.format(key="on", on="[]")))
    assert [(p.path, p.message) for p in found] == [
        (
            "spec.steps[1].dependsOn[0].on",
            "List should have at least 1 item after validation, not 0",
        )
    ]


@pytest.mark.parametrize(
    "key",
    [
        "on",  # bare: PyYAML reads it as the bool True
        "'on'",
        "'true'",  # as kubectl sends a bare on: key
        "true",
    ],
)
def test_the_on_key_in_each_spelling_yaml_gives_it(key: str) -> None:
    pipeline = compiled(manifest(DEPENDS_ON_A.format(key=key, on="[Failed]")))
    assert dict(pipeline.dag.nodes["b"].accepts) == {"a": frozenset({Phase.FAILED})}


def test_a_bare_on_key_in_block_style_is_read_as_on() -> None:
    pipeline = compiled(
        manifest(
            """\
            - name: a
              task: m:f
              inputs: [n]
            - name: b
              task: m:f
              inputs: [n]
              dependsOn:
                - step: a
                  on: [Failed, Skipped]
            """
        )
    )
    accepts = dict(pipeline.dag.nodes["b"].accepts)
    assert accepts == {"a": frozenset({Phase.FAILED, Phase.SKIPPED})}
    assert pipeline.dag.nodes["b"].depends_on == ("a",)


# -- finally -----------------------------------------------------------------------------

REPORT = """\
- name: report
  task: m:f
  inputs: [run]
  output: report
"""


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ("dependsOn: [report]", "spec.steps[1].dependsOn[0]"),
        ("dependsOn: [{step: report, on: [Succeeded, Failed]}]", "spec.steps[1].dependsOn[0]"),
        ("when: has(outputs.report)", "spec.steps[1].when"),
        ("when: \"steps.report.phase == 'Succeeded'\"", "spec.steps[1].when"),
    ],
)
def test_a_regular_step_may_not_wait_for_a_finally_step(step: str, path: str) -> None:
    found = problems(
        f"- {{name: a, task: m:f, inputs: [n]}}\n- {{name: b, task: m:f, inputs: [n], {step}}}\n",
        final=REPORT,
    )
    assert found == {path: f"step 'b' depends on 'report', {FINALLY_RULE}"}


@pytest.mark.parametrize(
    ("consumes", "path"),
    [
        ("inputs: [n, report]", "spec.steps[1].inputs[1]"),
        ("map: {over: report}", "spec.steps[1].map.over"),
        ("filter: {over: report}", "spec.steps[1].filter.over"),
    ],
)
def test_a_regular_step_may_not_consume_a_finally_output(consumes: str, path: str) -> None:
    found = problems(
        f"- {{name: a, task: m:f, inputs: [n]}}\n- {{name: b, task: m:f, {consumes}}}\n",
        final=REPORT,
    )
    assert found == {path: f"step 'b' depends on 'report', {FINALLY_RULE}"}


@pytest.mark.parametrize(
    ("consumes", "path"),
    [
        ("inputs: [n, run]", "spec.steps[0].inputs[1]"),
        ("map: {over: run}", "spec.steps[0].map.over"),
    ],
)
def test_a_regular_step_may_not_consume_run(consumes: str, path: str) -> None:
    found = problems(f"- {{name: a, task: m:f, {consumes}}}\n", final=REPORT)
    assert found == {path: "only finally steps may consume 'run' (the run's outcome)"}


def test_an_input_may_not_be_named_run() -> None:
    found = problems("- {name: a, task: m:f, inputs: [n]}\n", inputs="[{name: n}, {name: run}]")
    assert found == {"spec.inputs[1].name": "the data name 'run' is reserved: rename the input"}


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ("{name: a, task: m:f, inputs: [n], output: run}", "spec.steps[0].output"),
        ("{name: run, task: m:f, inputs: [n]}", "spec.steps[0].name"),  # output = step name
    ],
)
def test_an_output_may_not_be_named_run(step: str, path: str) -> None:
    found = problems(f"- {step}\n")
    assert found == {path: "the data name 'run' is reserved: rename it"}


def test_a_finally_output_may_not_be_named_run() -> None:
    found = problems("- {name: a, task: m:f, inputs: [n]}\n", final="- {name: run, task: m:f}\n")
    assert found == {"spec.finally[0].name": "the data name 'run' is reserved: rename it"}


@pytest.mark.parametrize("entry", ["a", "{step: a, on: [Failed]}"])
def test_a_finally_step_may_depend_only_on_finally_steps(entry: str) -> None:
    found = problems(
        "- {name: a, task: m:f, inputs: [n]}\n",
        final=f"{REPORT}- {{name: notify, task: m:f, dependsOn: [report, {entry}]}}\n",
    )
    assert found == {
        "spec.finally[1].dependsOn[1]": (
            "a finally step runs after every other step: dependsOn may only name other "
            "finally steps, not 'a'"
        )
    }


def test_a_finally_step_named_like_a_regular_step() -> None:
    found = problems(
        "- {name: a, task: m:f, inputs: [n]}\n",
        final=f"{REPORT}- {{name: a, task: m:f, output: other}}\n",
    )
    assert found == {
        "spec.finally[1].name": "two steps are named 'a'; give one of them another name"
    }


def test_what_a_finally_step_may_read_and_wait_for() -> None:
    pipeline = compiled(
        manifest(
            """\
            - name: a
              task: m:f
              inputs: [n]
              output: x
            """,
            final="""\
            - name: report
              task: m:f
              inputs: [run, x]
              output: report
              when: "steps.a.phase == 'Failed' || has(outputs.x)"
            - name: notify
              task: m:f
              inputs: [report]
              dependsOn: [{step: report, on: [Failed]}]
            """,
        )
    )
    nodes = pipeline.dag.nodes
    assert (nodes["a"].final, nodes["report"].final, nodes["notify"].final) == (False, True, True)
    assert set(nodes["report"].depends_on) >= {"a"}
    assert dict(nodes["notify"].accepts) == {"report": frozenset({Phase.FAILED})}


# -- taskiq-flow validate: the line of each problem ----------------------------------------


def test_validate_prints_each_control_flow_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        manifest(
            """\
            - name: a
              task: m:f
              inputs: [n]
              when: "inputs.n >"
            - name: b
              task: m:f
              inputs: [n, report]
              when: "steps['nope'].phase == 'Failed'"
            """,
            final=REPORT,
        )
    )
    result = taskiq_flow("validate", "--no-import", path)
    assert result.code == 2, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    assert lines[0].startswith(f"{path}: Pipeline/p: spec.steps[0].when: invalid CEL expression: ")
    assert lines[0].endswith("(line 11, column 7)")
    assert lines[1:] == [
        f"{path}: Pipeline/p: spec.steps[1].inputs[1]: step 'b' depends on 'report', "
        f"{FINALLY_RULE} (line 14, column 19)",
        f"{path}: Pipeline/p: spec.steps[1].when: steps['nope']: there is no step 'nope' "
        "(line 15, column 7)",
    ]
    assert "3 problem(s) in 1 file(s)" in result.stderr


def test_validate_names_the_place_of_an_unknown_outcome(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(manifest(DEPENDS_ON_A.format(key="on", on="[Done]")))
    result = taskiq_flow("validate", "--no-import", path)
    assert result.code == 2
    assert result.stdout.splitlines() == [
        f"{path}: Pipeline/p: spec.steps[1].dependsOn[0].on[0]: Input should be 'Succeeded', "
        "'Failed' or 'Skipped' (got 'Done') (line 14, column 34)",
    ]


def test_validate_accepts_a_bare_on_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    text = manifest(DEPENDS_ON_A.format(key="on", on="[Failed]"))
    assert "{step: a, on: [Failed]}" in text
    path.write_text(text)
    result = taskiq_flow("validate", "--no-import", path)
    assert result.code == 0, result.output
    assert result.stdout == ""
    assert "valid: Pipeline/p" in result.stderr
