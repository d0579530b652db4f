"""Sending a sequential run's next step in the same round trip that records the last one.

On a taskiq-redis stream broker a finished step costs the worker one script
(``RedisSequenceStore.advance``): record its output and the run's new current step, append
the next step's message to the stream, and acknowledge the finished step's own message
(when the broker says which entry it was: ``FlowRedisStreamBroker.delivery``). Separately
they are three round trips, and a worker dying between them would leave the next step sent
but the finished one pending, to be run (and its successor sent) a second time.

The message is the one ``kiq()`` would send: built by taskiq's kicker, passed through the
middlewares' ``pre_send`` and ``post_send``, encoded by the broker's formatter.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from taskiq import AsyncBroker, TaskiqMiddleware
from taskiq.kicker import AsyncKicker
from taskiq.utils import maybe_awaitable

from taskiq_flow.chains.store import RedisSequenceStore, SequenceStore, StreamAck, StreamSend

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taskiq_flow.brokers import Delivery

__all__ = ["advance_and_send", "delivery_of"]


def delivery_of(broker: AsyncBroker, task_id: str) -> Delivery | None:
    """The stream entry of the message being handled, when the broker keeps track."""
    find = getattr(broker, "delivery", None)
    return find(task_id) if callable(find) else None


@functools.cache
def _sends_by_xadd(broker_type: type[AsyncBroker]) -> bool:
    """Whether this broker class's ``kick`` is a plain XADD to its stream (taskiq-redis's
    own, or ours). Asked for every step, answered once per class."""
    try:
        from taskiq_redis import RedisStreamBroker

        from taskiq_flow.brokers import FlowRedisStreamBroker
    except ImportError:  # no redis extra: no stream broker either
        return False
    return issubclass(broker_type, RedisStreamBroker) and broker_type.kick in (
        RedisStreamBroker.kick,
        FlowRedisStreamBroker.kick,
    )


async def advance_and_send(
    broker: AsyncBroker,
    store: SequenceStore,
    run_id: str,
    fields: Mapping[str, Any],
    outputs: Mapping[int, Any] | None,
    kicker: AsyncKicker[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    delivery: Delivery | None,
) -> bool | None:
    """``store.advance`` and send the step ``kicker`` describes, in one atomic script.

    Returns whether the run was still going (the step was sent only then), or ``None``
    when this broker and store cannot do it in one script: nothing was done, the caller
    advances and kicks the usual way.
    """
    if not isinstance(store, RedisSequenceStore) or not _sends_by_xadd(type(broker)):
        return None
    message = kicker._prepare_message(*args, **kwargs)  # what kiq() would send
    for middleware in broker.middlewares:
        if type(middleware).pre_send is not TaskiqMiddleware.pre_send:
            message = await maybe_awaitable(middleware.pre_send(message))
    send = StreamSend(
        stream=message.labels.get("queue_name") or broker.queue_name,  # type: ignore[attr-defined]
        data=broker.formatter.dumps(message).message,
        maxlen=broker.maxlen,  # type: ignore[attr-defined]
        approximate=broker.approximate,  # type: ignore[attr-defined]
    )
    ack = (
        None
        if delivery is None or delivery.acked
        else StreamAck(delivery.stream, delivery.group, delivery.message_id)
    )
    running = await store.advance(run_id, fields, outputs, send=send, ack=ack)
    if delivery is not None:
        delivery.acked = True
    if running:
        for middleware in reversed(broker.middlewares):
            if type(middleware).post_send is not TaskiqMiddleware.post_send:
                await maybe_awaitable(middleware.post_send(message))
    return running
