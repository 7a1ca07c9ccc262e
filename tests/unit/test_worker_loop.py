"""The worker loop in-process: a fake broker and firer, real asyncio concurrency."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, ParamSpec

import pytest

from timer_controller.domain.messages import (
    decode_outcomes,
    encode_handoff,
    handoff_part,
    pack_handoffs,
)
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass
from timer_controller.errors import BrokerError
from timer_controller.runtime.worker import Delivery, Worker, WorkerConfig

DUE = datetime(2026, 12, 1, 10, 0, 0)
P = ParamSpec("P")


def in_loop(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeDelivery:
    def __init__(self, body: bytes, log: list[str]) -> None:
        self.body = body
        self.settled: str | None = None
        self._log = log

    async def _settle(self, how: str) -> None:
        assert self.settled is None, f"settled twice: {self.settled} then {how}"
        self.settled = how
        self._log.append(how)

    async def ack(self) -> None:
        await self._settle("ack")

    async def requeue(self) -> None:
        await self._settle("requeue")

    async def dead_letter(self) -> None:
        await self._settle("dead_letter")


class FakeBroker:
    def __init__(self, *, failures: int = 0) -> None:
        self.handler: Callable[[Delivery], Awaitable[None]] | None = None
        self.prefetch = 0
        self.published: list[bytes] = []
        self.log: list[str] = []
        self._failures = failures
        self.consuming = False

    async def consume_deliveries(
        self, handler: Callable[[Delivery], Awaitable[None]], *, prefetch: int
    ) -> None:
        self.handler, self.prefetch, self.consuming = handler, prefetch, True

    async def stop_consuming(self) -> None:
        self.consuming = False

    async def publish_outcome(self, body: bytes, *, message_id: str) -> None:
        if self._failures:
            self._failures -= 1
            raise BrokerError("not confirmed")
        self.log.append(f"publish {message_id}")
        self.published.append(body)

    async def deliver(self, body: bytes) -> FakeDelivery:
        assert self.handler is not None
        delivery = FakeDelivery(body, self.log)
        await self.handler(delivery)
        return delivery


class Firer:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.fired: list[int] = []

    async def fire(self, task: ClaimedTask) -> Outcome:
        self.fired.append(task.id)
        await asyncio.sleep(self.delay_s)
        return Outcome(task.id, OutcomeClass.SUCCESS, status_code=200, duration_s=self.delay_s)


class Meter:
    def __init__(self) -> None:
        self.started_n = self.finished_n = self.poison_n = 0

    def started(self) -> None:
        self.started_n += 1

    def finished(self, outcome: Outcome) -> None:
        self.finished_n += 1

    def poisoned(self) -> None:
        self.poison_n += 1


def handoff(task_id: int) -> bytes:
    return encode_handoff(
        ClaimedTask(id=task_id, url="http://h/", due_at=DUE, attempt=3, max_attempts=None)
    )


def make(
    broker: FakeBroker, firer: Firer, *, grace_s: float = 5.0, tries: int = 3
) -> tuple[Worker, Meter]:
    meter = Meter()
    config = WorkerConfig(
        concurrency=7, shutdown_grace_s=grace_s, publish_tries=tries, publish_wait_s=0.01
    )
    return Worker(broker, firer, config, meter=meter), meter


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - plain state has no event to await
            await asyncio.sleep(0.005)


@in_loop
async def test_outcomes_finished_together_go_in_one_confirmed_message_before_the_acks() -> None:
    broker, firer = FakeBroker(), Firer()
    worker, meter = make(broker, firer)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)

    deliveries = [await broker.deliver(handoff(i)) for i in (1, 2)]
    await until(lambda: all(d.settled for d in deliveries))
    stop.set()

    assert await running == 0
    assert broker.prefetch == 7
    assert broker.log == ["publish 1.3+1", "ack", "ack"]
    [batch] = map(decode_outcomes, broker.published)
    assert [(o.task_id, o.attempt) for o in batch] == [(1, 3), (2, 3)]
    assert (meter.started_n, meter.finished_n) == (2, 2)


@in_loop
async def test_a_full_batch_goes_at_once_and_the_next_gathers_meanwhile() -> None:
    broker, firer = FakeBroker(), Firer()
    meter = Meter()
    config = WorkerConfig(
        concurrency=7,
        shutdown_grace_s=5,
        publish_tries=3,
        publish_wait_s=0.01,
        outcome_batch=2,
        outcome_linger_s=30,
    )
    worker = Worker(broker, firer, config, meter=meter)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)

    deliveries = [await broker.deliver(handoff(i)) for i in (1, 2, 3)]
    await until(lambda: deliveries[1].settled is not None)
    # The third waits for company (up to its linger) and is not acked yet.
    assert [d.settled for d in deliveries] == ["ack", "ack", None]
    assert broker.log == ["publish 1.3+1", "ack", "ack"]
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


@in_loop
async def test_a_poison_message_is_dead_lettered_not_fired() -> None:
    broker, firer = FakeBroker(), Firer()
    worker, meter = make(broker, firer)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)

    poison = await broker.deliver(b"\x00garbage")
    good = await broker.deliver(handoff(5))
    await until(lambda: good.settled is not None)
    stop.set()
    await running

    assert poison.settled == "dead_letter"
    assert good.settled == "ack"
    assert firer.fired == [5]
    assert meter.poison_n == 1


@pytest.mark.parametrize(("failures", "settled"), [(2, "ack"), (3, "requeue")])
@in_loop
async def test_an_unconfirmed_outcome_is_retried_then_the_delivery_requeued(
    failures: int, settled: str
) -> None:
    broker, firer = FakeBroker(failures=failures), Firer()
    worker, _ = make(broker, firer, tries=3)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)

    delivery = await broker.deliver(handoff(1))
    await until(lambda: delivery.settled is not None)
    stop.set()
    await running

    assert delivery.settled == settled


@in_loop
async def test_stop_waits_for_in_flight_and_requeues_what_arrives_meanwhile() -> None:
    broker, firer = FakeBroker(), Firer(delay_s=0.3)
    worker, _ = make(broker, firer, grace_s=5.0)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)
    in_flight = await broker.deliver(handoff(1))
    await until(lambda: firer.fired == [1])

    stop.set()
    await until(lambda: not broker.consuming)
    late = await broker.deliver(handoff(2))
    assert await running == 0

    assert in_flight.settled == "ack"
    assert late.settled == "requeue"
    assert firer.fired == [1]


@in_loop
async def test_requests_still_running_after_the_grace_are_requeued() -> None:
    broker, firer = FakeBroker(), Firer(delay_s=30)
    worker, _ = make(broker, firer, grace_s=0.1)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)
    slow = await broker.deliver(handoff(1))
    await until(lambda: firer.fired == [1])

    stop.set()
    async with asyncio.timeout(5):
        assert await running == 0

    assert slow.settled == "requeue"
    assert broker.published == []


def batch(*task_ids: int) -> bytes:
    return pack_handoffs(
        [
            handoff_part(
                ClaimedTask(id=i, url="http://h/", due_at=DUE, attempt=3, max_attempts=None)
            )
            for i in task_ids
        ]
    )


class CountingFirer(Firer):
    """Records the most requests it had at once; each waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.now = self.most = 0
        self.release = asyncio.Event()
        #: Tasks that wait for ``release_held`` instead.
        self.held: set[int] = set()
        self.release_held = asyncio.Event()

    async def fire(self, task: ClaimedTask) -> Outcome:
        self.fired.append(task.id)
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await (self.release_held if task.id in self.held else self.release).wait()
        finally:
            self.now -= 1
        return Outcome(task.id, OutcomeClass.SUCCESS, status_code=200)


