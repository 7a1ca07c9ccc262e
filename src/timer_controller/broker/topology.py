"""Queue names and arguments, derived from AMQP_PREFIX.

Every queue is a durable quorum queue: replicated across a RabbitMQ cluster
and kept through a broker restart. Queues are declared, with the same
arguments, by every process that uses them, so whichever starts first
creates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

#: Deliveries of one message before the broker dead-letters it instead: a
#: message that keeps killing its workers must not go round for ever.
DELIVERY_LIMIT = 10
DECLARE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str

    @property
    def deliveries(self) -> str:
        """Tasks handed off by controllers, consumed by workers."""
        return f"{self.prefix}.deliveries"

    @property
    def outcomes(self) -> str:
        """Outcomes published by workers, recorded by controllers."""
        return f"{self.prefix}.outcomes"

    @property
    def dead(self) -> str:
        """Poison, expired and too-often-delivered messages, for an operator to read."""
        return f"{self.prefix}.dead"

    @property
    def names(self) -> tuple[str, str, str]:
        return (self.deliveries, self.outcomes, self.dead)

    def arguments(self, name: str) -> dict[str, Any]:
        args: dict[str, Any] = {"x-queue-type": "quorum"}
        if name != self.dead:
            args |= {
                "x-delivery-limit": DELIVERY_LIMIT,
                # The default exchange routes by queue name.
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.dead,
            }
        return args


async def declare(channel: AbstractChannel, topology: Topology, name: str) -> AbstractQueue:
    return await channel.declare_queue(
        name, durable=True, arguments=topology.arguments(name), timeout=DECLARE_TIMEOUT_S
    )


async def declare_all(channel: AbstractChannel, topology: Topology) -> None:
    for name in (topology.dead, topology.deliveries, topology.outcomes):
        await declare(channel, topology, name)


PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
