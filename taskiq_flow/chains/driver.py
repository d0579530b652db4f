"""The worker side of sequential pipelines: whoever finishes a step sends the next one.

No process waits for a step: the ``PipelineMiddleware`` calls ``on_step_finished`` after a
step's result is saved, and that call advances the run through the scheduling core — the
chain is a ``Plan`` whose step *i* waits for step *i - 1*; the machine is rebuilt from the
message's labels (which step, which attempt, when it began), fed the outcome, and its
actions carried out: send the next step, retry this one later, or finish the run.

A map, filter or group step sends one message per item. Items do not wait for each other
either: each finished item records its result with ``SequenceStore.item_done`` (atomic and
idempotent), sends the item ``max_parallel`` places after it when some are held back, and
the one that completes the count advances the run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from taskiq import AsyncBroker, TaskiqMessage, TaskiqResult
from taskiq.kicker import AsyncKicker

from taskiq_flow.chains.sending import advance_and_send, delivery_of
from taskiq_flow.chains.spec import SequenceSpec
from taskiq_flow.chains.store import RedisSequenceStore, SequenceStore, StreamAck, store_for
from taskiq_flow.completions import (
    LABEL_ATTEMPT,
    LABEL_MODE,
    LABEL_NODE,
    LABEL_STARTED,
    LABEL_STEP,
    publish_completion,
    redis_pool_of,
    shared_client,
)
from taskiq_flow.core import Dispatch, Finish, Retry, RunMachine, RunOutcome, task_id
from taskiq_flow.core.fanout import (
    ItemPhase,
    first_items,
    items_error,
    judge_item_failure,
    kept_items,
    released_item,
    succeeded_item,
)
from taskiq_flow.core.states import tracking_status
from taskiq_flow.errors import format_error
from taskiq_flow.tracking.observer import RunObserver, forget_observer, observer_for
from taskiq_flow.tracking.remote import recorder_for

if TYPE_CHECKING:
    from taskiq_flow.brokers import Delivery

__all__ = [
    "LABEL_SEQ",
    "LABEL_SEQ_ATTEMPT",
    "LABEL_SEQ_FIRST",
    "LABEL_SEQ_ITEM",
    "LABEL_SEQ_ITEM_ATTEMPT",
    "LABEL_NOT_BEFORE",
    "on_step_finished",
    "save_run",
    "start_run",
]

logger = logging.getLogger("taskiq_flow.sequential")

LABEL_SEQ = "tf_seq"
LABEL_SEQ_ATTEMPT = "tf_seq_attempt"
LABEL_SEQ_ITEM = "tf_seq_item"
LABEL_SEQ_ITEM_ATTEMPT = "tf_seq_item_attempt"
LABEL_SEQ_FIRST = "tf_seq_first"
LABEL_SEQ_ITEM_FIRST = "tf_seq_item_first"  # when the item's first attempt was sent
LABEL_NOT_BEFORE = "tf_not_before"
LABEL_NO_CONTEXT = "tf_no_context"

_CACHE_SIZE = 256
# A fan-out step sends its items this many at a time, concurrently (on as many pooled
# connections): a 1,000-item map is not 1,000 round trips one after another.
_KICK_BATCH = 64


class _LRU(OrderedDict[Any, Any]):
    """A small bounded cache: specs and fan-out inputs are read by every item."""

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _CACHE_SIZE:
            self.popitem(last=False)


_specs = _LRU()
_inputs = _LRU()
_plans = _LRU()  # the chain's Plan per run: rebuilt for every step otherwise


class _Run:
    """What one finished message tells about its run."""

    def __init__(self, broker: AsyncBroker, labels: Mapping[str, Any]) -> None:
        self.broker = broker
        self.store: SequenceStore = store_for(broker)
        self.run_id = str(labels[LABEL_SEQ])
        self.step = int(labels.get(LABEL_STEP, 0))
        self.attempt = int(labels.get(LABEL_SEQ_ATTEMPT, 1))
        self.item = int(labels.get(LABEL_SEQ_ITEM, -1))
        self.item_attempt = int(labels.get(LABEL_SEQ_ITEM_ATTEMPT, 1))
        self.started_at = float(labels.get(LABEL_STARTED, time.time()))
        self.first_started = float(labels.get(LABEL_SEQ_FIRST, self.started_at))
        self.item_first = float(labels.get(LABEL_SEQ_ITEM_FIRST, self.first_started))
        # The finished message's stream entry: acknowledged with the next step's send.
        self.delivery: Delivery | None = None


async def _spec(store: SequenceStore, run_id: str) -> SequenceSpec | None:
    spec = _specs.get(run_id)
    if spec is None:
        raw = await store.load_spec(run_id)
        if raw is None:
            return None
        spec = SequenceSpec.from_json(raw)
        _specs.put(run_id, spec)
    return spec


def _tracker(broker: AsyncBroker, run_id: str, spec: SequenceSpec | None) -> RunObserver | None:
    """Where this run's tracking goes: the observer of the process that started the run
    when that is this one, else (another worker) straight into the Redis storage named
    in the spec. ``None``: the run is not tracked. The calls only queue the writes."""
    observer = observer_for(run_id)
    if observer is not None or spec is None or not spec.tracking:
        return observer
    pool = redis_pool_of(broker)
    return None if pool is None else recorder_for(shared_client(pool), spec.tracking)


async def _kick(prepared: tuple[AsyncKicker[Any, Any], tuple[Any, ...], dict[str, Any]]) -> None:
    """Send what ``_kicker`` prepared."""
    kicker, args, kwargs = prepared
    await kicker.kiq(*args, **kwargs)


def _kicker(
    broker: AsyncBroker,
    spec: SequenceSpec,
    run_id: str,
    step_index: int,
    attempt: int,
    value: Any,
    *,
    started_at: float,
    first_started: float,
    item: int = -1,
    item_attempt: int = 1,
    item_first: float | None = None,
    not_before: float | None = None,
) -> tuple[AsyncKicker[Any, Any], tuple[Any, ...], dict[str, Any]]:
    """What sends step ``step_index`` (item ``item``) of the run, and its arguments."""
    step = spec.steps[step_index]
    task_name = step.tasks[item] if step.kind == "group" else step.tasks[0]
    task = broker.find_task(task_name)
    labels: dict[str, Any] = dict(getattr(task, "labels", None) or {})
    labels.update(
        {
            LABEL_SEQ: run_id,
            LABEL_STEP: step_index,
            LABEL_SEQ_ATTEMPT: attempt,
            LABEL_SEQ_ITEM: item,
            LABEL_SEQ_ITEM_ATTEMPT: item_attempt,
            LABEL_SEQ_FIRST: first_started,
            LABEL_STARTED: started_at,
            LABEL_MODE: "sequential",
            LABEL_NODE: step.name,
            LABEL_ATTEMPT: item_attempt if item >= 0 else attempt,
        }
    )
    if item >= 0:
        # What the item's max_retry_time counts from, as the core counts it.
        labels[LABEL_SEQ_ITEM_FIRST] = time.time() if item_first is None else item_first
    if not spec.context:
        labels[LABEL_NO_CONTEXT] = True
    if not_before is not None:
        labels[LABEL_NOT_BEFORE] = not_before
    if spec.timeout is not None:
        # The worker cancels a step that would outlive the whole pipeline's deadline.
        remaining = max(started_at + spec.timeout - time.time(), 0.001)
        own = labels.get("timeout")
        labels["timeout"] = remaining if own is None else min(float(own), remaining)
    args: tuple[Any, ...] = ()
    kwargs = dict(step.kwargs)
    if step.param is not None:
        kwargs[step.param] = value
    else:
        args = (value,)
    kicker: AsyncKicker[Any, Any] = AsyncKicker(task_name=task_name, broker=broker, labels=labels)
    kicker.with_task_id(
        task_id(run_id, str(step_index), attempt, None if item < 0 else item, item_attempt)
    )
    return kicker, args, kwargs


def _machine(spec: SequenceSpec, run: _Run, now: float) -> RunMachine:
    """The chain's state machine, as it stands while ``run.step`` is in flight."""
    plan = _plans.get(run.run_id)
    if plan is None:
        plan = spec.plan()
        _plans.put(run.run_id, plan)
    machine = RunMachine(plan, error_mode=spec.error_mode, timeout=spec.timeout)
    nodes: dict[str, dict[str, Any]] = {}
    for index in range(len(spec.steps)):
        if index < run.step:
            nodes[str(index)] = {"phase": "Succeeded", "attempt": 1}
        elif index == run.step:
            nodes[str(index)] = {
                "phase": "Running",
                "attempt": run.attempt,
                "firstStarted": run.first_started,
                "started": now,
            }
        else:
            nodes[str(index)] = {"phase": "Pending", "attempt": 0}
    machine.restore(
        {
            "startedAt": run.started_at,
            "deadline": None if spec.timeout is None else run.started_at + spec.timeout,
            "outcome": None,
            "nodes": nodes,
        }
    )
    return machine


