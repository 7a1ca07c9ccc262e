"""The worker loop: fire the tasks the broker hands out, report, then ack.

Each delivery is a hand-off from a controller. It fires at once (the
controller published it at its due time) through the same dispatcher as
direct mode, its outcome is published and confirmed (in a batch with the
outcomes finished near it, ``runtime.outbox``), and only then is the
delivery acked: a worker that dies at any point leaves the delivery unacked
and the broker gives it to another worker. A message that is not a valid
hand-off is dead-lettered and logged, never retried.

On stop: no new deliveries; those that arrive meanwhile go back to the
queue; requests in flight finish within the grace period, and the ones
still running after it are cancelled and requeued too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from timer_controller.domain.messages import MalformedMessage, decode_handoff
from timer_controller.domain.task import ClaimedTask, Outcome
from timer_controller.runtime.outbox import Outbox, OutboxConfig

log = logging.getLogger(__name__)


class Delivery(Protocol):
    """A received message; settled exactly once."""

    body: bytes

    async def ack(self) -> None: ...
    async def requeue(self) -> None: ...
    async def dead_letter(self) -> None: ...


class WorkerBroker(Protocol):
    async def consume_deliveries(
        self, handler: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> None: ...
    async def stop_consuming(self) -> None: ...
    async def publish_outcome(self, body: bytes, *, message_id: str) -> None:
        """Return once confirmed; raise BrokerError otherwise."""


class Firer(Protocol):
    async def fire(self, task: ClaimedTask) -> Outcome:
        """One attempt; never raises (except cancellation)."""


class WorkerMeter(Protocol):
    def started(self) -> None: ...
    def finished(self, outcome: Outcome) -> None: ...
    def poisoned(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int
    shutdown_grace_s: float
    #: Tries to get one outcome confirmed before the delivery is requeued.
    publish_tries: int
    publish_wait_s: float
    #: Outcomes per message, and how long the first waits for company.
    outcome_batch: int = 100
    outcome_linger_s: float = 0.005


class Worker:
    def __init__(
        self, broker: WorkerBroker, firer: Firer, config: WorkerConfig, *, meter: WorkerMeter
    ) -> None:
        self._broker = broker
        self._firer = firer
        self._config = config
        self._meter = meter
        self._outbox = Outbox(
            self._publish_outcome,
            OutboxConfig(
                max_batch=config.outcome_batch,
                linger_s=config.outcome_linger_s,
                publish_tries=config.publish_tries,
                publish_wait_s=config.publish_wait_s,
            ),
        )
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = False
        #: Monotonic time of the last delivery or idle check, for /healthz.
        self.last_tick = time.monotonic()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def run(self, stop: asyncio.Event) -> int:
        """Consume until ``stop`` is set, then stop gracefully; the exit code."""
        await self._broker.consume_deliveries(self._receive, prefetch=self._config.concurrency)
        while not stop.is_set():
            self.last_tick = time.monotonic()
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                continue
        await self._shutdown()
        return 0

    async def _receive(self, delivery: Delivery) -> None:
        """Called by the broker for each message; returns at once."""
        self.last_tick = time.monotonic()
        if self._stopping:
            await delivery.requeue()
            return
        try:
            task = decode_handoff(delivery.body)
        except MalformedMessage as exc:
            self._meter.poisoned()
            log.error(
                "dead-lettered a malformed hand-off: %s",
                exc,
                extra={"event": "poison", "error": str(exc), "size": len(delivery.body)},
            )
            await delivery.dead_letter()
            return
        running = asyncio.create_task(self._handle(task, delivery), name=f"task-{task.id}")
        self._running.add(running)
        running.add_done_callback(self._running.discard)

    async def _handle(self, task: ClaimedTask, delivery: Delivery) -> None:
        self._meter.started()
        try:
            outcome = await self._firer.fire(task)
        except asyncio.CancelledError:
            # Cancelled after the grace period: another worker fires it again.
            await asyncio.shield(delivery.requeue())
            raise
        self._meter.finished(outcome)
        if await self._outbox.send(task, outcome):
            await asyncio.shield(delivery.ack())
            log.debug("task %d attempt %d fired: %s", task.id, task.attempt, outcome.klass.value)
            return
        # Requeued, it fires again: a repeat the receiver can spot by webhook-id.
        await asyncio.shield(delivery.requeue())

    async def _publish_outcome(self, body: bytes, message_id: str) -> None:
        await asyncio.shield(self._broker.publish_outcome(body, message_id=message_id))

    async def _shutdown(self) -> None:
        self._stopping = True
        await self._broker.stop_consuming()
        running = list(self._running)
        if running:
            log.info(
                "waiting up to %gs for %d in-flight requests",
                self._config.shutdown_grace_s,
                len(running),
            )
            await asyncio.wait(running, timeout=self._config.shutdown_grace_s)
        late = [t for t in self._running if not t.done()]
        if late:
            log.warning("%d requests still running after the grace; requeueing them", len(late))
        for running_task in late:
            running_task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
