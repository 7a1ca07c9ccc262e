"""The controller's side of DISPATCH=amqp: publish each due task, confirmed.

``HandOff.send`` replaces firing: the claim loop calls it at the task's due
time, and the task's slot is free once it returns. It returns True once the
broker confirmed the hand-off, and False when it could not get it through in
time; the caller then hands the claim back. The outcome comes back later,
through the outcomes queue, to whichever controller reads it first
(``runtime.intake``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from timer_controller.domain.messages import encode_handoff
from timer_controller.domain.retry import RetryPolicy
from timer_controller.domain.task import ClaimedTask, Outcome
from timer_controller.errors import BrokerError
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.controller import Controller, LoopConfig, _Slot
from timer_controller.runtime.ports import ClaimStore, DbClock
from timer_controller.runtime.waits import not_before
from timer_controller.runtime.writer import OnCommit, OutcomeWriter

log = logging.getLogger(__name__)

#: Clock slack between the lease the database wrote and our estimate of it.
LEASE_SLACK_S = 1.0


class ControllerBroker(Protocol):
    @property
    def connected(self) -> bool: ...

    async def publish_handoff(self, body: bytes, *, message_id: str, expiration_s: float) -> None:
        """Return once confirmed; raise BrokerError otherwise."""


class HandOffMeter(Protocol):
    def published(self) -> None: ...
    def confirmed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HandOffConfig:
    #: LEASE_TIME: a worker must start a task at least this long before its lease ends.
    lease_s: float
    publish_tries: int
    publish_wait_s: float


def queue_ttl_s(*, lease_end: float, now: float, config: HandOffConfig) -> float:
    """How long the message may wait in the queue (monotonic seconds).

    ``lease_end`` is when the claim's lease ends (QUEUE_LEASE_TIME from its
    last renewal); a message still queued LEASE_TIME before that expires
    unfired, so a request a worker starts always ends before the lease does.
    """
    return lease_end - config.lease_s - LEASE_SLACK_S - now


class HandOff:
    def __init__(
        self, broker: ControllerBroker, config: HandOffConfig, *, meter: HandOffMeter
    ) -> None:
        self._broker = broker
        self._config = config
        self._meter = meter

    @property
    def ready(self) -> bool:
        """Claims only make sense while the broker can take them."""
        return self._broker.connected

    async def send(self, task: ClaimedTask, *, lease_end: float) -> bool:
        """Publish ``task``; True once confirmed, False if the claim should be handed back."""
        body = encode_handoff(task)
        message_id = f"{task.id}.{task.attempt}"
        for attempt in range(1, self._config.publish_tries + 1):
            ttl_s = queue_ttl_s(lease_end=lease_end, now=time.monotonic(), config=self._config)
            if ttl_s <= 0:
                break
            self._meter.published()
            try:
                await self._broker.publish_handoff(body, message_id=message_id, expiration_s=ttl_s)
            except BrokerError as exc:
                log.warning(
                    "task %d: hand-off not confirmed (try %d of %d): %s",
                    task.id,
                    attempt,
                    self._config.publish_tries,
                    exc,
                )
                if attempt < self._config.publish_tries:
                    await asyncio.sleep(self._config.publish_wait_s)
                continue
            self._meter.confirmed()
            return True
        return False


class HandOffController(Controller):
    """The claim loop of DISPATCH=amqp: claim as in direct mode, hand off when due.

    A slot is free once its hand-off is confirmed. Outcomes come back
    through ``runtime.intake`` and are recorded with ``record``, which any
    controller may do for any task.
    """

    def __init__(
        self,
        claims: ClaimStore,
        handoff: HandOff,
        writer: OutcomeWriter,
        config: LoopConfig,
        *,
        retry: RetryPolicy,
        metrics: Metrics,
        db_now: DbClock,
    ) -> None:
        super().__init__(claims, None, writer, config, retry=retry, metrics=metrics, db_now=db_now)
        self._handoff = handoff

    def record(self, task: ClaimedTask, outcome: Outcome, *, on_commit: OnCommit) -> None:
        """A worker's outcome: decided, counted and logged as in direct mode, acked on commit."""
        self._record(task, outcome, on_commit=on_commit)

    def _may_claim(self) -> bool:
        # A claim the broker cannot take would only wait for its lease.
        return self._handoff.ready

    async def _fire(self, slot: _Slot, fire_at: float) -> None:
        # The claim loop's timer may have woken a little early on uvloop.
        await not_before(fire_at)
        if not await self._handoff.send(slot.task, lease_end=self._leases.lease_end(slot.task)):
            log.warning(
                "task %d: the broker did not take the hand-off; handing the claim back",
                slot.task.id,
                extra={"event": "handoff_failed", "task_id": slot.task.id},
            )
            await self._release({slot.task.id})

    async def _unanswered(self, slots: list[_Slot]) -> None:
        # Publishes cut short at shutdown may or may not have reached the queue.
        # Handing the claims back is safe either way: a worker's outcome for
        # the same attempt is recorded or, once superseded, dropped as stale.
        await self._release({s.task.id for s in slots})