async def save_run(broker: AsyncBroker, run_id: str, spec: SequenceSpec) -> None:
    """Client side, before ``start_run``: store the run's spec where workers find it."""
    await store_for(broker).save_spec(run_id, spec.to_json())
    _specs.put(run_id, spec)


async def start_run(
    broker: AsyncBroker, run_id: str, spec: SequenceSpec, data: Any, started_at: float
) -> None:
    """Client side: send the first step of a run saved with ``save_run``."""
    store = store_for(broker)
    await _start_step(broker, store, spec, run_id, 0, 1, data, started_at, started_at)


async def _start_step(
    broker: AsyncBroker,
    store: SequenceStore,
    spec: SequenceSpec,
    run_id: str,
    index: int,
    attempt: int,
    value: Any,
    started_at: float,
    first_started: float,
    output: tuple[int, Any] | None = None,
    delivery: Delivery | None = None,
) -> None:
    step = spec.steps[index]
    tracker = _tracker(broker, run_id, spec)
    if tracker is not None:
        tracker.step_started(run_id, index, step.name)
    # The previous step's output (when there is one) is recorded in the same round trip.
    outputs = None if output is None else {output[0]: output[1]}
    fields = {"step": index, "step_name": step.name}
    if not step.fans_out:
        kicker, args, kwargs = _kicker(
            broker,
            spec,
            run_id,
            index,
            attempt,
            value,
            started_at=started_at,
            first_started=first_started,
        )
        sent = await advance_and_send(
            broker, store, run_id, fields, outputs, kicker, args, kwargs, delivery
        )
        if sent is None and await store.advance(run_id, fields, outputs):
            await kicker.kiq(*args, **kwargs)
        return
    if not await store.advance(run_id, fields, outputs):
        return  # the run ended meanwhile (failed, timed out): a late result sends nothing
    if step.kind == "group":
        count = len(step.tasks)
        items: Sequence[Any] = [value] * count
    else:
        if isinstance(value, str | bytes | Mapping) or not hasattr(value, "__iter__"):
            await _finish(
                broker,
                store,
                run_id,
                started_at,
                index,
                error=(
                    f"TypeError: {step.kind} step {step.name!r} needs a list, "
                    f"got {type(value).__name__}"
                ),
            )
            return
        items = list(value)
        count = len(items)
        await store.save_input(run_id, index, items)
        _inputs.put((run_id, index), items)
    if count == 0:
        await _advance(broker, store, spec, run_id, index, attempt, [], started_at, first_started)
        return
    window = len(first_items(step.max_parallel, count))
    for first in range(0, window, _KICK_BATCH):
        await asyncio.gather(
            *(
                _kick(
                    _kicker(
                        broker,
                        spec,
                        run_id,
                        index,
                        attempt,
                        items[item],
                        item=item,
                        started_at=started_at,
                        first_started=first_started,
                    )
                )
                for item in range(first, min(first + _KICK_BATCH, window))
            )
        )


