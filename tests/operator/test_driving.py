"""The pure run driver: kicks, events, retries, cancel, timeouts, restarts."""

from __future__ import annotations

from typing import Any

from taskiq_flow.manifests.compiler import compile_pipeline
from taskiq_flow.manifests.models import PipelineRunSpec, PipelineSpec
from taskiq_flow_operator.driving import RunDriver, Step
from taskiq_flow_operator.statuses import build_run_status
from taskiq_flow_worker.protocol import StepEvent
from tests.operator.pipelines import dataflow_spec


def make_driver(spec: dict[str, Any] | None = None, **run: Any) -> RunDriver:
    pipeline = PipelineSpec.model_validate(spec or dataflow_spec())
    compiled = compile_pipeline(pipeline, name="words")
    run_spec = PipelineRunSpec.model_validate({"pipelineRef": {"name": "words"}, **run})
    inputs = compiled.run_inputs(run_spec.inputs)
    return RunDriver("uid-1", compiled, compiled.settings(run_spec), inputs)


def ok(step: str, attempt: int = 1, item: int | None = None, **kw: Any) -> StepEvent:
    return StepEvent("uid-1", step, attempt, True, item=item, size=kw.pop("size", 10), **kw)


def test_success_with_a_map_step_kicks_successors_at_once() -> None:
    driver = make_driver(inputs={"words": ["a", "b", "c"]})
    start = driver.start(0.0)
    assert [k.task_id for k in start.kicks] == ["uid-1.clean.1"]
    assert start.kicks[0].kwargs == {"words": ["a", "b", "c"]}
    assert start.notes[0].reason == "Started"
    step = driver.on_event(ok("clean", length=3), 1.0)
    # maxParallel 2: two items now, the third when one finishes.
    assert [k.task_id for k in step.kicks] == ["uid-1.score.1.0", "uid-1.score.1.1"]
    assert step.kicks[0].kwargs == {
        "factor": 2,
        "word": {"$tfref": "tfo:{uid-1}:out:clean", "index": 0},
    }
    assert driver.in_flight() == 2
    step = driver.on_event(ok("score", item=1), 2.0)
    assert [k.task_id for k in step.kicks] == ["uid-1.score.1.2"]
    driver.on_event(ok("score", item=0), 2.1)
    step = driver.on_event(ok("score", item=2), 2.2)
    assert [k.task_id for k in step.kicks] == ["uid-1.total.1"]
    assert step.kicks[0].kwargs == {"scores": {"$tfitems": "tfo:{uid-1}:out:score", "count": 3}}
    status = build_run_status(driver, generation=1, now=2.5)
    assert status["steps"]["score"]["items"] == {
        "total": 3,
        "succeeded": 3,
        "failed": 0,
        "running": 0,
    }
    assert status["phase"] == "Running"
    assert status["progress"] == "2/3"
    done = driver.on_event(ok("total"), 3.0)
    assert done.finished is not None
    assert done.notes[-1].reason == "Succeeded"
    status = build_run_status(driver, generation=1, now=3.0)
    assert status["phase"] == "Succeeded"
    assert status["conditions"][0]["status"] == "True"
    assert status["durationSeconds"] == 3.0


def test_duplicate_and_stale_events_are_ignored() -> None:
    driver = make_driver(inputs={"words": []})
    driver.start(0.0)
    driver.on_event(ok("clean", length=0), 1.0)  # an empty map succeeds at once
    assert driver.on_event(ok("clean", length=0), 1.1).kicks == []
    assert driver.on_event(ok("total", attempt=7), 1.2).kicks == []


def test_a_failing_step_fails_the_run() -> None:
    driver = make_driver(inputs={"words": ["a"]})
    driver.start(0.0)
    step = driver.on_event(StepEvent("uid-1", "clean", 1, False, error="ValueError: bad"), 1.0)
    assert step.finished is not None
    assert [n.reason for n in step.notes] == ["StepFailed", "Failed"]
    status = build_run_status(driver, generation=1, now=1.0)
    assert status["phase"] == "Failed"
    assert status["steps"]["clean"]["message"] == "ValueError: bad"
    assert status["steps"]["total"]["phase"] == "Cancelled"
    assert status["conditions"][0]["status"] == "False"


def test_retries_are_scheduled_without_blocking() -> None:
    spec = dataflow_spec()
    spec["steps"][0]["retries"] = {"limit": 2, "delaySeconds": 5, "backoff": 1}
    driver = make_driver(spec, inputs={"words": ["a"]})
    driver.start(0.0)
    step = driver.on_event(StepEvent("uid-1", "clean", 1, False, error="E: x"), 1.0)
    assert [n.reason for n in step.notes] == ["Retrying"]
    assert step.kicks == []
    deadline = driver.next_deadline()
    assert deadline is not None
    assert 1.0 < deadline <= 6.5
    assert build_run_status(driver, generation=1, now=2.0)["steps"]["clean"]["phase"] == "Retrying"
    assert driver.tick(deadline).kicks[0].task_id == "uid-1.clean.2"


def test_cancel_and_timeout() -> None:
    driver = make_driver(inputs={"words": ["a"]})
    driver.start(0.0)
    step = driver.cancel(1.0)
    assert step.finished is not None
    assert build_run_status(driver, generation=2, now=1.0)["phase"] == "Cancelled"
    timed = make_driver(inputs={"words": ["a"]}, timeoutSeconds=5)
    timed.start(0.0)
    assert timed.tick(4.0).finished is None
    assert timed.tick(5.0).finished is not None
    status = build_run_status(timed, generation=1, now=5.0)
    assert status["conditions"][0]["reason"] == "Timeout"
    assert "timeout" in status["message"]


