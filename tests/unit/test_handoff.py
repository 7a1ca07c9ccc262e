"""The controller's hand-off: confirmed publishes, a queue TTL inside the lease, bounded retries,
and the tasks that come due together packed into one message within its caps."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

import pytest

from timer_controller.domain.messages import (
    BATCH_OVERHEAD_BYTES,
    decode_handoff,
    decode_handoff_message,
    decode_handoffs,
    handoff_part,
    pack_handoffs,
)
from timer_controller.domain.task import ClaimedTask
from timer_controller.errors import BrokerError
from timer_controller.runtime.handoff import (
    LEASE_SLACK_S,
    HandOff,
    HandOffConfig,
    PackLimits,
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


def _task(task_id: int, body: str | None = None) -> ClaimedTask:
    return ClaimedTask(
        id=task_id,
        url="http://h/",
        due_at=datetime(2026, 12, 1),
        attempt=1,
        max_attempts=3,
        body=body,
    )


async def _send_together(handoff: HandOff, tasks: list[ClaimedTask]) -> list[bool]:
    """Every task handed off in the same loop turn, as a claim's due tasks are."""
    lease_end = time.monotonic() + 600
    return list(await asyncio.gather(*(handoff.send(t, lease_end=lease_end) for t in tasks)))


def _ids(body: bytes) -> list[int]:
    return [t.id for t in decode_handoffs(body) if isinstance(t, ClaimedTask)]


def test_handoffs_asked_for_in_one_loop_turn_go_as_one_message_in_order() -> None:
    broker, meter = Broker(), Meter()
    tasks = [_task(i) for i in range(1, 6)]

    results = asyncio.run(_send_together(HandOff(broker, CONFIG, meter=meter), tasks))

    assert results == [True] * 5
    [(body, message_id, ttl_s)] = broker.sent
    assert json.loads(body)["v"] == 2
    assert decode_handoffs(body) == tasks
    # The request must end within LEASE_TIME of the delivery.
    assert decode_handoff_message(body).finish_within_s == CONFIG.lease_s
    assert message_id == "1.1+4"
    assert 530 < ttl_s <= 540
    assert (meter.published_n, meter.confirmed_n) == (5, 5)


def test_a_pack_holds_at_most_max_tasks() -> None:
    broker = Broker()
    handoff = HandOff(broker, CONFIG, meter=Meter(), limits=PackLimits(max_tasks=2))

    asyncio.run(_send_together(handoff, [_task(i) for i in range(1, 6)]))

    assert [_ids(body) for body, _, _ in broker.sent] == [[1, 2], [3, 4], [5]]


def test_a_pack_stays_within_max_bytes_and_a_task_too_big_to_share_goes_alone() -> None:
    broker = Broker()
    limits = PackLimits(max_tasks=100, max_bytes=1000)
    handoff = HandOff(broker, CONFIG, meter=Meter(), limits=limits)
    tasks = [_task(1, "a" * 300), _task(2, "b" * 300), _task(3, "c" * 5000), _task(4, "d" * 300)]

    assert asyncio.run(_send_together(handoff, tasks)) == [True] * 4

    sent = [(_ids(body), len(body)) for body, _, _ in broker.sent]
    assert [ids for ids, _ in sent] == [[1, 2], [3], [4]]
    assert all(size <= 1000 for ids, size in sent if ids != [3])
    # The size a pack counts is the message's size exactly.
    parts = [handoff_part(tasks[0]), handoff_part(tasks[1])]
    longest = pack_handoffs(parts, finish_within_s=86400)  # LEASE_TIME's most
    assert len(longest) <= BATCH_OVERHEAD_BYTES + sum(map(len, parts)) + 1
    assert json.loads(broker.sent[1][0])["v"] == 1  # alone: the version workers always read


def test_handoffs_in_different_loop_turns_are_not_held_back_for_each_other() -> None:
    broker = Broker()
    handoff = HandOff(broker, CONFIG, meter=Meter())

    async def one_by_one() -> None:
        for i in (1, 2):
            assert await handoff.send(_task(i), lease_end=time.monotonic() + 600)

    asyncio.run(one_by_one())

    assert [_ids(body) for body, _, _ in broker.sent] == [[1], [2]]


@pytest.mark.parametrize(("failures", "ok", "published"), [(2, True, 9), (3, False, 9)])
def test_a_refused_pack_is_retried_whole_then_every_task_in_it_given_up(
    failures: int, ok: bool, published: int
) -> None:
    broker, meter = Broker(failures), Meter()

    results = asyncio.run(
        _send_together(HandOff(broker, CONFIG, meter=meter), [_task(i) for i in (1, 2, 3)])
    )

    assert results == [ok] * 3
    assert meter.published_n == published
    assert meter.confirmed_n == (3 if ok else 0)
    assert [_ids(body) for body, _, _ in broker.sent] == ([[1, 2, 3]] if ok else [])


def test_a_pack_expires_with_its_earliest_task_and_drops_tasks_past_their_queue_time() -> None:
    broker = Broker()
    handoff = HandOff(broker, CONFIG, meter=Meter())
    now = time.monotonic()

    async def together() -> list[bool]:
        return list(
            await asyncio.gather(
                handoff.send(_task(1), lease_end=now + 600),
                handoff.send(_task(2), lease_end=now + 300),
                handoff.send(_task(3), lease_end=now - 1000),
            )
        )

    assert asyncio.run(together()) == [True, True, False]
    [(body, _, ttl_s)] = broker.sent
    assert _ids(body) == [1, 2]
    assert 230 < ttl_s <= 240