async def on_step_finished(
    broker: AsyncBroker, message: TaskiqMessage, result: TaskiqResult[Any]
) -> None:
    """Worker side: a sequential step (or item) finished; move the run on."""
    run = _Run(broker, message.labels)
    run.delivery = delivery_of(broker, message.task_id)
    spec = await _spec(run.store, run.run_id)
    if spec is None:
        logger.error("sequential run %s is unknown or expired; dropping its step", run.run_id)
        return
    if result.is_err and await run.store.is_finished(run.run_id):
        return  # a late result of a run that already ended (failed, timed out, cancelled)
    # A step (or item) that succeeded is checked in the round trip that records it
    # (``store.advance``, ``store.item_done``).
    if run.item >= 0:
        await _item_finished(run, spec, message, result)
    elif result.is_err:
        await _step_failed(run, spec, message, format_error(result.error))
    else:
        await _advance(
            broker,
            run.store,
            spec,
            run.run_id,
            run.step,
            run.attempt,
            result.return_value,
            run.started_at,
            run.first_started,
            run,
        )


async def _item_finished(
    run: _Run, spec: SequenceSpec, message: TaskiqMessage, result: TaskiqResult[Any]
) -> None:
    step = spec.steps[run.step]
    now = time.time()
    error = format_error(result.error) if result.is_err else None
    verdict = None
    if error is not None:
        verdict = judge_item_failure(
            spec.retry_policy,
            spec.error_mode,
            run.item_attempt,
            run.item_first,
            now,
            random.random(),
            error,
        )
        if verdict.retry_at is not None:
            given = message.kwargs.get(step.param) if step.param else message.args[0]
            await _send_item(
                run,
                spec,
                given,
                run.item,
                item_attempt=run.item_attempt + 1,
                item_first=run.item_first,
                not_before=verdict.retry_at,
            )
            return
    # The step's input is needed from here on only (a retry above resends its own item).
    items: list[Any] | None = None
    if step.kind == "group":
        total = len(step.tasks)
    else:
        items = await _fanout_input(run)
        total = len(items)
    if error is not None and verdict is not None and verdict.fails_step:
        await _finish(
            run.broker,
            run.store,
            run.run_id,
            run.started_at,
            run.step,
            error=items_error(1, total, run.item, error),
        )
        return
    payload = {"ok": True, "v": result.return_value} if error is None else {"ok": False, "e": error}
    new, done = await _record_item(run, step.max_parallel is None, total, payload)
    if done < 0:
        return  # a late item of a run that already ended (failed, timed out, cancelled)
    following = None if items is None else released_item(run.item, step.max_parallel, total)
    # A redelivered item (not new) sends the item it releases only if that has no result
    # yet, so duplicates cannot cascade.
    if (
        items is not None
        and following is not None
        and (new or not await run.store.has_item(run.run_id, run.step, run.attempt, following))
    ):
        await _send_item(run, spec, items[following], following)
    if done < total:
        return
    if not new and (await run.store.status(run.run_id)).get("step") != run.step:
        return  # a redelivered item of a step that has already moved on: nothing to send
    results = await run.store.items(run.run_id, run.step, run.attempt)
    ordered = [results[i] for i in sorted(results)]
    # String keys: what a JSON round trip through Redis gives back, so both stores agree.
    failures = {str(i): p["e"] for i, p in sorted(results.items()) if not p["ok"]}
    if failures:
        await run.store.update(run.run_id, {f"item_errors_{run.step}": failures})
    # The core's gather rule: what each item left, then the items that make the output.
    phases = [
        succeeded_item(step.kind == "filter", p["v"]) if p["ok"] else ItemPhase.FAILED
        for p in ordered
    ]
    kept = kept_items(phases)
    if step.kind == "filter":
        assert items is not None
        value: Any = [items[i] for i in kept]
    else:
        value = [ordered[i]["v"] for i in kept]
    await _advance(
        run.broker,
        run.store,
        spec,
        run.run_id,
        run.step,
        run.attempt,
        value,
        run.started_at,
        run.first_started,
        run,
    )


