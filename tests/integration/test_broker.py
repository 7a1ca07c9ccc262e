"""The broker room against the local RabbitMQ: topology, confirms, dead-lettering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import urlsplit

import aio_pika
import pytest

from tests.support.broker import AMQP_URL, TestBroker
from tests.support.tcp_proxy import TcpProxy
from timer_controller.broker import client as client_module
from timer_controller.broker.client import AmqpDelivery, BrokerClient
from timer_controller.broker.connection import connect
from timer_controller.broker.topology import DELIVERY_LIMIT
from timer_controller.errors import BrokerError


def with_client(
    amqp: TestBroker, work: Callable[[BrokerClient], Awaitable[None]], *, url: str = AMQP_URL
) -> None:
    async def run() -> None:
        connection = await connect(url, shown_as="test", tries=1, wait_s=0, name="test")
        client = BrokerClient(connection, amqp.topology)
        try:
            await client.open()
            async with asyncio.timeout(60):
                await work(client)
        finally:
            await client.close()

    asyncio.run(run())


def test_queues_are_durable_quorum_queues_named_from_the_prefix(amqp: TestBroker) -> None:
    async def check() -> None:
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for name in amqp.topology.names:
                # Declaring again with other arguments would fail: the
                # passive declare proves the queue exists, the typed one its type.
                await channel.declare_queue(name, passive=True)
            assert amqp.topology.names == (
                f"{amqp.prefix}.deliveries",
                f"{amqp.prefix}.outcomes",
                f"{amqp.prefix}.dead",
            )
            try:
                await channel.declare_queue(
                    amqp.topology.deliveries, durable=True, arguments={"x-queue-type": "classic"}
                )
                raise AssertionError("redeclared a quorum queue as classic")
            except aio_pika.exceptions.ChannelPreconditionFailed:
                pass

    asyncio.run(check())


def test_a_confirmed_publish_is_in_the_queue(amqp: TestBroker) -> None:
    async def work(client: BrokerClient) -> None:
        await client.publish(amqp.topology.deliveries, b"one", message_id="1.1")
        await client.publish(amqp.topology.deliveries, b"two", message_id="2.1")

    with_client(amqp, work)

    assert amqp.take(amqp.topology.deliveries) == [b"one", b"two"]


def test_a_rejected_message_goes_to_the_dead_letter_queue(amqp: TestBroker) -> None:
    amqp.publish(amqp.topology.deliveries, b"poison")

    async def work(client: BrokerClient) -> None:
        done = asyncio.Event()

        async def handle(delivery: AmqpDelivery) -> None:
            await delivery.dead_letter()
            done.set()

        await client.consume(amqp.topology.deliveries, handle, prefetch=1)
        await done.wait()

    with_client(amqp, work)

    amqp.wait_count(amqp.topology.dead, 1)
    assert amqp.take(amqp.topology.dead) == [b"poison"]
    assert amqp.count(amqp.topology.deliveries) == 0


def test_redelivery_is_bounded_by_the_delivery_limit(amqp: TestBroker) -> None:
    amqp.publish(amqp.topology.deliveries, b"crashes every worker")
    seen: list[bool] = []

    async def work(client: BrokerClient) -> None:
        async def handle(delivery: AmqpDelivery) -> None:
            seen.append(delivery.redelivered)
            await delivery.requeue()

        await client.consume(amqp.topology.deliveries, handle, prefetch=1)
        # The helper runs its own event loop, so on a thread of its own.
        await asyncio.to_thread(amqp.wait_count, amqp.topology.dead, 1)

    with_client(amqp, work)
    # The first delivery, then DELIVERY_LIMIT redeliveries, then the dead-letter queue.
    assert len(seen) == DELIVERY_LIMIT + 1
    assert seen[0] is False
    assert all(seen[1:])


def test_an_expired_message_is_dead_lettered_unfired(amqp: TestBroker) -> None:
    async def work(client: BrokerClient) -> None:
        await client.publish(
            amqp.topology.deliveries, b"too late", message_id="1.1", expiration_s=0.05
        )

    with_client(amqp, work)

    amqp.wait_count(amqp.topology.dead, 1, timeout_s=15)
    assert amqp.count(amqp.topology.deliveries) == 0


def _through_proxy(
    amqp: TestBroker, proxy: TcpProxy, work: Callable[[BrokerClient], Awaitable[None]]
) -> None:
    async def then_thaw(client: BrokerClient) -> None:
        try:
            await work(client)
        finally:
            proxy.thaw()  # before the client closes: a frozen proxy would hold the close

    url = AMQP_URL.replace(f":{urlsplit(AMQP_URL).port}/", f":{proxy.port}/")
    with_client(amqp, then_thaw, url=url)


@pytest.fixture
def broker_proxy() -> Iterator[TcpProxy]:
    target = urlsplit(AMQP_URL)
    with TcpProxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        yield proxy


def test_a_slow_confirm_is_waited_for_not_published_again(
    amqp: TestBroker, broker_proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def work(client: BrokerClient) -> None:
        monkeypatch.setattr(client_module, "PUBLISH_TIMEOUT_S", 0.5)  # once the client is open
        broker_proxy.freeze()  # the publish and its confirm are held: a broker that is slow
        publish = asyncio.ensure_future(
            client.publish(amqp.topology.deliveries, b"once", message_id="1.1", expiration_s=30)
        )
        done, _ = await asyncio.wait({publish}, timeout=4 * client_module.PUBLISH_TIMEOUT_S)
        assert not done, "gave up on the confirm while the message may still be queued"
        broker_proxy.thaw()
        await publish

    _through_proxy(amqp, broker_proxy, work)
    assert amqp.take(amqp.topology.deliveries) == [b"once"]


def test_a_publish_without_expiration_gives_up_after_the_publish_timeout(
    amqp: TestBroker, broker_proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def work(client: BrokerClient) -> None:
        monkeypatch.setattr(client_module, "PUBLISH_TIMEOUT_S", 0.5)  # once the client is open
        broker_proxy.freeze()
        with pytest.raises(BrokerError, match=r"no answer within 0\.5s"):
            await client.publish(amqp.topology.outcomes, b"outcome", message_id="o.1")

    _through_proxy(amqp, broker_proxy, work)
