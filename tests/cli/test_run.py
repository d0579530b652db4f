"""``taskiq-flow run``: the examples, the outputs, the exit codes, and user errors."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

import yaml

from tests.cli.conftest import EXAMPLES, taskiq_flow

AUDIO = EXAMPLES / "audio_analysis"
ETL = EXAMPLES / "etl"
WORDCOUNT = EXAMPLES / "wordcount"

AUDIO_OUTPUTS = {
    "audio_features": {"duration": 540.0, "tempo": 120.0},
    "mir_features": {"key": "C major", "loudness": -12.5},
    "tags": ["electronic", "dance"],
    "embedding": [0.1, 0.2, 0.3, 0.4, 0.5],
}


class TestExamples:
    def test_audio_analysis_with_its_pipeline_run(self) -> None:
        result = taskiq_flow("run", AUDIO / "pipeline.yaml", AUDIO / "run.yaml", "-o", "json")
        assert result.code == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["outputs"] == AUDIO_OUTPUTS
        status = document["status"]
        assert status["phase"] == "Succeeded"
        assert status["progress"] == "4/4"
        assert status["conditions"][0] == {
            **status["conditions"][0],
            "type": "Succeeded",
            "status": "True",
        }
        assert {s["phase"] for s in status["steps"].values()} == {"Succeeded"}
        assert "✓ embedding: Succeeded, attempt 1" in result.stderr

    def test_audio_analysis_alone_uses_the_input_default_and_prints_a_table(self) -> None:
        result = taskiq_flow("run", "examples/audio_analysis/pipeline.yaml")
        assert result.code == 0, result.stderr
        assert "embedding" in result.stdout
        assert "[0.1, 0.2, 0.3, 0.4, 0.5]" in result.stdout
        assert '"duration": 360.0' in result.stdout
        assert "Succeeded" in result.stderr

    def test_etl_retries_its_flaky_step(self, tmp_path: Path) -> None:
        batch = f"test-{uuid.uuid4().hex[:8]}"
        result = taskiq_flow(
            "run",
            ETL / "pipeline.yaml",
            ETL / "run.yaml",
            "--input",
            f"batch={batch}",
            "--input",
            f"state_dir={tmp_path}",
            "-o",
            "json",
        )
        assert result.code == 0, result.stderr
        document = json.loads(result.stdout)
        outputs = document["outputs"]
        assert [row["name"] for row in outputs["valid_rows"]] == ["ada", "grace", "barbara"]
        assert outputs["loaded"] == {"batch": batch, "rows": 3, "attempts": 3}
        steps = document["status"]["steps"]
        assert steps["load"]["attempts"] == 3
        assert steps["clean"]["items"] == {"total": 5, "succeeded": 5, "failed": 0, "running": 0}
        # The final line of the step shows its attempts (the Retrying phase in between is
        # shown only if a refresh happens to fall inside the retry delay).
        assert "✓ load: Succeeded, attempt 3" in result.stderr
        assert (tmp_path / f"{batch}.attempts").read_text() == "3"

    def test_etl_fails_when_the_retries_run_out(self, tmp_path: Path) -> None:
        result = taskiq_flow(
            "run",
            ETL / "pipeline.yaml",
            "--input",
            "batch=doomed",
            "--input",
            "flaky_failures=9",
            "--input",
            f"state_dir={tmp_path}",
            "-o",
            "json",
        )
        assert result.code == 1
        document = json.loads(result.stdout)
        assert document["status"]["phase"] == "Failed"
        assert document["status"]["steps"]["load"]["attempts"] == 4
        assert document["status"]["steps"]["report"]["phase"] == "Cancelled"
        assert "valid_rows" in document["outputs"]
        assert "summary" not in document["outputs"]
        assert "ConnectionError: warehouse unavailable (attempt 4 of batch 'doomed')" in (
            result.stderr
        )

    def test_wordcount_map_reduce(self) -> None:
        result = taskiq_flow(
            "run", WORDCOUNT / "pipeline.yaml", WORDCOUNT / "run.yaml", "-o", "yaml"
        )
        assert result.code == 0, result.stderr
        document = yaml.safe_load(result.stdout)
        assert document["outputs"]["top"] == [["it", 5], ["of", 5], ["the", 5]]
        assert len(document["outputs"]["nonempty"]) == 3
        assert document["status"]["steps"]["counts"]["items"]["total"] == 3

    def test_runs_from_another_directory_with_the_installed_command(self, tmp_path: Path) -> None:
        # The entry point does not put the current directory on sys.path the way
        # `python -m` does: the manifest's directory must be added for its task module.
        result = taskiq_flow(
            "run",
            WORDCOUNT / "pipeline.yaml",
            "--input",
            'texts=["a b a"]',
            "-o",
            "json",
            cwd=tmp_path,
            entry_point=True,
        )
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["outputs"]["top"] == [["a", 2], ["b", 1]]


def _pipeline(tmp_path: Path, steps: str, extra: str = "") -> Path:
    (tmp_path / "usertasks.py").write_text(
        textwrap.dedent("""\
        import asyncio
        from taskiq_flow import task

        @task
        def shout(text: str) -> str:
            return text.upper()

        @task
        def explode(text: str) -> str:
            raise ValueError(f"cannot handle {text!r}")

        @task
        async def slow(text: str) -> str:
            await asyncio.sleep(30)
            return text
        """)
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "apiVersion: flow.taskiq.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: user}\n"
        "spec:\n  worker: {modules: [usertasks]}\n  inputs: [{name: text}]\n"
        + textwrap.indent(textwrap.dedent(extra), "  ")
        + "  steps:\n"
        + textwrap.indent(textwrap.dedent(steps), "    ")
    )
    return path


class TestInputs:
    def test_input_values_are_json_or_else_strings(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shout', inputs: [text]}\n")
        result = taskiq_flow("run", path, "--input", "text=hello world", "-o", "json")
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["outputs"] == {"loud": "HELLO WORLD"}
        result = taskiq_flow("run", path, "--input", 'text="42"', "-o", "json")
        assert json.loads(result.stdout)["outputs"] == {"loud": "42"}

    def test_a_required_input_not_given(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shout', inputs: [text]}\n")
        result = taskiq_flow("run", path)
        assert result.code == 2
        assert f"{path}: Pipeline/user: required input 'text' is not given" in result.stderr

    def test_an_unknown_input(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shout', inputs: [text]}\n")
        result = taskiq_flow("run", path, "-i", "text=a", "-i", "txet=b")
        assert result.code == 2
        assert "unknown input 'txet'; the pipeline's inputs are: text" in result.stderr

    def test_a_value_that_starts_like_json_must_be_json(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shout', inputs: [text]}\n")
        for value, error in [
            ("[1,2", "Expecting ',' delimiter: line 1 column 5 (char 4)"),
            ('{"a": 1', "Expecting ',' delimiter: line 1 column 8 (char 7)"),
            ('"unterminated', "Unterminated string starting at: line 1 column 1 (char 0)"),
        ]:
            result = taskiq_flow("run", path, "-i", f"text={value}", "-o", "json")
            assert result.code == 2, value
            assert result.stdout == ""
            assert result.stderr.splitlines()[-1] == (
                f"Error: Invalid value for --input: input 'text': {value!r} is not valid JSON "
                f"""({error}); a value starting with [, {{ or " must be JSON"""
            )
        # Plain words are strings; quoted as JSON, a value may start with a bracket.
        for value, expected in [("monday", "MONDAY"), ('"[1,2"', "[1,2"), ("[1, 2]", [1, 2])]:
            result = taskiq_flow("run", path, "-i", f"text={value}", "-o", "json")
            if isinstance(expected, str):
                assert result.code == 0, result.stderr
                assert json.loads(result.stdout)["outputs"] == {"loud": expected}
            else:  # valid JSON reaches the task as what it is (a list has no upper())
                assert result.code == 1
                assert "AttributeError: 'list' object has no attribute 'upper'" in result.stderr

    def test_an_input_without_a_value(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shout', inputs: [text]}\n")
        result = taskiq_flow("run", path, "--input", "text")
        assert result.code == 2
        assert "'text' is not NAME=VALUE" in result.stderr


class TestProgressAndQuiet:
    STEPS = """\
        - {name: loud, task: 'usertasks:shout', inputs: [text]}
        - {name: boom, task: 'usertasks:explode', inputs: [text], dependsOn: [loud]}
        - {name: after, task: 'usertasks:shout', inputs: [text], dependsOn: [boom]}
        """

    def test_progress_counts_the_steps_done_not_those_over(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, self.STEPS)
        result = taskiq_flow("run", path, "-i", "text=x", "-o", "json", "--progress", "none")
        assert result.code == 1
        status = json.loads(result.stdout)["status"]
        phases = {name: step["phase"] for name, step in status["steps"].items()}
        assert phases == {"loud": "Succeeded", "boom": "Failed", "after": "Cancelled"}
        assert (status["phase"], status["progress"]) == ("Failed", "1/3")

    def test_a_skipped_step_is_done(self, tmp_path: Path) -> None:
        steps = self.STEPS.replace("dependsOn: [boom]}", "dependsOn: [boom], when: 'false'}")
        path = _pipeline(tmp_path, steps, extra="errorMode: SkipFailed\n")
        result = taskiq_flow("run", path, "-i", "text=x", "-o", "json", "--progress", "none")
        assert result.code == 0, result.stderr
        status = json.loads(result.stdout)["status"]
        phases = {name: step["phase"] for name, step in status["steps"].items()}
        assert phases == {"loud": "Succeeded", "boom": "Failed", "after": "Skipped"}
        assert status["progress"] == "2/3"
        # The summary says so too, after the warning about the failed step.
        assert result.stderr.splitlines() == [
            "warning: step 'boom' failed and the run went on: ValueError: cannot handle 'x'",
            result.stderr.splitlines()[-1],
        ]
        assert result.stderr.splitlines()[-1].endswith(" (2/3 steps)")

    def test_quiet_prints_the_outputs_and_nothing_else(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, self.STEPS, extra="errorMode: SkipFailed\n")
        result = taskiq_flow("run", path, "-i", "text=x", "-q")
        assert result.code == 0
        assert result.stderr == ""  # no progress, no warning, no summary
        assert "loud" in result.stdout
        assert '"X"' in result.stdout
        result = taskiq_flow("run", path, "-i", "text=x", "--quiet", "-o", "json")
        assert result.code == 0
        assert result.stderr == ""
        assert json.loads(result.stdout)["outputs"]["loud"] == "X"

    def test_quiet_still_prints_errors(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, self.STEPS)
        result = taskiq_flow("run", path, "-i", "text=x", "-q", "-o", "json")
        assert result.code == 1
        assert json.loads(result.stdout)["status"]["phase"] == "Failed"
        (line,) = result.stderr.splitlines()
        assert line.startswith("run user-")
        assert line.endswith(": step 'boom' failed: ValueError: cannot handle 'x'")
        result = taskiq_flow("run", path, "-q")
        assert result.code == 2
        assert "required input 'text' is not given" in result.stderr


class TestUserErrors:
    def test_a_failing_task_exits_1_with_its_error(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: boom, task: 'usertasks:explode', inputs: [text]}\n")
        result = taskiq_flow("run", path, "-i", "text=x")
        assert result.code == 1
        assert "step 'boom' failed: ValueError: cannot handle 'x'" in result.stderr

    def test_a_step_timeout_ends_the_run(self, tmp_path: Path) -> None:
        path = _pipeline(
            tmp_path, "- {name: nap, task: 'usertasks:slow', inputs: [text], timeoutSeconds: 0.5}\n"
        )
        result = taskiq_flow("run", path, "-i", "text=x", timeout=20)
        assert result.code == 1
        assert "nap" in result.stderr
        assert "Timeout" in result.stderr

    def test_a_whole_run_timeout(self, tmp_path: Path) -> None:
        path = _pipeline(
            tmp_path,
            "- {name: nap, task: 'usertasks:slow', inputs: [text]}\n",
            extra="timeoutSeconds: 0.5\n",
        )
        result = taskiq_flow("run", path, "-i", "text=x", "-o", "json", timeout=20)
        assert result.code == 1
        assert json.loads(result.stdout)["status"]["phase"] == "Failed"

    def test_an_unknown_task_is_found_before_the_run(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shuot', inputs: [text]}\n")
        result = taskiq_flow("run", path, "-i", "text=x")
        assert result.code == 2
        assert (
            f"{path}: Pipeline/user: spec.steps[0].task: unknown task 'usertasks:shuot': no "
            "module in worker.modules (usertasks) defines it; did you mean 'usertasks:shout'?"
        ) in result.stderr
        assert "line 8" in result.stderr

    def test_a_module_that_cannot_be_imported(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shout', inputs: [text]}\n")
        path.write_text(path.read_text().replace("modules: [usertasks]", "modules: [usertaks]"))
        result = taskiq_flow("run", path, "-i", "text=x")
        assert result.code == 2
        assert "spec.worker.modules[0]: cannot import module 'usertaks': no such module" in (
            result.stderr
        )

    def test_a_typo_in_a_field_name(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: loud, task: 'usertasks:shout', input: [text]}\n")
        result = taskiq_flow("run", path, "-i", "text=x")
        assert result.code == 2
        assert "spec.steps[0].input: unknown field 'input'; did you mean 'inputs'?" in result.stderr

    def test_a_cycle(self, tmp_path: Path) -> None:
        path = _pipeline(
            tmp_path,
            """\
            - {name: a, task: 'usertasks:shout', output: x, inputs: [text, y]}
            - {name: b, task: 'usertasks:shout', output: y, inputs: [x]}
            """,
        )
        result = taskiq_flow("run", path, "-i", "text=x")
        assert result.code == 2
        assert "Deadlock detected: circular dependency" in result.stderr

    def test_two_steps_producing_one_output(self, tmp_path: Path) -> None:
        path = _pipeline(
            tmp_path,
            """\
            - {name: a, task: 'usertasks:shout', output: x, inputs: [text]}
            - {name: b, task: 'usertasks:shout', output: x, inputs: [text]}
            """,
        )
        result = taskiq_flow("run", path, "-i", "text=x")
        assert result.code == 2
        assert "spec.steps[1].output: output 'x' is produced by more than one task: a, b" in (
            result.stderr
        )

    def test_an_input_nothing_produces(self, tmp_path: Path) -> None:
        path = _pipeline(tmp_path, "- {name: a, task: 'usertasks:shout', inputs: [txt]}\n")
        result = taskiq_flow("run", path, "-i", "text=x")
        assert result.code == 2
        assert "spec.steps[0].inputs[0]: no step produces 'txt'" in result.stderr

    def test_malformed_yaml(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.yaml"
        path.write_text("kind: Pipeline\nspec: {steps: [}\n")
        result = taskiq_flow("run", path)
        assert result.code == 2
        assert f"{path}: malformed YAML:" in result.stderr
        assert "(line 2, column 16)" in result.stderr

    def test_a_file_that_does_not_exist(self, tmp_path: Path) -> None:
        result = taskiq_flow("run", tmp_path / "nope.yaml")
        assert result.code == 2
        assert "cannot read the file" in result.stderr

    def test_a_pipeline_run_naming_a_missing_pipeline(self, tmp_path: Path) -> None:
        path = tmp_path / "run.yaml"
        path.write_text(
            "apiVersion: flow.taskiq.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: r}\n"
            "spec: {pipelineRef: {name: ghost}}\n"
        )
        result = taskiq_flow("run", path)
        assert result.code == 2
        assert "spec.pipelineRef.name: no Pipeline named 'ghost'" in result.stderr