async def _send_item(
    run: _Run,
    spec: SequenceSpec,
    value: Any,
    item: int,
    *,
    item_attempt: int = 1,
    item_first: float | None = None,
    not_before: float | None = None,
) -> None:
    """Send attempt ``item_attempt`` of item ``item`` of the step ``run`` is on."""
    await _kick(
        _kicker(
            run.broker,
            spec,
            run.run_id,
            run.step,
            run.attempt,
            value,
            started_at=run.started_at,
            first_started=run.first_started,
            item=item,
            item_attempt=item_attempt,
            item_first=item_first,
            not_before=not_before,
        )
    )


async def _record_item(run: _Run, ackable: bool, total: int, payload: Any) -> tuple[bool, int]:
    """``store.item_done``. When nothing follows from this item unless it completes the
    step (no held-back item to send: ``ackable``), its message is acknowledged in the same
    script — on a broker that says which stream entry it was."""
    store, delivery = run.store, run.delivery
    if (
        not ackable
        or delivery is None
        or delivery.acked
        or not isinstance(store, RedisSequenceStore)
    ):
        return await store.item_done(run.run_id, run.step, run.attempt, run.item, payload)
    ack = StreamAck(delivery.stream, delivery.group, delivery.message_id)
    new, done = await store.item_done(
        run.run_id, run.step, run.attempt, run.item, payload, ack=ack, total=total
    )
    delivery.acked = done < total
    return new, done


