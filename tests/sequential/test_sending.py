"""A step's successor is sent, and the step acknowledged, in the script that records it."""

from __future__ import annotations

from typing import Any

from taskiq import InMemoryBroker
from taskiq.kicker import AsyncKicker

from taskiq_flow.brokers import FlowRedisStreamBroker
from taskiq_flow.chains.sending import advance_and_send
from taskiq_flow.chains.store import store_for


def _kicker(broker: Any, task_id: str) -> AsyncKicker[Any, Any]:
    kicker: AsyncKicker[Any, Any] = AsyncKicker(task_name="t", broker=broker, labels={"l": 1})
    return kicker.with_task_id(task_id)


async def test_the_next_step_is_appended_and_the_finished_one_acknowledged(
    redis_url: str,
) -> None:
    broker = FlowRedisStreamBroker(redis_url, queue_name="send-q", xread_block=100)
    await broker.startup()
    try:
        store = store_for(broker)
        await store.save_spec("run-n", "{}")
        await broker.kick(broker.formatter.dumps(_kicker(broker, "run-n.0.1")._prepare_message(1)))
        await anext(aiter(broker.listen()))
        delivery = broker.delivery("run-n.0.1")
        assert delivery is not None

        sent = await advance_and_send(
            broker, store, "run-n", {"step": 1}, {0: 2}, _kicker(broker, "run-n.1.1"), (2,), {},
            delivery,
        )  # fmt: skip

        assert sent is True
        assert delivery.acked
        pending = await broker._client.xpending("send-q", broker.consumer_group_name)
        assert pending["pending"] == 0
        [(_, fields)] = await broker._client.xrevrange("send-q", count=1)
        # The very bytes kiq() would have sent.
        expected = _kicker(broker, "run-n.1.1")._prepare_message(2)
        assert fields[b"data"] == broker.formatter.dumps(expected).message
        assert (await store.status("run-n"))["outputs"] == {0: 2}
    finally:
        await broker.shutdown()


async def test_a_broker_without_a_stream_sends_the_usual_way() -> None:
    broker = InMemoryBroker()
    store = store_for(broker)

    sent = await advance_and_send(
        broker, store, "run-m", {"step": 1}, None, _kicker(broker, "run-m.1.1"), (), {}, None
    )

    assert sent is None  # nothing done: the caller advances and kicks
    assert await store.status("run-m") == {}
