"""The outcome intake: each outcome goes to the recorder with its ack; poison is dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from timer_controller.domain.messages import encode_outcome, encode_outcomes
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass
from timer_controller.runtime.intake import OnCommit, OutcomeIntake
from timer_controller.runtime.worker import Delivery

DUE = datetime(2026, 12, 1, 10, 0)


class FakeDelivery:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def requeue(self) -> None:
        self.settled.append("requeue")

    async def dead_letter(self) -> None:
        self.settled.append("dead_letter")


class Source:
    def __init__(self) -> None:
        self.handler: Callable[[Delivery], Awaitable[None]] | None = None
        self.prefetch = 0
        self.stopped = False

    async def consume_outcomes(
        self, handler: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> None:
        self.handler, self.prefetch = handler, prefetch

    async def stop_consuming(self) -> None:
        self.stopped = True


class Recorder:
    def __init__(self) -> None:
        self.recorded: list[tuple[ClaimedTask, Outcome, OnCommit]] = []

    def record(self, task: ClaimedTask, outcome: Outcome, *, on_commit: OnCommit) -> None:
        self.recorded.append((task, outcome, on_commit))


def test_an_outcome_is_recorded_and_acked_only_by_the_commit() -> None:
    source, recorder = Source(), Recorder()
    intake = OutcomeIntake(source, recorder, prefetch=1000)
    sent = ClaimedTask(id=5, url="http://h/", due_at=DUE, attempt=2, max_attempts=4)
    outcome = Outcome(5, OutcomeClass.FINAL_STATUS, status_code=404, error="HTTP 404")
    delivery = FakeDelivery(encode_outcome(sent, outcome))

    async def scenario() -> None:
        await intake.start()
        assert source.handler is not None
        await source.handler(delivery)
        assert delivery.settled == []  # not before the commit
        [(task, got, on_commit)] = recorder.recorded
        assert (task.id, task.attempt, task.max_attempts, task.due_at) == (5, 2, 4, DUE)
        assert got == outcome
        await on_commit()
        await intake.stop()

    asyncio.run(scenario())

    assert delivery.settled == ["ack"]
    assert source.prefetch == 1000
    assert source.stopped


def test_a_malformed_outcome_is_dead_lettered_not_recorded() -> None:
    source, recorder = Source(), Recorder()
    intake = OutcomeIntake(source, recorder, prefetch=10)
    poison = FakeDelivery(b'{"v": 1}')

    async def scenario() -> None:
        await intake.start()
        assert source.handler is not None
        await source.handler(poison)

    asyncio.run(scenario())

    assert poison.settled == ["dead_letter"]
    assert recorder.recorded == []


def test_a_batch_is_acked_once_every_outcome_in_it_is_committed() -> None:
    source, recorder = Source(), Recorder()
    intake = OutcomeIntake(source, recorder, prefetch=10)
    reports = [
        (
            ClaimedTask(id=i, url="http://h/", due_at=DUE, attempt=1, max_attempts=None),
            Outcome(i, OutcomeClass.SUCCESS, status_code=200),
        )
        for i in (1, 2, 3)
    ]
    delivery = FakeDelivery(encode_outcomes(reports))

    async def scenario() -> None:
        await intake.start()
        assert source.handler is not None
        await source.handler(delivery)
        assert [task.id for task, _, _ in recorder.recorded] == [1, 2, 3]
        # The writer may commit them in different flushes.
        for _, _, on_commit in recorder.recorded[:2]:
            await on_commit()
        assert delivery.settled == []
        await recorder.recorded[2][2]()

    asyncio.run(scenario())

    assert delivery.settled == ["ack"]
    assert intake.received == 3


def test_a_batch_with_one_malformed_outcome_is_dead_lettered_whole() -> None:
    source, recorder = Source(), Recorder()
    intake = OutcomeIntake(source, recorder, prefetch=10)
    good = encode_outcome(
        ClaimedTask(id=1, url="http://h/", due_at=DUE, attempt=1, max_attempts=None),
        Outcome(1, OutcomeClass.SUCCESS, status_code=200),
    )
    item = good.decode().replace('"v":1,', "")
    poison = FakeDelivery(f'{{"v":2,"outcomes":[{item},{{"id":"x"}}]}}'.encode())

    async def scenario() -> None:
        await intake.start()
        assert source.handler is not None
        await source.handler(poison)

    asyncio.run(scenario())

    assert poison.settled == ["dead_letter"]
    assert recorder.recorded == []
