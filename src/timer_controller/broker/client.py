"""Publishing with confirms and consuming with manual acks, over one connection.

Publishes go out on a channel of their own with publisher confirms, as
persistent messages. A message with an expiration waits for its confirm as
long as it may live in the queue: publishing it again after a slow confirm
would queue it twice, and a receiver would see a repeat with nothing crashed.
Others wait at most PUBLISH_TIMEOUT_S. A lost connection fails the wait at once.
Consumers get ``AmqpDelivery`` objects and ack, requeue or dead-letter them
explicitly. Every aio-pika error becomes ``BrokerError`` here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError

from timer_controller.broker.acks import ChannelAcks
from timer_controller.broker.topology import PERSISTENT, Topology, declare, declare_all
from timer_controller.errors import BrokerError

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0
ACK_TIMEOUT_S = 10.0
_BROKER_ERRORS = (*CONNECTION_EXCEPTIONS, TimeoutError, DeliveryError, PublishError)


class AmqpDelivery:
    """One message received from a queue; settle it exactly once.

    Acks go through the channel's ``ChannelAcks``, which folds acks asked
    for together into one frame where it safely can.
    """

    def __init__(self, message: AbstractIncomingMessage, acks: ChannelAcks) -> None:
        self._message = message
        self._acks = acks
        self._tag = message.delivery_tag or 0
        self.body = message.body
        self.redelivered = bool(message.redelivered)
        acks.received(self._tag)

    async def ack(self) -> None:
        await self._settle("ack", self._acks.ack(self._tag))

    async def requeue(self) -> None:
        try:
            await self._settle("requeue", self._message.nack(requeue=True))
        finally:
            self._acks.settled_elsewhere(self._tag)

    async def dead_letter(self) -> None:
        """Reject without requeue: the queue's dead-letter settings route it to ``.dead``."""
        try:
            await self._settle("dead-letter", self._message.reject(requeue=False))
        finally:
            self._acks.settled_elsewhere(self._tag)

    async def _settle(self, what: str, action: Awaitable[None]) -> None:
        # A channel lost since the delivery cannot settle it; the broker has
        # already put the message back, so this is logged, not raised.
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await action
        except _BROKER_ERRORS as exc:
            log.warning("could not %s a message (%s); the broker redelivers it", what, exc)


Handler = Callable[[AmqpDelivery], Awaitable[None]]


class BrokerClient:
    def __init__(self, connection: AbstractRobustConnection, topology: Topology) -> None:
        self._connection = connection
        self.topology = topology
        self._publish_channel: AbstractChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []

    @property
    def connected(self) -> bool:
        """Connected now (false while the robust connection is reconnecting)."""
        return not self._connection.is_closed and self._connection.connected.is_set()

    async def open(self) -> None:
        """The publishing channel, and every queue declared."""
        channel = self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            await channel.initialize(timeout=PUBLISH_TIMEOUT_S)
            await declare_all(channel, self.topology)
        except _BROKER_ERRORS as exc:
            # e.g. a queue of that name exists with other arguments (not a quorum queue).
            raise BrokerError(
                f"cannot declare the {self.topology.prefix}.* queues: {_reason(exc)}"
            ) from None
        self._publish_channel = channel

    async def publish(
        self, queue: str, body: bytes, *, message_id: str, expiration_s: float | None = None
    ) -> None:
        """Return once the broker confirmed ``body`` as a persistent message on ``queue``.

        Waits up to ``expiration_s`` (the message's life in the queue) when
        given, else PUBLISH_TIMEOUT_S.
        """
        if self._publish_channel is None:
            raise BrokerError("the broker client is not open")
        message = aio_pika.Message(
            body,
            delivery_mode=PERSISTENT,
            content_type="application/json",
            message_id=message_id,
            expiration=expiration_s,
        )
        wait_s = max(expiration_s or 0.0, PUBLISH_TIMEOUT_S)
        try:
            async with asyncio.timeout(wait_s):
                await self._publish_channel.default_exchange.publish(
                    message, routing_key=queue, timeout=wait_s
                )
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"publish to {queue} not confirmed: {_reason(exc, wait_s)}") from None

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> None:
        """Deliver ``queue``'s messages to ``handler``, at most ``prefetch`` unsettled."""
        channel = self._connection.channel()
        try:
            await channel.initialize(timeout=PUBLISH_TIMEOUT_S)
            await channel.set_qos(prefetch_count=prefetch, timeout=PUBLISH_TIMEOUT_S)
            declared = await declare(channel, self.topology, queue)
            acks: ChannelAcks | None = None

            async def on_message(message: AbstractIncomingMessage) -> None:
                nonlocal acks
                if acks is None or acks.channel is not message.channel:
                    # Delivery tags start again on the channel a reconnect opens.
                    acks = ChannelAcks(message.channel)
                await handler(AmqpDelivery(message, acks))

            tag = await declared.consume(on_message, no_ack=False, timeout=PUBLISH_TIMEOUT_S)
        except _BROKER_ERRORS as exc:
            raise BrokerError(f"cannot consume {queue}: {_reason(exc)}") from None
        self._consumers.append((declared, tag))

    async def stop_consuming(self) -> None:
        """No new deliveries; those already received stay ours to settle."""
        consumers, self._consumers = self._consumers, []
        for queue, tag in consumers:
            try:
                await queue.cancel(tag, timeout=ACK_TIMEOUT_S)
            except _BROKER_ERRORS as exc:
                log.warning("could not cancel the consumer of %s: %s", queue.name, _reason(exc))

    async def close(self) -> None:
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                await self._connection.close()
        except _BROKER_ERRORS as exc:
            log.warning("closing the broker connection: %s", _reason(exc))


def _reason(exc: BaseException, wait_s: float = PUBLISH_TIMEOUT_S) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {wait_s:g}s"
    return (str(exc).strip() or type(exc).__name__)[:200]
