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

from timer_controller.domain.messages import BrokerError, encode_handoff
from timer_controller.domain.task import ClaimedTask

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
    #: The claim's lease in amqp mode (QUEUE_LEASE_TIME).
    queue_lease_s: float
    #: LEASE_TIME: a worker must start a task at least this long before its lease ends.
    lease_s: float
    publish_tries: int
    publish_wait_s: float


def queue_ttl_s(*, fire_at: float, now: float, config: HandOffConfig) -> float:
    """How long the message may wait in the queue (monotonic seconds).

    The lease runs QUEUE_LEASE_TIME from the due time; a message still queued
    LEASE_TIME before its end expires unfired, so a request a worker starts
    always ends before the lease does.
    """
    return fire_at + config.queue_lease_s - config.lease_s - LEASE_SLACK_S - now


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

    async def send(self, task: ClaimedTask, *, fire_at: float) -> bool:
        """Publish ``task``; True once confirmed, False if the claim should be handed back."""
        body = encode_handoff(task)
        message_id = f"{task.id}.{task.attempt}"
        for attempt in range(1, self._config.publish_tries + 1):
            ttl_s = queue_ttl_s(fire_at=fire_at, now=time.monotonic(), config=self._config)
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
