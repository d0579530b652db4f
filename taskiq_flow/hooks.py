"""``HookManager`` (callbacks by event name) and ``TrackingEventBroadcaster`` (live
status events fanned out to subscribers, e.g. dashboard WebSockets).

>>> hook_manager = HookManager()
>>> broadcaster = TrackingEventBroadcaster(tracking, hook_manager)
>>> tracking.add_listener(broadcaster.on_status_update)
>>> pipeline = Pipeline(broker).with_hooks(hook_manager).with_tracking(tracking)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

from taskiq_flow.tracking.manager import PipelineTrackingManager, TrackingEvent
from taskiq_flow.tracking.models import PipelineStatus
from taskiq_flow.tracking.observer import RunObserver
from taskiq_flow.tracking.storage import InMemoryPipelineStorage

__all__ = [
    "HOOK_EVENTS",
    "EventSubscription",
    "HookManager",
    "TrackingEventBroadcaster",
    "resolve_observer",
]

logger = logging.getLogger("taskiq_flow.hooks")

HOOK_EVENTS = (
    "pipeline_start",
    "step_start",
    "step_complete",
    "step_error",
    "pipeline_complete",
    "pipeline_error",
    "status_update",
)

Hook = Callable[..., Any]


class HookManager:
    """Callbacks by event name, sync or async; a hook that raises is logged.

    As a tracking listener it turns each tracking call into its event: ``step_complete``
    hooks get ``(pipeline_id, step_name, result)``, ``pipeline_complete`` hooks
    ``(pipeline_id, status)``, and so on (the listener methods' arguments).
    """

    def __init__(self) -> None:
        self._hooks: dict[str, list[Hook]] = defaultdict(list)

    def register(self, event: str, hook: Hook) -> None:
        """Call ``hook`` on ``event`` (one of ``HOOK_EVENTS``)."""
        if event not in HOOK_EVENTS:
            raise ValueError(f"unknown hook event {event!r}; one of {', '.join(HOOK_EVENTS)}")
        self._hooks[event].append(hook)

    def on(self, event: str) -> Callable[[Hook], Hook]:
        """Decorator form of ``register``."""

        def decorate(hook: Hook) -> Hook:
            self.register(event, hook)
            return hook

        return decorate

    def unregister(self, event: str, hook: Hook) -> None:
        """Stop calling ``hook`` on ``event``."""
        self._hooks[event] = [h for h in self._hooks[event] if h is not hook]

    def hooks(self, event: str) -> list[Hook]:
        """The hooks of ``event``."""
        return list(self._hooks.get(event, ()))

    async def emit(self, event: str, *args: Any) -> None:
        """Call every hook of ``event`` with ``args``, in order."""
        for hook in list(self._hooks.get(event, ())):
            try:
                outcome = hook(*args)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("hook %r failed on %s", hook, event)

    # -- tracking listener ---------------------------------------------------------------

    async def on_pipeline_start(self, pipeline_id: str) -> None:
        await self.emit("pipeline_start", pipeline_id)

    async def on_step_start(self, pipeline_id: str, step_name: str) -> None:
        await self.emit("step_start", pipeline_id, step_name)

    async def on_step_complete(self, pipeline_id: str, step_name: str, result: Any) -> None:
        await self.emit("step_complete", pipeline_id, step_name, result)

    async def on_step_error(self, pipeline_id: str, step_name: str, error: str) -> None:
        await self.emit("step_error", pipeline_id, step_name, error)

    async def on_pipeline_complete(self, pipeline_id: str, status: PipelineStatus) -> None:
        await self.emit("pipeline_complete", pipeline_id, status)

    async def on_pipeline_error(self, pipeline_id: str, error: str) -> None:
        await self.emit("pipeline_error", pipeline_id, error)


class EventSubscription:
    """Live events for one subscriber: ``async for event in subscription``.

    Holds at most ``maxsize`` undelivered events; a subscriber that falls behind loses
    the oldest ones rather than holding up the pipelines.
    """

    def __init__(
        self, broadcaster: TrackingEventBroadcaster, pipeline_id: str | None, maxsize: int
    ) -> None:
        self.broadcaster = broadcaster
        self.pipeline_id = pipeline_id
        self.queue: asyncio.Queue[TrackingEvent] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: TrackingEvent) -> None:
        if self.pipeline_id is not None and event.get("pipeline_id") != self.pipeline_id:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> TrackingEvent:
        """The next event (``TimeoutError`` after ``timeout`` seconds)."""
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self.broadcaster.unsubscribe(self)

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[TrackingEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[TrackingEvent]:
        while True:
            yield await self.queue.get()


class TrackingEventBroadcaster:
    """Fans tracking events out to subscribers (WebSockets) and to a ``HookManager``.

    Register it with ``tracking.add_listener(broadcaster.on_status_update)``.
    """

    def __init__(
        self, tracking: PipelineTrackingManager, hook_manager: HookManager | None = None
    ) -> None:
        self.tracking = tracking
        self.hook_manager = hook_manager
        self._subscribers: list[EventSubscription] = []

    def subscribe(self, pipeline_id: str | None = None, maxsize: int = 1000) -> EventSubscription:
        """Receive every event (or only ``pipeline_id``'s) from now on."""
        subscription = EventSubscription(self, pipeline_id, maxsize)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: EventSubscription) -> None:
        """Stop a subscription."""
        self._subscribers = [s for s in self._subscribers if s is not subscription]

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    async def on_status_update(self, event: TrackingEvent) -> None:
        """The tracking listener: pass ``event`` on."""
        self.publish(event)
        if self.hook_manager is not None:
            await self.hook_manager.emit("status_update", event)

    def publish(self, event: TrackingEvent) -> None:
        """Hand ``event`` to every matching subscriber."""
        for subscription in list(self._subscribers):
            subscription.offer(event)


def resolve_observer(tracking: Any, hooks: HookManager | None) -> RunObserver | None:
    """The observer a pipeline reports to: its tracking manager, with its hook manager
    attached as a listener (a private in-memory manager when only hooks are set)."""
    if hooks is None:
        if tracking is None:  # the common case, without a (slow) protocol check
            return None
        return tracking if isinstance(tracking, RunObserver) else None
    if tracking is None:
        tracking = getattr(hooks, "_tracking", None)
        if tracking is None:
            tracking = PipelineTrackingManager(InMemoryPipelineStorage())
            hooks._tracking = tracking  # type: ignore[attr-defined]
    if isinstance(tracking, PipelineTrackingManager) and all(
        listener is not hooks for listener in tracking.listeners
    ):
        tracking.add_listener(hooks)
    return tracking if isinstance(tracking, RunObserver) else None
