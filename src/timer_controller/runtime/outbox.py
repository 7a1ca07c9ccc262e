"""A worker's outcomes, published in batches: one confirmed message for many.

Every broker message costs CPU in the worker, the broker and the recording
controller, so outcomes finished close together travel as one: the first
outcome of a batch waits at most ``linger_s`` for others (up to
``max_batch``), then the batch is published, persistent and confirmed,
while the next one gathers. ``send`` returns True once the message holding
its outcome is confirmed — only then may the worker ack the delivery — and
False when no try got it confirmed; the worker then requeues the delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from timer_controller.domain.messages import encode_outcomes
from timer_controller.domain.task import ClaimedTask, Outcome
from timer_controller.errors import BrokerError

log = logging.getLogger(__name__)

Publish = Callable[[bytes, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    max_batch: int
    linger_s: float
    publish_tries: int
    publish_wait_s: float


@dataclass(slots=True)
class _Entry:
    task: ClaimedTask
    outcome: Outcome
    confirmed: asyncio.Future[bool]


class _Batch:
    def __init__(self) -> None:
        self.entries: list[_Entry] = []
        self.full = asyncio.Event()


class Outbox:
    def __init__(self, publish: Publish, config: OutboxConfig) -> None:
        self._publish = publish
        self._config = config
        self._gathering = _Batch()
        self._flushes: set[asyncio.Task[None]] = set()

    async def send(self, task: ClaimedTask, outcome: Outcome) -> bool:
        """True once the outcome's batch is confirmed; False if it never was."""
        entry = _Entry(task, outcome, asyncio.get_running_loop().create_future())
        batch = self._gathering
        batch.entries.append(entry)
        if len(batch.entries) == 1:
            flush = asyncio.create_task(self._flush_soon(batch), name="outbox-flush")
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        if len(batch.entries) >= self._config.max_batch:
            self._close(batch)
        # The batch's publish goes on if this caller is cancelled (shutdown):
        # its outcome may well be recorded, and the others in it still wait.
        return await asyncio.shield(entry.confirmed)

    def _close(self, batch: _Batch) -> None:
        """No more outcomes join ``batch``; the next ones start another."""
        if self._gathering is batch:
            self._gathering = _Batch()
        batch.full.set()

    async def _flush_soon(self, batch: _Batch) -> None:
        try:
            async with asyncio.timeout(self._config.linger_s):
                await batch.full.wait()
        except TimeoutError:
            pass
        self._close(batch)
        confirmed = await self._publish_batch(batch.entries)
        for entry in batch.entries:
            entry.confirmed.set_result(confirmed)

    async def _publish_batch(self, batch: list[_Entry]) -> bool:
        body = encode_outcomes([(e.task, e.outcome) for e in batch])
        first = batch[0].task
        message_id = f"{first.id}.{first.attempt}+{len(batch) - 1}"
        tries = self._config.publish_tries
        for attempt in range(1, tries + 1):
            try:
                await self._publish(body, message_id)
            except BrokerError as exc:
                log.warning(
                    "%d outcomes (task %d first) not confirmed (try %d of %d): %s",
                    len(batch),
                    first.id,
                    attempt,
                    tries,
                    exc,
                )
                if attempt < tries:
                    await asyncio.sleep(self._config.publish_wait_s)
                continue
            return True
        return False