async def _fanout_input(run: _Run) -> list[Any]:
    key = (run.run_id, run.step)
    items = _inputs.get(key)
    if items is None:
        items = list(await run.store.load_input(run.run_id, run.step) or [])
        _inputs.put(key, items)
    return items


async def _advance(
    broker: AsyncBroker,
    store: SequenceStore,
    spec: SequenceSpec,
    run_id: str,
    index: int,
    attempt: int,
    value: Any,
    started_at: float,
    first_started: float,
    run: _Run | None = None,
) -> None:
    """Step ``index`` produced ``value``: ask the core what comes next, and do it.

    The output is recorded with the next step's start, or before the run finishes.
    """
    now = time.time()
    state = run or _Run(
        broker,
        {
            LABEL_SEQ: run_id,
            LABEL_STEP: index,
            LABEL_SEQ_ATTEMPT: attempt,
            LABEL_STARTED: started_at,
            LABEL_SEQ_FIRST: first_started,
        },
    )
    machine = _machine(spec, state, now)
    actions = machine.tick(now) or machine.succeeded(str(index), attempt, now)
    tracker = _tracker(broker, run_id, spec)
    if tracker is not None:
        tracker.step_finished(
            run_id, index, spec.steps[index].name, result=value, started_at=first_started
        )
    if not any(isinstance(action, Dispatch | Finish) for action in actions):
        await store.record_output(run_id, index, value)  # else recorded with what follows
    await _carry_out(
        broker,
        store,
        spec,
        run_id,
        actions,
        value,
        started_at,
        index,
        output=(index, value),
        delivery=None if run is None else run.delivery,
    )


async def _step_failed(run: _Run, spec: SequenceSpec, message: TaskiqMessage, error: str) -> None:
    now = time.time()
    machine = _machine(spec, run, now)
    actions = machine.tick(now) or machine.failed(str(run.step), run.attempt, error, now)
    step = spec.steps[run.step]
    given = (
        message.kwargs.get(step.param)
        if step.param
        else (message.args[0] if message.args else None)
    )
    for action in actions:
        if isinstance(action, Retry):
            await _kick(
                _kicker(
                    run.broker,
                    spec,
                    run.run_id,
                    run.step,
                    action.attempt,
                    given,
                    started_at=run.started_at,
                    first_started=run.first_started,
                    not_before=action.at,
                )
            )
            await run.store.update(run.run_id, {"retrying": step.name, "error": error})
            return
    tracker = _tracker(run.broker, run.run_id, spec)
    if tracker is not None:
        tracker.step_finished(
            run.run_id, run.step, step.name, error=error, started_at=run.first_started
        )
    # "continue": the failed step is skipped and its input flows on to the next step.
    await run.store.update(run.run_id, {f"error_{run.step}": error})
    await _carry_out(
        run.broker, run.store, spec, run.run_id, actions, given, run.started_at, run.step, error
    )


