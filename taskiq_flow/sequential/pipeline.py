"""``Pipeline``: steps in a line — ``call_next``, ``map``, ``filter``, ``group``.

``kiq`` saves the pipeline's spec where workers see it and sends the first step; from
then on the workers advance the run (see ``taskiq_flow.chains.driver``), so the
client may exit. The returned ``PipelineTask`` waits for the final result without polling.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, Self

from taskiq import AsyncBroker, InMemoryBroker, TaskiqResult

from taskiq_flow.chains.driver import save_run, start_run
from taskiq_flow.chains.spec import ErrorPolicy, SequenceSpec, StepKind, StepSpec
from taskiq_flow.chains.store import store_for
from taskiq_flow.completions import Completion, CompletionChannel, channel_for, redis_pool_of
from taskiq_flow.core.retry import RetryPolicy
from taskiq_flow.core.states import FINISHED
from taskiq_flow.dataflow.builder import task_name_of
from taskiq_flow.errors import PipelineError, PipelineTimeoutError, UnknownTaskError
from taskiq_flow.hooks import resolve_observer
from taskiq_flow.middleware import ensure_middleware
from taskiq_flow.tracking.observer import forget_observer, register_observer

__all__ = ["Pipeline", "PipelineTask", "SequentialPipeline", "Task"]

_ERROR_POLICIES = ("stop", "continue", "retry")
# How often a waiting client re-reads the run's record, in case the completion event
# was lost (Redis restarted, the stream expired): a safety net, not the normal path.
_STATUS_RECHECK_SECONDS = 1.0


class Pipeline:
    """A sequential pipeline: each step receives the previous step's output.

    >>> pipeline = Pipeline(broker).call_next(parse).map(score).filter(is_good)
    >>> task = await pipeline.kiq(raw)
    >>> (await task.wait_result()).return_value
    """

    def __init__(self, broker: AsyncBroker, pipeline_id: str | None = None) -> None:
        self.broker = broker
        self.steps: list[StepSpec] = []
        self.pipeline_id = pipeline_id or uuid.uuid4().hex
        self._on_error: ErrorPolicy = "stop"
        self._retry: RetryPolicy | None = None
        self._timeout: float | None = None
        self._context = True
        self._runs = 0
        self.tracking: Any = None
        self.hooks: Any = None

    # -- steps -------------------------------------------------------------------------

    def _add(
        self,
        kind: StepKind,
        tasks: Sequence[Any],
        param: str | None,
        kwargs: dict[str, Any],
        max_parallel: int | None,
    ) -> Self:
        if max_parallel is not None and max_parallel < 1:
            raise ValueError("max_parallel must be >= 1")
        names = tuple(task_name_of(t) for t in tasks)
        self.steps.append(StepSpec(kind, names, param, kwargs, max_parallel))
        return self

    def call_next(self, task: Any, param_name: str | None = None, **kwargs: Any) -> Self:
        """Call ``task`` with the previous output (as ``param_name``, or first argument)."""
        return self._add("call", [task], param_name, kwargs, None)

    def map(
        self,
        task: Any,
        max_parallel: int | None = None,
        param_name: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Call ``task`` on each item of the previous output; the result is the list."""
        return self._add("map", [task], param_name, kwargs, max_parallel)

    def filter(
        self,
        task: Any,
        max_parallel: int | None = None,
        param_name: str | None = None,
        **kwargs: Any,
    ) -> Self:
        """Keep the items of the previous output for which ``task`` returns true."""
        return self._add("filter", [task], param_name, kwargs, max_parallel)

    def group(self, *tasks: Any, param_name: str | None = None, **kwargs: Any) -> Self:
        """Run ``tasks`` in parallel on the previous output; the result is their list."""
        if not tasks:
            raise ValueError("group() needs at least one task")
        return self._add("group", tasks, param_name, kwargs, None)

    # -- options -----------------------------------------------------------------------

    def on_error(self, mode: ErrorPolicy) -> Self:
        """``stop`` (default): fail the run; ``continue``: skip the failed step (its input
        flows on; a map keeps its successful items); ``retry``: retry each failed step or
        item (``with_retry``'s policy, or 3 attempts), then stop."""
        if mode not in _ERROR_POLICIES:
            raise ValueError(f"on_error takes one of {', '.join(_ERROR_POLICIES)}, not {mode!r}")
        self._on_error = mode
        return self

    def with_retry(
        self,
        max_attempts: int = 3,
        delay: float = 1.0,
        backoff: float = 2.0,
        *,
        jitter: bool = False,
        max_retry_time: float | None = None,
    ) -> Self:
        """Attempt each step (and each item) up to ``max_attempts`` times."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._retry = RetryPolicy(
            retries=max_attempts - 1,
            delay=delay,
            backoff=backoff,
            jitter=jitter,
            max_retry_time=max_retry_time,
        )
        return self

    def with_timeout(self, seconds: float) -> Self:
        """Fail the run (``PipelineTimeoutError``) when it takes longer than ``seconds``."""
        if seconds <= 0:
            raise ValueError("the timeout must be positive")
        self._timeout = seconds
        return self

    def with_context(self, enable: bool = True) -> Self:
        """Inject ``PipelineContext`` into task parameters annotated with it (the default)."""
        self._context = enable
        return self

    def with_tracking(self, tracking: Any) -> Self:
        """Report runs to a tracking manager (see the tracking guide)."""
        self.tracking = tracking
        return self

    def with_hooks(self, hooks: Any) -> Self:
        """Attach a hook manager that receives the run's events."""
        self.hooks = hooks
        return self

    @property
    def spec(self) -> SequenceSpec:
        """The pipeline as plain data."""
        remote = getattr(self.tracking, "remote_config", None)
        return SequenceSpec(
            tuple(self.steps),
            self._on_error,
            self._retry,
            self._timeout,
            self._context,
            remote() if callable(remote) else None,
        )

    @property
    def step_names(self) -> list[str]:
        """Unique readable names of the steps, in order (the keys of partial results)."""
        return _unique([step.name for step in self.steps])

    # -- running -----------------------------------------------------------------------

    async def kiq(self, data: Any = None) -> PipelineTask:
        """Start a run with ``data`` as the first step's input; returns its handle."""
        if not self.steps:
            raise ValueError("the pipeline has no steps: add some with call_next() or map()")
        if isinstance(self.broker, InMemoryBroker):
            for step in self.steps:
                for name in step.tasks:
                    if self.broker.find_task(name) is None:
                        raise UnknownTaskError(name)
        ensure_middleware(self.broker)
        run_id = self.pipeline_id if self._runs == 0 else uuid.uuid4().hex
        self._runs += 1
        self.pipeline_id = run_id
        handle = PipelineTask(run_id, self.broker, self.step_names)
        # Both before the first step is sent: listen for the run's end, and store the spec
        # the workers read.
        await asyncio.gather(handle.open(), save_run(self.broker, run_id, self.spec))
        handle._heard_from_start = True
        observer = resolve_observer(self.tracking, self.hooks)
        if observer is not None:
            # Steps that finish in this process report here; workers elsewhere write
            # into the storage named in the spec.
            observer.run_started(run_id, "sequential", self.step_names)
            register_observer(run_id, observer)
            follow = getattr(self.tracking, "follow_remote", None)
            if follow is not None and redis_pool_of(self.broker) is not None:
                await follow(run_id)  # listeners here hear the steps workers elsewhere run
        try:
            await start_run(self.broker, run_id, self.spec, data, time.time())
        except BaseException as exc:
            if observer is not None:
                forget_observer(run_id)
                await observer.run_finished(run_id, "FAILED", error=repr(exc))
            raise
        return handle


