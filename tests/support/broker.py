"""The local RabbitMQ for the tests: a unique AMQP_PREFIX per test, its queues deleted after.

TEST_AMQP_URL overrides the broker (default: guest on 127.0.0.1:5672).
Helpers here are synchronous, each a short ``asyncio.run`` over aio-pika, so
tests read top to bottom like the database ones.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel

from tests.support.waiting import wait_until
from timer_controller.broker.topology import Topology, declare_all
from timer_controller.domain.messages import TaskOutcome, decode_outcomes

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
T = TypeVar("T")
OP_TIMEOUT_S = 20.0


def _on_channel(work: Callable[[AbstractChannel], Awaitable[T]]) -> T:
    async def run() -> T:
        async with asyncio.timeout(OP_TIMEOUT_S):
            connection = await aio_pika.connect(AMQP_URL, timeout=OP_TIMEOUT_S)
            async with connection:
                channel = await connection.channel()
                return await work(channel)

    return asyncio.run(run())


@dataclass
class TestBroker:
    """Queues of one test, named from its own prefix."""

    __test__ = False  # not a pytest class
    prefix: str

    @property
    def topology(self) -> Topology:
        return Topology(self.prefix)

    def env(self, **extra: str) -> dict[str, str]:
        return {"AMQP_URL": AMQP_URL, "AMQP_PREFIX": self.prefix, **extra}

    def declare(self) -> None:
        async def work(channel: AbstractChannel) -> None:
            await declare_all(channel, self.topology)

        _on_channel(work)

    def declare_classic(self, queue: str) -> None:
        """A classic queue where a quorum queue is expected: a misconfigured broker."""

        async def work(channel: AbstractChannel) -> None:
            await channel.declare_queue(queue, durable=True)

        _on_channel(work)

    def publish(self, queue: str, body: bytes) -> None:
        async def work(channel: AbstractChannel) -> None:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=queue)

        _on_channel(work)

    def count(self, queue: str) -> int:
        """Messages ready in ``queue`` (not those delivered and unacked)."""

        async def work(channel: AbstractChannel) -> int:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.message_count or 0)

        return _on_channel(work)

    def take(self, queue: str, *, limit: int = 100_000) -> list[bytes]:
        """Get and ack every ready message of ``queue``."""

        async def work(channel: AbstractChannel) -> list[bytes]:
            declared = await channel.declare_queue(queue, passive=True)
            bodies: list[bytes] = []
            while len(bodies) < limit:
                message = await declared.get(fail=False, timeout=OP_TIMEOUT_S)
                if message is None:
                    return bodies
                bodies.append(message.body)
                await message.ack()
            return bodies

        return _on_channel(work)

    def wait_count(self, queue: str, expected: int, *, timeout_s: float = 30) -> None:
        wait_until(
            lambda: self.count(queue) == expected,
            timeout_s=timeout_s,
            what=f"{expected} messages in {queue}",
            interval_s=0.2,
        )

    def take_outcomes(self, expected: int, *, timeout_s: float = 30) -> list[TaskOutcome]:
        """Take outcome messages until they hold ``expected`` outcomes (workers batch them)."""
        taken: list[TaskOutcome] = []

        def enough() -> bool:
            for body in self.take(self.topology.outcomes):
                taken.extend(decode_outcomes(body))
            return len(taken) >= expected

        wait_until(enough, timeout_s=timeout_s, what=f"{expected} outcomes", interval_s=0.2)
        return taken

    def delete(self) -> None:
        async def work(channel: AbstractChannel) -> None:
            for name in self.topology.names:
                # Deleting a queue that was never declared is not an error.
                await channel.queue_delete(name)

        _on_channel(work)


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def broker_answers() -> bool:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "await_startup", "--timeout", "5"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0
