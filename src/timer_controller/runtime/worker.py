"""The worker loop: fire the tasks the broker hands out, report, then ack.

Each delivery is a hand-off from a controller: one task, or several that
came due together. Each task fires at once (the controller published it at
its due time) through the same dispatcher as direct mode, at most
WORKER_CONCURRENCY at a time; its outcome is published and confirmed (in a
batch with the outcomes finished near it, ``runtime.outbox``), and the
delivery is acked only once every task in it has its outcome confirmed: a
worker that dies at any point leaves the delivery unacked and the broker
gives it to another worker. A message that is not a valid hand-off is
dead-lettered and logged, never retried; a bad task inside a batch fails
alone, with an ``invalid`` outcome of its own.

The prefetch counts messages, not tasks: with WORKER_CONCURRENCY of each,
the tasks received but not started are bounded by the prefetch times the
controllers' pack limits (``runtime.handoff.PackLimits``), and so is their
memory.

On stop: no new deliveries; those that arrive meanwhile, and those none of
whose tasks has started, go back to the queue; requests in flight (and the
rest of the deliveries they belong to) finish within the grace period, and
what is still running or waiting after it is cancelled and requeued too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from timer_controller.domain.messages import (
    BadHandOff,
    MalformedMessage,
    decode_handoff_message,
)
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass
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
    #: WORKER_CONCURRENCY: requests at once, and the prefetch (which counts messages).
    concurrency: int
    shutdown_grace_s: float
    #: Tries to get one outcome confirmed before the delivery is requeued.
    publish_tries: int
    publish_wait_s: float
    #: Outcomes per message, and how long the first waits for company.
    outcome_batch: int = 100
    outcome_linger_s: float = 0.005
    #: WEBHOOK_TIMEOUT: how long a request may take, so how late it may start.
    webhook_timeout_s: float = 10.0


@dataclass(eq=False, slots=True)
class _Held:
    """A delivery being worked on: settled once every task in it has ended."""

    delivery: Delivery
    left: int
    #: Monotonic time after which a task of it may no longer start; None: no limit.
    start_by: float | None = None
    started: int = 0
    #: False once any task's outcome failed to be confirmed (or was cut short).
    ok: bool = True

    def end(self, *, ok: bool) -> bool:
        """One task ended; True when it was the last (settle the delivery now)."""
        self.ok = self.ok and ok
        self.left -= 1
        return self.left == 0


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
        #: Tasks received but not started: at most prefetch deliveries' worth.
        self._queued: deque[tuple[ClaimedTask | BadHandOff, _Held]] = deque()
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
        self.last_tick = received = time.monotonic()
        if self._stopping:
            await delivery.requeue()
            return
        try:
            message = decode_handoff_message(delivery.body)
        except MalformedMessage as exc:
            self._meter.poisoned()
            log.error(
                "dead-lettered a malformed hand-off: %s",
                exc,
                extra={"event": "poison", "error": str(exc), "size": len(delivery.body)},
            )
            await delivery.dead_letter()
            return
        start_by = None
        if message.finish_within_s is not None:
            start_by = received + message.finish_within_s - self._config.webhook_timeout_s
        held = _Held(delivery, len(message.tasks), start_by)
        self._queued.extend((task, held) for task in message.tasks)
        self._start_queued()

    def _start_queued(self) -> None:
        """Start received tasks while fewer than WORKER_CONCURRENCY run."""
        while self._queued and len(self._running) < self._config.concurrency:
            task, held = self._queued.popleft()
            held.started += 1
            running = asyncio.create_task(self._handle(task, held), name="task")
            self._running.add(running)
            running.add_done_callback(self._ended)

    def _ended(self, running: asyncio.Task[None]) -> None:
        self._running.discard(running)
        self._start_queued()

    async def _handle(self, task: ClaimedTask | BadHandOff, held: _Held) -> None:
        try:
            if held.start_by is not None and time.monotonic() > held.start_by:
                ok = self._too_late(task)
            else:
                ok = await self._attempt(task)
        except asyncio.CancelledError:
            # Cancelled after the grace period: another worker fires it again.
            if held.end(ok=False):
                await asyncio.shield(held.delivery.requeue())
            raise
        if held.end(ok=ok):
            await self._settle(held)

    async def _attempt(self, task: ClaimedTask | BadHandOff) -> bool:
        """Fire ``task`` and get its outcome confirmed; False if it never was."""
        if isinstance(task, BadHandOff):
            return await self._refuse(task)
        self._meter.started()
        outcome = await self._firer.fire(task)
        self._meter.finished(outcome)
        confirmed = await self._outbox.send(task, outcome)
        if confirmed:
            log.debug("task %d attempt %d fired: %s", task.id, task.attempt, outcome.klass.value)
        return confirmed

    @staticmethod
    def _too_late(task: ClaimedTask | BadHandOff) -> bool:
        """Waited for a slot so long that its request could outlast its lease: left unfired.

        Its lease returns it and it fires once, from a fresh claim, as a
        message that expired in the queue would; True: nothing to report.
        """
        named = task.task if isinstance(task, BadHandOff) else task
        task_id = named.id if named is not None else None
        log.warning(
            "task %s not started: it waited for a free request slot past its lease's margin; "
            "its lease returns it",
            task_id,
            extra={"event": "start_too_late", "task_id": task_id},
        )
        return True

    async def _refuse(self, bad: BadHandOff) -> bool:
        """A task its batch carried unreadable: it fails alone, the others fire."""
        self._meter.poisoned()
        log.error(
            "refused a malformed task in a batch of hand-offs: %s",
            bad.reason,
            extra={"event": "poison", "error": bad.reason},
        )
        if bad.task is None:
            return True  # nothing names its attempt: its lease returns it
        # Counted as poison, not as a request: nothing was sent.
        outcome = Outcome(bad.task.id, OutcomeClass.INVALID, error=bad.reason[:300])
        return await self._outbox.send(bad.task, outcome)

    async def _settle(self, held: _Held) -> None:
        if held.ok:
            await asyncio.shield(held.delivery.ack())
        else:
            # Requeued, its tasks fire again: repeats the receiver can spot by webhook-id.
            await asyncio.shield(held.delivery.requeue())

    async def _publish_outcome(self, body: bytes, message_id: str) -> None:
        await asyncio.shield(self._broker.publish_outcome(body, message_id=message_id))

    async def _shutdown(self) -> None:
        self._stopping = True
        await self._broker.stop_consuming()
        await self._requeue_unstarted()
        running = list(self._running)
        if running or self._queued:
            log.info(
                "waiting up to %gs for %d in-flight requests (and %d more of their deliveries)",
                self._config.shutdown_grace_s,
                len(running),
                len(self._queued),
            )
            await self._wait_all(self._config.shutdown_grace_s)
        # Tasks still queued belong to deliveries already begun: those go back whole.
        queued, self._queued = list(self._queued), deque()
        ended = [held for _, held in queued if held.end(ok=False)]
        await asyncio.gather(*(asyncio.shield(h.delivery.requeue()) for h in ended))
        late = [t for t in self._running if not t.done()]
        if late:
            log.warning("%d requests still running after the grace; requeueing them", len(late))
        for running_task in late:
            running_task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _requeue_unstarted(self) -> None:
        """Deliveries none of whose tasks started go back to the queue at once."""
        unstarted = {id(h): h for _, h in self._queued if h.started == 0}
        if not unstarted:
            return
        self._queued = deque(item for item in self._queued if id(item[1]) not in unstarted)
        await asyncio.gather(*(h.delivery.requeue() for h in unstarted.values()))

    async def _wait_all(self, timeout_s: float) -> None:
        """Until nothing runs or is queued, or ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while self._running and (left_s := deadline - time.monotonic()) > 0:
            await asyncio.wait(list(self._running), timeout=left_s)