SequentialPipeline = Pipeline


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return result


class PipelineTask:
    """The handle of a sequential run. ``task_id`` is the run's id.

    Another process that knows only the id gets the same handle with
    ``Task(task_id, broker)``; the final result is also in the broker's result backend
    under that id, so plain taskiq ``AsyncTaskiqTask`` lookups work too.
    """

    def __init__(
        self, task_id: str, broker: AsyncBroker, step_names: Sequence[str] | None = None
    ) -> None:
        self.task_id = task_id
        self.broker = broker
        self.step_names = list(step_names or [])
        self._channel: CompletionChannel | None = None
        self._status: dict[str, Any] = {}
        self._result: TaskiqResult[Any] | None = None
        # Listening since before the run's first step: its end cannot have been missed.
        self._heard_from_start = False

    @property
    def pipeline_id(self) -> str:
        """The run's id (the same as ``task_id``)."""
        return self.task_id

    async def open(self) -> None:
        """Start listening for the run's end."""
        if self._channel is None:
            self._channel = channel_for(self.broker, self.task_id)
            await self._channel.start()

    async def get_status(self) -> dict[str, Any]:
        """The run's record: ``phase`` (Running, Succeeded, Failed), ``step``,
        ``step_name``, ``failed_step``, ``error`` and ``outputs`` by step index."""
        store = store_for(self.broker)
        if not self.step_names:  # a handle built from the id alone: name steps from the spec
            raw = await store.load_spec(self.task_id)
            if raw is not None:
                self.step_names = _unique([s.name for s in SequenceSpec.from_json(raw).steps])
        self._status = await store.status(self.task_id)
        return dict(self._status)

    @property
    def is_finished(self) -> bool:
        """Whether the run ended, as of the last ``get_status``/``wait_result``."""
        return self._status.get("phase") in FINISHED

    @property
    def is_failed(self) -> bool:
        """Whether the run failed, as of the last ``get_status``/``wait_result``."""
        return self._status.get("phase") == "Failed"

    @property
    def failed_step(self) -> str | None:
        """The name of the step that failed."""
        value = self._status.get("failed_step")
        return None if value is None else str(value)

    @property
    def partial_results(self) -> dict[str, Any]:
        """Outputs of the steps that finished, by step name."""
        outputs: dict[int, Any] = self._status.get("outputs", {})
        names = self.step_names
        return {
            (names[i] if i < len(names) else str(i)): value for i, value in sorted(outputs.items())
        }

    async def wait_result(
        self,
        timeout: float | None = None,
        raise_on_error: bool = True,
        check_interval: float | None = None,
    ) -> TaskiqResult[Any]:
        """Wait for the run to end; ``result.return_value`` is the last step's output.

        A failed run raises ``PipelineError`` (``PipelineTimeoutError`` for
        ``with_timeout``), carrying ``partial_results`` and the failed step, unless
        ``raise_on_error=False``: then the result has ``is_err`` set. ``timeout`` raises
        ``asyncio.TimeoutError``. ``check_interval`` is accepted for taskiq compatibility
        and ignored: the end of the run is pushed, not polled.
        """
        if self._result is None:
            if timeout is not None and timeout > 0:
                async with asyncio.timeout(timeout):
                    await self._wait()
            else:
                await self._wait()
        assert self._result is not None
        if self._result.is_err and raise_on_error:
            raise self._error()
        return self._result

    async def _wait(self) -> None:
        await self.open()
        assert self._channel is not None
        try:
            check_status = not self._heard_from_start
            while True:
                if check_status:
                    status = await self.get_status()
                    if self.is_finished:
                        self._result = await self._final(status)
                        return
                check_status = True
                completions: list[Completion] = await self._channel.get(
                    _STATUS_RECHECK_SECONDS, [self.task_id]
                )
                for completion in completions:
                    if completion.task_id == self.task_id:
                        done, self._channel = self._channel, None
                        await asyncio.gather(self.get_status(), done.close())
                        self._result = completion.result
                        return
        finally:
            left, self._channel = self._channel, None
            self._heard_from_start = False  # a later wait listens anew: check first
            if left is not None:
                await left.close()

    async def _final(self, status: dict[str, Any]) -> TaskiqResult[Any]:
        if status.get("phase") == "Succeeded":
            backend = self.broker.result_backend
            try:
                return await backend.get_result(self.task_id)
            except Exception:  # evicted or never stored: rebuild it from the record
                outputs: dict[int, Any] = status.get("outputs", {})
                last = outputs[max(outputs)] if outputs else None
                return TaskiqResult(is_err=False, return_value=last, execution_time=0.0)
        return TaskiqResult(
            is_err=True,
            return_value=None,
            error=RuntimeError(str(status.get("error"))),
            execution_time=0.0,
        )

    def _error(self) -> PipelineError:
        status = self._status
        message = f"pipeline {self.task_id} failed at step {self.failed_step!r}: " + str(
            status.get("error")
        )
        error_class = PipelineTimeoutError if status.get("timed_out") else PipelineError
        failed = self.failed_step
        return error_class(
            message,
            failed_node=failed,
            partial_results=self.partial_results,
            errors={failed: str(status.get("error"))} if failed else {},
        )


def Task(task_id: str, broker: AsyncBroker) -> PipelineTask:
    """The handle of a run known only by its id (for example in another process)."""
    return PipelineTask(task_id, broker)
