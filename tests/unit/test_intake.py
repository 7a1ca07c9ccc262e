"""The outcome intake: each outcome goes to the recorder with its ack; poison is dead-lettered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from timer_controller.domain.messages import encode_outcome
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