def outcomes(broker: FakeBroker) -> dict[int, OutcomeClass]:
    return {o.task_id: o.outcome.klass for body in broker.published for o in decode_outcomes(body)}


@in_loop
async def test_a_batch_fires_every_task_and_is_acked_once_after_all_outcomes() -> None:
    broker, firer = FakeBroker(), CountingFirer()
    worker, meter = make(broker, firer)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)

    firer.held = {3}
    delivery = await broker.deliver(batch(1, 2, 3))
    await until(lambda: len(firer.fired) == 3)
    firer.release.set()
    await until(lambda: set(outcomes(broker)) == {1, 2})
    await until(lambda: "ack" in broker.log or worker.in_flight == 1)
    assert delivery.settled is None  # not acked while a task of it runs
    firer.release_held.set()
    await until(lambda: delivery.settled is not None)
    stop.set()
    await running

    assert delivery.settled == "ack"
    assert broker.log[-1] == "ack"
    assert broker.log.count("ack") == 1
    assert outcomes(broker) == dict.fromkeys((1, 2, 3), OutcomeClass.SUCCESS)
    assert (meter.started_n, meter.finished_n) == (3, 3)


@in_loop
async def test_worker_concurrency_bounds_the_requests_in_flight_not_the_messages() -> None:
    broker, firer = FakeBroker(), CountingFirer()
    worker, _ = make(broker, firer)  # WORKER_CONCURRENCY 7
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)

    deliveries = [await broker.deliver(batch(*range(n, n + 5))) for n in (1, 6, 11)]
    await until(lambda: len(firer.fired) == 7)
    assert worker.in_flight == 7
    firer.release.set()
    await until(lambda: all(d.settled for d in deliveries))
    stop.set()
    await running

    assert firer.most == 7
    assert sorted(firer.fired) == list(range(1, 16))
    assert [d.settled for d in deliveries] == ["ack"] * 3