def test_a_restored_driver_decides_the_same_task_ids() -> None:
    driver = make_driver(inputs={"words": ["a", "b", "c"]})
    driver.start(0.0)
    snapshot = driver.snapshot()
    step = driver.on_event(ok("clean", length=3), 1.0)
    # The operator died before saving: the new one re-applies the same event.
    again = make_driver(inputs={"words": ["a", "b", "c"]})
    again.restore(snapshot)
    replay: Step = again.on_event(ok("clean", length=3), 1.5)
    assert [k.task_id for k in replay.kicks] == [k.task_id for k in step.kicks]
    # After saving, a redelivered event changes nothing.
    saved = make_driver(inputs={"words": ["a", "b", "c"]})
    saved.restore(driver.snapshot())
    assert saved.on_event(ok("clean", length=3), 2.0).kicks == []
    assert saved.in_flight() == 2


def test_map_over_something_not_a_list_fails_the_step() -> None:
    spec = dataflow_spec()
    driver = make_driver(spec, inputs={"words": ["a"]})
    driver.start(0.0)
    step = driver.on_event(ok("clean"), 1.0)  # no length: not a list
    assert step.finished is not None
    assert "did not return a list" in (driver.machine.nodes["score"].error or "")


def test_status_of_a_10000_item_map_is_small() -> None:
    import json

    items = [f"w{i}" for i in range(10_000)]
    spec = dataflow_spec()
    spec["steps"][1]["map"] = {"over": "words", "as": "word"}
    spec["steps"][1]["inputs"] = []
    driver = make_driver(spec, inputs={"words": items})
    step = driver.start(0.0)
    assert len([k for k in step.kicks if k.step == "score"]) == 10_000
    assert step.kicks[1].kwargs == {"word": "w0"}
    for i in range(9_000):
        driver.on_event(ok("score", item=i), 1.0)
    status = build_run_status(driver, generation=1, now=2.0)
    assert len(json.dumps(status)) < 64 * 1024
    assert status["steps"]["score"]["items"]["running"] == 1_000


def test_a_filter_step_outputs_the_items_it_kept_in_order() -> None:
    from tests.operator.pipelines import filter_spec

    words = ["a", "bb", "ccc", "d", "eeee"]
    driver = make_driver(filter_spec(), inputs={"words": words})
    step = driver.start(0.0)
    # One message per item, like a map; each says which parameter receives the item.
    assert [k.task_id for k in step.kicks] == [f"uid-1.long.1.{i}" for i in range(5)]
    assert {k.filter for k in step.kicks} == {"word"}
    assert step.kicks[1].kwargs == {"than": 1, "word": "bb"}
    for i, word in enumerate(words):
        step = driver.on_event(ok("long", item=i, keep=len(word) > 1, size=5), 1.0 + i)
    assert driver.kept["long"] == [1, 2, 4]
    assert driver.lengths["long"] == 3
    assert driver.sizes["long"] == 15  # only the kept items are stored
    # A map over what the filter kept reads the kept items where the workers stored them.
    assert [k.kwargs["word"] for k in step.kicks] == [
        {"$tfref": f"tfo:{{uid-1}}:out:long:{i}"} for i in (1, 2, 4)
    ]
    assert all(k.filter is None for k in step.kicks)
    status = build_run_status(driver, generation=1, now=6.0)
    assert status["steps"]["long"]["items"] == {
        "total": 5,
        "succeeded": 5,
        "failed": 0,
        "running": 0,
    }
    assert driver.item_indices("long") == [1, 2, 4]
    for i in range(3):
        step = driver.on_event(ok("score", item=i), 7.0)
    # A filter over a map's results: maxParallel 2.
    assert [k.kwargs for k in step.kicks] == [
        {"limit": 5, "value": {"$tfref": f"tfo:{{uid-1}}:out:score:{i}"}} for i in (0, 1)
    ]
    driver.on_event(ok("big", item=0, keep=False, size=None), 8.0)
    driver.on_event(ok("big", item=1, keep=True), 8.0)
    snapshot = driver.snapshot()
    again = make_driver(filter_spec(), inputs={"words": words})
    again.restore(snapshot)
    step = again.on_event(ok("big", item=2, keep=True), 9.0)
    # The step consuming a filter's output gets a reference to exactly the kept items.
    assert step.kicks[0].kwargs == {
        "scores": {"$tfitems": "tfo:{uid-1}:out:big", "indices": [1, 2]}
    }
    assert again.kept == {"long": [1, 2, 4], "big": [1, 2]}


def test_a_filter_over_an_empty_list_keeps_nothing() -> None:
    from tests.operator.pipelines import filter_spec

    driver = make_driver(filter_spec(), inputs={"words": []})
    step = driver.start(0.0)
    assert driver.kept["long"] == []
    # score maps over nothing and succeeds; big filters nothing; total gets an empty list.
    assert [k.task_id for k in step.kicks] == ["uid-1.total.1"]
    assert step.kicks[0].kwargs == {"scores": {"$tfitems": "tfo:{uid-1}:out:big", "indices": []}}
