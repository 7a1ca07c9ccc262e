"""The controller's hand-off: confirmed publishes, a queue TTL inside the lease, bounded retries."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from timer_controller.domain.messages import decode_handoff
from timer_controller.domain.task import ClaimedTask
from timer_controller.errors import BrokerError
from timer_controller.runtime.handoff import (
    LEASE_SLACK_S,
    HandOff,
    HandOffConfig,
    queue_ttl_s,
)

CONFIG = HandOffConfig(lease_s=60, publish_tries=3, publish_wait_s=0.01)
TASK = ClaimedTask(
    id=9, url="http://h/", due_at=datetime(2026, 12, 1), attempt=2, max_attempts=None
)


class Broker:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[bytes, str, float]] = []
        self.connected = True

    async def publish_handoff(self, body: bytes, *, message_id: str, expiration_s: float) -> None:
        if self.failures:
            self.failures -= 1
            raise BrokerError("nacked")
        self.sent.append((body, message_id, expiration_s))


class Meter:
    def __init__(self) -> None:
        self.published_n = self.confirmed_n = 0

    def published(self) -> None:
        self.published_n += 1

    def confirmed(self) -> None:
        self.confirmed_n += 1


@pytest.mark.parametrize(
    ("lease_end", "now", "expected"),
    [
        (700.0, 100.0, 540.0 - LEASE_SLACK_S),
        (700.0, 400.0, 240.0 - LEASE_SLACK_S),
        (700.0, 700.0, -60.0 - LEASE_SLACK_S),
    ],
)
def test_a_message_expires_lease_time_before_the_lease_ends(
    lease_end: float, now: float, expected: float
) -> None:
    assert queue_ttl_s(lease_end=lease_end, now=now, config=CONFIG) == expected


def test_a_confirmed_handoff_carries_the_task_and_its_ttl() -> None:
    broker, meter = Broker(), Meter()

    ok = asyncio.run(
        HandOff(broker, CONFIG, meter=meter).send(TASK, lease_end=time.monotonic() + 600)
    )

    assert ok is True
    [(body, message_id, ttl_s)] = broker.sent
    assert decode_handoff(body) == TASK
    assert message_id == "9.2"
    assert 530 < ttl_s <= 540
    assert (meter.published_n, meter.confirmed_n) == (1, 1)


@pytest.mark.parametrize(("failures", "ok", "published"), [(2, True, 3), (3, False, 3)])
def test_an_unconfirmed_handoff_is_retried_then_given_up(
    failures: int, ok: bool, published: int
) -> None:
    broker, meter = Broker(failures), Meter()

    result = asyncio.run(
        HandOff(broker, CONFIG, meter=meter).send(TASK, lease_end=time.monotonic() + 600)
    )

    assert result is ok
    assert meter.published_n == published
    assert meter.confirmed_n == (1 if ok else 0)


def test_a_task_past_its_queue_time_is_not_published() -> None:
    broker, meter = Broker(), Meter()
    long_ago = time.monotonic() - 1000

    assert (
        asyncio.run(HandOff(broker, CONFIG, meter=meter).send(TASK, lease_end=long_ago + 600))
        is False
    )
    assert broker.sent == []
