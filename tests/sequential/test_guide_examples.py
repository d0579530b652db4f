"""Every sequential example of the execution guide and the core-concepts guide, run on
an ``InMemoryBroker`` and on real worker processes over Redis (``seq_broker``)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
import redis.asyncio as aioredis
from taskiq import AsyncBroker
from taskiq.exceptions import TaskiqError

from taskiq_flow import (
    Pipeline,
    PipelineError,
    PipelineTimeoutError,
    SequentialPipeline,
    Task,
)
from tests.sequential import seq_tasks as st

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0  # seconds any run of these tests may take, at most


async def _counter(url: str, key: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.get(key) or 0)
    finally:
        await client.aclose()


# -- 1.1 / core concepts 1: the chain ----------------------------------------------------


async def test_a_chain_runs_its_steps_in_order_passing_each_output_on(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = Pipeline(seq_broker).call_next(st.add_one).call_next(st.double).call_next(st.add_one)

    task = await pipeline.kiq(5)
    result = await task.wait_result(timeout=WAIT)

    assert result.return_value == 13  # (5 + 1) * 2 + 1
    assert not result.is_err
    assert task.is_finished
    assert not task.is_failed
    assert task.partial_results == {"add_one": 6, "double": 12, "add_one#2": 13}


async def test_sequential_pipeline_is_the_same_class(seq_broker: AsyncBroker) -> None:
    assert SequentialPipeline is Pipeline
    task = await SequentialPipeline(seq_broker).call_next(st.double).kiq(21)
    assert (await task.wait_result(timeout=WAIT)).return_value == 42


async def test_the_core_concepts_pipeline_calls_maps_and_filters(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = (
        Pipeline(seq_broker)
        .call_next(st.numbers)  # step1: [1..6]
        .call_next(st.double_all)  # step2: [2, 4, ..., 12]
        .map(st.add_one)  # step3, in parallel on the list: [3, 5, ..., 13]
        .filter(st.divisible_by_three)  # step4, conditional
    )

    task = await pipeline.kiq(6)

    assert (await task.wait_result(timeout=WAIT)).return_value == [3, 9]
    assert task.partial_results["add_one"] == [3, 5, 7, 9, 11, 13]


async def test_map_keeps_the_order_of_its_items(seq_broker: AsyncBroker) -> None:
    task = await Pipeline(seq_broker).map(st.double, max_parallel=3).kiq(list(range(10)))
    assert (await task.wait_result(timeout=WAIT)).return_value == [n * 2 for n in range(10)]


async def test_map_of_an_empty_list_gives_an_empty_list(seq_broker: AsyncBroker) -> None:
    task = await Pipeline(seq_broker).map(st.double).call_next(st.total).kiq([])
    assert (await task.wait_result(timeout=WAIT)).return_value == 0


async def test_filter_keeps_the_items_its_task_accepts(seq_broker: AsyncBroker) -> None:
    task = await Pipeline(seq_broker).call_next(st.numbers).filter(st.is_even).kiq(7)
    assert (await task.wait_result(timeout=WAIT)).return_value == [2, 4, 6]


async def test_group_runs_tasks_on_the_same_input_and_passes_on_their_results(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = (
        Pipeline(seq_broker)
        .call_next(st.numbers)
        .group(st.total, st.largest)
        .call_next(st.total)  # receives [15, 5]
    )

    task = await pipeline.kiq(5)

    assert (await task.wait_result(timeout=WAIT)).return_value == 20
    assert task.partial_results["group(total, largest)"] == [15, 5]


async def test_a_map_over_a_non_list_fails_with_a_type_error(seq_broker: AsyncBroker) -> None:
    task = await Pipeline(seq_broker).call_next(st.add_one).map(st.double).kiq(1)

    with pytest.raises(PipelineError, match="TypeError") as raised:
        await task.wait_result(timeout=WAIT)

    assert raised.value.failed_step == "double"


# -- 8.1: the quickstart's result --------------------------------------------------------


async def test_the_quickstart_pipeline_returns_3_3_3_3(seq_broker: AsyncBroker) -> None:
    pipeline = Pipeline(seq_broker).call_next(st.split_words).map(st.word_length)

    task = await pipeline.kiq("one two six ten")
    result = await task.wait_result()

    # result.return_value is the final output after all steps
    assert result.return_value == [3, 3, 3, 3]


# -- 2.1 / 3.1: fire and forget, blocking wait -------------------------------------------


async def test_kiq_returns_at_once_and_wait_result_blocks_until_the_end(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = Pipeline(seq_broker).call_next(st.add_one).call_next(st.add_one)

    task = await pipeline.kiq(1)
    assert task.task_id == pipeline.pipeline_id
    # Do other things...
    other = await Pipeline(seq_broker).call_next(st.double).kiq(4)
    result = await task.wait_result()  # blocks until complete

    assert result.return_value == 3
    assert (await other.wait_result(timeout=WAIT)).return_value == 8


async def test_each_kiq_of_one_pipeline_is_a_run_of_its_own(seq_broker: AsyncBroker) -> None:
    pipeline = Pipeline(seq_broker).call_next(st.double)

    first, second = await pipeline.kiq(1), await pipeline.kiq(2)

    assert first.task_id != second.task_id
    assert (await first.wait_result(timeout=WAIT)).return_value == 2
    assert (await second.wait_result(timeout=WAIT)).return_value == 4


async def test_wait_result_with_a_timeout_raises_asyncio_timeout_error(
    seq_broker: AsyncBroker,
) -> None:
    # The step blocks; the pipeline's own timeout frees the worker afterwards.
    task = await Pipeline(seq_broker).call_next(st.hang).with_timeout(1.0).kiq(1)

    with pytest.raises(asyncio.TimeoutError):
        await task.wait_result(timeout=0.2)

    with pytest.raises(PipelineTimeoutError):
        await task.wait_result(timeout=WAIT)


# -- 3.2: polling -------------------------------------------------------------------------


async def test_polling_get_status_until_the_run_is_finished(seq_broker: AsyncBroker) -> None:
    pipeline = Pipeline(seq_broker).call_next(st.numbers).map(st.double).call_next(st.total)
    task = await pipeline.kiq(4)

    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + WAIT
    # Check periodically without blocking
    while not task.is_finished:
        assert time.monotonic() < deadline, f"still running: {seen[-1:]}"
        await asyncio.sleep(0.01)
        status = await task.get_status()
        seen.append(status)

    assert seen[-1]["phase"] == "Succeeded"
    assert all(s["phase"] in ("Running", "Succeeded") for s in seen)
    assert seen[-1]["outputs"] == {0: [1, 2, 3, 4], 1: [2, 4, 6, 8], 2: 20}
    assert (await task.wait_result(timeout=WAIT)).return_value == 20


# -- 3.3: fetch by task id ---------------------------------------------------------------


async def test_a_handle_built_from_the_task_id_alone_gets_the_result(
    seq_broker: AsyncBroker,
) -> None:
    started = await Pipeline(seq_broker).call_next(st.add_one).call_next(st.double).kiq(10)

    task = Task(task_id=started.task_id, broker=seq_broker)
    result = await task.wait_result(timeout=WAIT)

    assert result.return_value == 22
    assert task.is_finished
    assert task.partial_results == {"add_one": 11, "double": 22}  # names from the spec
    assert (await task.get_status())["phase"] == "Succeeded"


async def test_the_final_result_is_in_the_result_backend_under_the_task_id(
    seq_broker: AsyncBroker,
) -> None:
    task = await Pipeline(seq_broker).call_next(st.double).kiq(3)
    await task.wait_result(timeout=WAIT)

    stored = await seq_broker.result_backend.get_result(task.task_id)

    assert stored.return_value == 6


# -- 4.1: error policies ------------------------------------------------------------------


async def test_on_error_stop_ends_the_run_at_the_failed_step(seq_broker: AsyncBroker) -> None:
    pipeline = (
        Pipeline(seq_broker)
        .on_error("stop")
        .call_next(st.add_one)
        .call_next(st.explode)
        .call_next(st.double)
    )
    task = await pipeline.kiq(1)

    with pytest.raises(PipelineError, match="ValueError: cannot handle 2") as raised:
        await task.wait_result(timeout=WAIT)

    assert raised.value.failed_step == "explode"
    assert raised.value.partial_results == {"add_one": 2}
    assert task.is_failed
    assert task.failed_step == "explode"
    assert "double" not in task.partial_results  # never ran


async def test_the_default_policy_is_stop(seq_broker: AsyncBroker) -> None:
    task = await Pipeline(seq_broker).call_next(st.explode).call_next(st.double).kiq(1)

    result = await task.wait_result(timeout=WAIT, raise_on_error=False)

    assert result.is_err
    assert "cannot handle 1" in str(result.error)
    assert task.failed_step == "explode"


async def test_on_error_continue_skips_a_failed_step_and_passes_its_input_on(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = (
        Pipeline(seq_broker)
        .on_error("continue")
        .call_next(st.add_one)
        .call_next(st.explode)
        .call_next(st.double)
    )
    task = await pipeline.kiq(1)

    result = await task.wait_result(timeout=WAIT)

    assert result.return_value == 4  # double(add_one(1)): explode was skipped
    status = await task.get_status()
    assert "cannot handle 2" in str(status["error_1"])


async def test_on_error_continue_keeps_a_maps_successful_items_and_records_failures(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = Pipeline(seq_broker).on_error("continue").map(st.fail_on_three).call_next(st.total)
    task = await pipeline.kiq([1, 2, 3, 4])

    result = await task.wait_result(timeout=WAIT)

    assert result.return_value == 14  # 2 + 4 + 8: item 3 failed
    assert task.partial_results["fail_on_three"] == [2, 4, 8]
    errors = (await task.get_status())["item_errors_0"]
    assert list(errors) == ["2"]  # by item index (a string: the status is JSON)
    assert "three is not allowed" in errors["2"]


async def test_a_failed_map_item_stops_the_run_by_default(seq_broker: AsyncBroker) -> None:
    task = await Pipeline(seq_broker).map(st.fail_on_three).call_next(st.total).kiq([1, 2, 3])

    # The words of every driver (the core's): how many items failed, and the first one.
    with pytest.raises(
        PipelineError, match="1 of 3 items failed; item 2: ValueError: three is not allowed"
    ):
        await task.wait_result(timeout=WAIT)

    assert task.failed_step == "fail_on_three"


async def test_on_error_retry_retries_a_failed_step(
    seq_broker: AsyncBroker, seq_redis: str, key: str
) -> None:
    # on_error("retry") alone: 3 attempts, 1 s apart.
    pipeline = (
        Pipeline(seq_broker)
        .on_error("retry")
        .call_next(st.flaky, param_name="value", key=key, failures=1)
        .call_next(st.add_one)
    )
    task = await pipeline.kiq(1)

    assert (await task.wait_result(timeout=WAIT)).return_value == 2
    assert await _counter(seq_redis, key) == 2


@pytest.mark.parametrize(("failures", "attempts"), [(2, 3), (5, 3)])
async def test_with_retry_attempts_a_step_up_to_max_attempts(
    seq_broker: AsyncBroker, seq_redis: str, key: str, failures: int, attempts: int
) -> None:
    pipeline = (
        Pipeline(seq_broker)
        .with_retry(max_attempts=3, delay=0.05, backoff=2)
        .call_next(st.flaky, param_name="value", key=key, failures=failures)
    )
    task = await pipeline.kiq(7)

    result = await task.wait_result(timeout=WAIT, raise_on_error=False)

    assert await _counter(seq_redis, key) == attempts
    if failures < attempts:
        assert result.return_value == 7
    else:
        assert result.is_err
        assert "flaky failure on attempt 3" in str(result.error)
        assert task.failed_step == "flaky"


async def test_with_retry_retries_each_map_item_on_its_own(
    seq_broker: AsyncBroker, seq_redis: str, key: str
) -> None:
    pipeline = (
        Pipeline(seq_broker)
        .with_retry(max_attempts=3, delay=0.05, backoff=1)
        .map(st.flaky, param_name="value", key=key, failures=2)
    )
    task = await pipeline.kiq([1, 2, 3])

    result = await task.wait_result(timeout=WAIT)

    # The first two calls (whichever items made them) fail; those items are retried.
    assert result.return_value == [1, 2, 3]
    assert await _counter(seq_redis, key) == 5


# -- 4.2 / 4.3: pipeline-level errors and partial results ---------------------------------


async def test_pipeline_errors_are_taskiq_errors_with_the_failed_step(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = Pipeline(seq_broker).call_next(st.double).call_next(st.explode)
    data = 4
    caught = None

    try:
        result = await pipeline.kiq(data)
        output = await result.wait_result()
    except TaskiqError as exc:
        caught = exc
        # Access partial results if any
        assert result.is_failed
        assert result.failed_step == "explode"

    assert caught is not None, f"no error; output {output}"
    assert "failed at step 'explode'" in str(caught)


async def test_partial_results_hold_the_steps_that_finished_before_the_failure(
    seq_broker: AsyncBroker,
) -> None:
    pipeline = (
        Pipeline(seq_broker)
        .call_next(st.numbers)
        .map(st.double)
        .call_next(st.explode)
        .call_next(st.total)
    )
    result = await pipeline.kiq(3)

    with pytest.raises(PipelineError) as raised:
        await result.wait_result()

    partial = result.partial_results  # dict of completed outputs
    assert partial == {"numbers": [1, 2, 3], "double": [2, 4, 6]}
    assert raised.value.partial_results == partial
    assert raised.value.errors == {"explode": "ValueError: cannot handle [2, 4, 6]"}


# -- 5: timeouts ----------------------------------------------------------------------------


async def test_with_timeout_fails_a_run_that_takes_too_long(seq_broker: AsyncBroker) -> None:
    pipeline = Pipeline(seq_broker).with_timeout(1.0).call_next(st.add_one).call_next(st.hang)
    task = await pipeline.kiq(1)
    started = time.monotonic()

    with pytest.raises(PipelineTimeoutError) as raised:
        await task.wait_result(timeout=WAIT)

    assert time.monotonic() - started < 5
    assert raised.value.partial_results == {"add_one": 2}
    assert task.is_failed
    assert task.failed_step == "hang"
    assert (await task.get_status())["timed_out"] is True


async def test_a_task_timeout_from_the_decorator_fails_its_step(
    seq_broker: AsyncBroker,
) -> None:
    task = await Pipeline(seq_broker).call_next(st.hang_with_own_timeout).kiq(1)

    with pytest.raises(PipelineError) as raised:
        await task.wait_result(timeout=WAIT)

    assert not isinstance(raised.value, PipelineTimeoutError)  # the step's, not the run's
    assert raised.value.failed_step == "hang_with_own_timeout"
    assert "Timeout" in str(raised.value)


# -- 6 / 10.3: the execution context ---------------------------------------------------------


async def test_a_sequential_step_receives_its_pipeline_context(seq_broker: AsyncBroker) -> None:
    pipeline = Pipeline(seq_broker).with_context(enable=True)
    pipeline.call_next(st.add_one).call_next(st.describe)
    before = time.time()

    task = await pipeline.kiq(1)
    seen = (await task.wait_result(timeout=WAIT)).return_value

    assert seen["data"] == 2
    assert seen["execution_mode"] == "sequential"
    assert seen["step_index"] == 1
    assert seen["pipeline_id"] == task.pipeline_id == pipeline.pipeline_id
    assert seen["task_id"].startswith(task.task_id + ".1.")
    assert seen["step_name"] == "describe"
    assert seen["has_broker"]
    assert datetime.fromisoformat(seen["started_at"]).timestamp() >= before - 1


async def test_map_items_receive_the_context_of_their_step(seq_broker: AsyncBroker) -> None:
    task = await Pipeline(seq_broker).call_next(st.numbers).map(st.describe).kiq(2)

    seen = (await task.wait_result(timeout=WAIT)).return_value

    assert [s["data"] for s in seen] == [1, 2]
    assert {s["step_index"] for s in seen} == {1}
    assert {s["execution_mode"] for s in seen} == {"sequential"}
    assert len({s["task_id"] for s in seen}) == 2


@pytest.mark.parametrize("enable", [True, False])
async def test_with_context_turns_the_injection_on_and_off(
    seq_broker: AsyncBroker, enable: bool
) -> None:
    pipeline = Pipeline(seq_broker).with_context(enable=enable).call_next(st.has_context)

    task = await pipeline.kiq(1)

    assert (await task.wait_result(timeout=WAIT)).return_value is enable