async def _carry_out(
    broker: AsyncBroker,
    store: SequenceStore,
    spec: SequenceSpec,
    run_id: str,
    actions: Sequence[Any],
    value: Any,
    started_at: float,
    index: int,
    error: str | None = None,
    output: tuple[int, Any] | None = None,
    delivery: Delivery | None = None,
) -> None:
    for action in actions:
        if isinstance(action, Dispatch):
            now = time.time()
            await _start_step(
                broker,
                store,
                spec,
                run_id,
                int(action.node),
                action.attempt,
                value,
                started_at,
                now,
                output,
                delivery,
            )
        elif isinstance(action, Finish):
            if action.outcome is RunOutcome.SUCCEEDED:
                await _finish(broker, store, run_id, started_at, index, value=value, output=output)
            else:
                timed_out = action.failed_node is None
                failed = index if timed_out else int(str(action.failed_node))
                await _finish(
                    broker,
                    store,
                    run_id,
                    started_at,
                    failed,
                    error=action.reason if timed_out else (error or action.reason),
                    timed_out=timed_out,
                )


async def _finish(
    broker: AsyncBroker,
    store: SequenceStore,
    run_id: str,
    started_at: float,
    step: int,
    *,
    value: Any = None,
    error: str | None = None,
    timed_out: bool = False,
    output: tuple[int, Any] | None = None,
) -> None:
    """End the run once: record it (with the last ``output``), store the final result
    under the run's id, notify."""
    now = time.time()
    ok = error is None
    fields: dict[str, Any] = {"phase": "Succeeded" if ok else "Failed", "finished_at": now}
    if not ok:
        spec = _specs.get(run_id)
        name = spec.steps[step].name if spec is not None and step < len(spec.steps) else None
        fields.update(
            {"failed_step": name, "failed_index": step, "error": error, "timed_out": timed_out}
        )
    outputs = None if output is None else {output[0]: output[1]}
    if not await store.finish_once(run_id, fields, outputs):
        return
    await _track_finish(broker, store, run_id, started_at, step, value, error)
    result: TaskiqResult[Any] = TaskiqResult(
        is_err=not ok,
        return_value=value if ok else None,
        error=None if ok else RuntimeError(error),
        execution_time=now - started_at,
    )
    # Both at once: a waiting client takes the result from the completion; the result
    # backend's copy is for lookups by id (``taskiq_flow.Task``), which read the run's
    # record first and rebuild the result from it while the copy is not there yet.
    await asyncio.gather(
        _store_final(broker, run_id, result), publish_completion(broker, run_id, run_id, result)
    )


async def _store_final(broker: AsyncBroker, run_id: str, result: TaskiqResult[Any]) -> None:
    try:
        await broker.result_backend.set_result(run_id, result)
    except Exception:  # the run's own record above is what clients read first
        logger.exception("could not store the final result of run %s", run_id)


async def _track_finish(
    broker: AsyncBroker,
    store: SequenceStore,
    run_id: str,
    started_at: float,
    step: int,
    value: Any,
    error: str | None,
) -> None:
    """Record the run's end (awaited: the record is complete before clients hear)."""
    spec = await _spec(store, run_id)
    tracker = _tracker(broker, run_id, spec)
    if tracker is None or spec is None:
        return
    forget_observer(run_id)
    if error is not None and step < len(spec.steps):  # no-op when already recorded
        tracker.step_finished(run_id, step, spec.steps[step].name, error=error)
    await tracker.run_finished(
        run_id,
        tracking_status(RunOutcome.SUCCEEDED if error is None else RunOutcome.FAILED),
        result=value,
        error=error,
        started_at=started_at,
    )