@in_loop
async def test_a_bad_task_in_a_batch_fails_alone_and_the_others_fire() -> None:
    broker, firer = FakeBroker(), Firer()
    worker, meter = make(broker, firer)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)
    good = json.loads(
        handoff_part(ClaimedTask(id=1, url="u", due_at=DUE, attempt=1, max_attempts=None))
    )
    raw = json.dumps(
        {"v": 2, "tasks": [good, good | {"id": 2, "headers": 5}, {"id": "?"}, good | {"id": 4}]}
    ).encode()

    delivery = await broker.deliver(raw)
    await until(lambda: delivery.settled is not None)
    stop.set()
    await running

    assert delivery.settled == "ack"
    assert sorted(firer.fired) == [1, 4]
    assert outcomes(broker) == {
        1: OutcomeClass.SUCCESS,
        2: OutcomeClass.INVALID,
        4: OutcomeClass.SUCCESS,
    }
    assert meter.poison_n == 2
    assert (meter.started_n, meter.finished_n) == (2, 2)  # the requests sent, and only those


class RefusingBroker(FakeBroker):
    """Never confirms the outcome of task 1."""

    async def publish_outcome(self, body: bytes, *, message_id: str) -> None:
        if message_id.startswith("1."):
            raise BrokerError("not confirmed")
        await super().publish_outcome(body, message_id=message_id)


@in_loop
async def test_a_batch_with_an_unconfirmed_outcome_is_requeued_whole() -> None:
    broker, firer = RefusingBroker(), Firer()
    config = WorkerConfig(
        concurrency=7,
        shutdown_grace_s=5,
        publish_tries=3,
        publish_wait_s=0.01,
        outcome_batch=1,  # each outcome its own message: the first one fails
    )
    worker = Worker(broker, firer, config, meter=Meter())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)

    delivery = await broker.deliver(batch(1, 2))
    await until(lambda: delivery.settled is not None)
    stop.set()
    await running

    assert delivery.settled == "requeue"
    assert len(broker.published) == 1  # one outcome got through, the delivery still goes back


@in_loop
async def test_stop_requeues_unstarted_batches_and_finishes_the_begun_one() -> None:
    broker, firer = FakeBroker(), CountingFirer()
    worker, _ = make(broker, firer, grace_s=5.0)  # WORKER_CONCURRENCY 7
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)
    begun = await broker.deliver(batch(*range(1, 10)))  # 7 start, 2 wait
    waiting = await broker.deliver(batch(20, 21))
    await until(lambda: len(firer.fired) == 7)

    stop.set()
    await until(lambda: waiting.settled is not None)
    assert waiting.settled == "requeue"
    firer.release.set()
    assert await running == 0

    assert begun.settled == "ack"
    assert sorted(firer.fired) == list(range(1, 10))


@in_loop
async def test_after_the_grace_a_begun_batch_goes_back_whole() -> None:
    broker, firer = FakeBroker(), CountingFirer()
    worker, _ = make(broker, firer, grace_s=0.1)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)
    begun = await broker.deliver(batch(*range(1, 10)))
    await until(lambda: len(firer.fired) == 7)

    stop.set()
    async with asyncio.timeout(5):
        assert await running == 0

    assert begun.settled == "requeue"
    assert broker.published == []


@in_loop
async def test_a_task_that_cannot_start_within_its_leases_margin_is_left_unfired() -> None:
    broker, firer = FakeBroker(), CountingFirer()
    worker, _ = make(broker, firer)  # WORKER_CONCURRENCY 7, WEBHOOK_TIMEOUT 10 s
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await until(lambda: broker.handler is not None)
    parts = [
        handoff_part(ClaimedTask(id=i, url="http://h/", due_at=DUE, attempt=3, max_attempts=None))
        for i in range(1, 10)
    ]
    # LEASE_TIME 10.2 s: a task must start within 0.2 s of the delivery.
    start_by = time.monotonic() + 0.2
    delivery = await broker.deliver(pack_handoffs(parts, finish_within_s=10.2))
    await until(lambda: len(firer.fired) == 7)
    await until(lambda: time.monotonic() > start_by + 0.01)
    firer.release.set()
    await until(lambda: delivery.settled is not None)
    stop.set()
    await running

    assert delivery.settled == "ack"  # the two left unfired return with their leases
    assert sorted(firer.fired) == list(range(1, 8))
    assert sorted(outcomes(broker)) == list(range(1, 8))
