"""FlowRedisStreamBroker tells which stream entry a message is, and acknowledges it once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from taskiq import AckableMessage, TaskiqMessage

from taskiq_flow.brokers import FlowRedisStreamBroker


@pytest.fixture
async def broker(redis_url: str) -> AsyncIterator[FlowRedisStreamBroker]:
    broker = FlowRedisStreamBroker(redis_url, queue_name="delivery-q", xread_block=100)
    await broker.startup()
    try:
        yield broker
    finally:
        await broker.shutdown()


async def _send_and_receive(broker: FlowRedisStreamBroker, task_id: str) -> AckableMessage:
    message = TaskiqMessage(task_id=task_id, task_name="t", labels={}, args=[1], kwargs={})
    await broker.kick(broker.formatter.dumps(message))
    return await anext(aiter(broker.listen()))


async def _pending(broker: FlowRedisStreamBroker) -> int:
    summary = await broker._client.xpending("delivery-q", broker.consumer_group_name)
    return int(summary["pending"])


async def _xacks_served(broker: FlowRedisStreamBroker) -> int:
    stats = await broker._client.info("commandstats")
    return int(stats.get("cmdstat_xack", {}).get("calls", 0))


async def _ack(message: AckableMessage) -> None:
    acknowledged = message.ack()
    if acknowledged is not None:
        await acknowledged


async def test_a_received_message_is_known_by_its_task_id_until_acknowledged(
    broker: FlowRedisStreamBroker,
) -> None:
    message = await _send_and_receive(broker, "run.3.1")

    delivery = broker.delivery("run.3.1")
    assert delivery is not None
    assert (delivery.stream, delivery.group) == ("delivery-q", broker.consumer_group_name)
    assert await _pending(broker) == 1

    await _ack(message)

    assert await _pending(broker) == 0
    assert broker.delivery("run.3.1") is None


async def test_a_message_acknowledged_elsewhere_costs_no_second_acknowledgement(
    broker: FlowRedisStreamBroker,
) -> None:
    message = await _send_and_receive(broker, "run.4.1")
    delivery = broker.delivery("run.4.1")
    assert delivery is not None
    # What the sequential driver's script does: XACK, then mark the delivery.
    await broker._client.xack(delivery.stream, delivery.group, delivery.message_id)
    delivery.acked = True
    served = await _xacks_served(broker)

    await _ack(message)

    assert await _xacks_served(broker) == served
    assert broker.delivery("run.4.1") is None
