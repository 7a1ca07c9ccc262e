"""The controller's outcome consumer in DISPATCH=amqp: outcomes in, records out.

Every controller consumes the outcomes queue, so any controller records any
task's outcome. Each outcome joins the same batched writer as in direct
mode, and its message (a worker's batch of outcomes) is acked only after
every outcome in it is committed; a
controller that dies first leaves it unacked, and another records it. The
write itself is guarded by the task's attempt (``Transition``), so a late
outcome of a superseded attempt changes nothing and is counted as stale.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from timer_controller.domain.messages import MalformedMessage, decode_outcomes
from timer_controller.domain.task import ClaimedTask, Outcome
from timer_controller.runtime.worker import Delivery

log = logging.getLogger(__name__)

OnCommit = Callable[[], Awaitable[None]]


class Recorder(Protocol):
    def record(self, task: ClaimedTask, outcome: Outcome, *, on_commit: OnCommit) -> None:
        """Decide, count and log the outcome; ``on_commit`` runs after its write commits."""


class OutcomeSource(Protocol):
    async def consume_outcomes(
        self, handler: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> None: ...

    async def stop_consuming(self) -> None: ...


class OutcomeIntake:
    def __init__(self, source: OutcomeSource, recorder: Recorder, *, prefetch: int) -> None:
        self._source = source
        self._recorder = recorder
        self._prefetch = prefetch
        self.received = 0

    async def start(self) -> None:
        await self._source.consume_outcomes(self._receive, prefetch=self._prefetch)

    async def stop(self) -> None:
        """No new outcomes; those received are acked as their batch commits."""
        await self._source.stop_consuming()

    async def _receive(self, delivery: Delivery) -> None:
        try:
            reported = decode_outcomes(delivery.body)
        except MalformedMessage as exc:
            log.error(
                "dead-lettered a malformed outcome: %s",
                exc,
                extra={"event": "poison", "error": str(exc), "size": len(delivery.body)},
            )
            await delivery.dead_letter()
            return
        self.received += len(reported)
        on_commit = _after_all(len(reported), delivery.ack)
        for one in reported:
            # What the retry decision needs; the URL and request were the worker's.
            task = ClaimedTask(
                id=one.task_id,
                url="",
                due_at=one.due_at,
                attempt=one.attempt,
                max_attempts=one.max_attempts,
            )
            self._recorder.record(task, one.outcome, on_commit=on_commit)


def _after_all(count: int, action: OnCommit) -> OnCommit:
    """Runs ``action`` on the ``count``-th call: once every outcome of a message is committed."""
    remaining = count

    async def one_committed() -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            await action()

    return one_committed
