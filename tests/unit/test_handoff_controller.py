"""The amqp claim loop in-process: fake storage, a fake broker, the real loop and writer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tests.unit.test_controller_loop import DB_NOW, FakeStore, _run, _task, _until
from timer_controller.domain.messages import decode_handoffs
from timer_controller.domain.retry import RetryPolicy
from timer_controller.domain.task import Outcome, OutcomeClass, Status, Transition
from timer_controller.errors import BrokerError, StorageError
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.controller import LoopConfig
from timer_controller.runtime.handoff import HandOff, HandOffConfig, HandOffController
from timer_controller.runtime.writer import OutcomeWriter


@dataclass
class FakeBroker:
    connected: bool = True
    refuse: set[int] = field(default_factory=set)
    published: list[int] = field(default_factory=list)
    #: The task ids of each confirmed message.
    messages: list[list[int]] = field(default_factory=list)

    async def publish_handoff(self, body: bytes, *, message_id: str, expiration_s: float) -> None:
        ids = [getattr(task, "id", 0) for task in decode_handoffs(body)]
        if self.refuse & set(ids):
            raise BrokerError("nacked")
        assert expiration_s > 0
        self.published.extend(ids)
        self.messages.append(ids)


class StaleStore(FakeStore):
    """Writes only the transitions whose attempt is the row's current one."""

    current: dict[int, int]
    commits: int = 0

    async def record(self, *, owner: str | None, transitions: Sequence[Transition]) -> int:
        assert owner is None, "amqp records by attempt, not by owner"
        fresh = [t for t in transitions if self.current.get(t.task_id) == t.attempt]
        self.recorded.extend(fresh)
        self.commits += 1
        return len(fresh)


def _controller(store: FakeStore, broker: FakeBroker) -> tuple[HandOffController, Metrics]:
    metrics = Metrics()
    writer = OutcomeWriter(
        store,
        owner=None,
        flush_interval_s=0.001,
        flush_batch=500,
        retry_number=2,
        reconnect_wait_s=0.001,
        metrics=metrics,
    )
    config = LoopConfig(
        owner="pod-a",
        batch_size=10,
        max_in_flight=10,
        poll_interval_s=0.01,
        lookahead_s=1.0,
        lease_s=600.0,
        shutdown_grace_s=1.0,
        retry_number=2,
        reconnect_wait_s=0.001,
    )
    handoff = HandOff(
        broker,
        HandOffConfig(lease_s=60, publish_tries=2, publish_wait_s=0.001),
        meter=metrics,
    )
    controller = HandOffController(
        store,
        handoff,
        writer,
        config,
        retry=RetryPolicy(max_attempts=3, base_s=1.0, max_s=60.0),
        metrics=metrics,
        db_now=lambda: DB_NOW,
    )
    return controller, metrics


def test_due_tasks_are_handed_off_and_their_slots_freed_without_recording() -> None:
    store, broker = FakeStore(due=[_task(1), _task(2, delay_s=0.05)]), FakeBroker()
    controller, metrics = _controller(store, broker)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: broker.published == [1, 2], "both hand-offs")
        await _until(lambda: controller.held == 0, "the slots to be freed")
        stop.set()
        assert await running == 0

    _run(scenario)
    assert store.recorded == []
    assert store.released == []
    assert metrics.handoffs_confirmed._value.get() == 2


def test_tasks_due_together_are_handed_off_in_one_message() -> None:
    store = FakeStore(due=[_task(1), _task(2), _task(3), _task(4, delay_s=0.05)])
    broker = FakeBroker()
    controller, metrics = _controller(store, broker)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: len(broker.published) == 4, "every hand-off")
        await _until(lambda: controller.held == 0, "the slots to be freed")
        stop.set()
        assert await running == 0

    _run(scenario)
    assert broker.messages == [[1, 2, 3], [4]]
    assert metrics.handoffs_confirmed._value.get() == 4


def test_a_handoff_the_broker_never_takes_is_handed_back() -> None:
    # Task 2 comes due on its own, so its message carries it alone.
    store, broker = FakeStore(due=[_task(1), _task(2, delay_s=0.05)]), FakeBroker(refuse={2})
    controller, _ = _controller(store, broker)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: store.released == [2], "the refused claim to be handed back")
        stop.set()
        assert await running == 0

    _run(scenario)
    assert broker.published == [1]


def test_nothing_is_claimed_while_the_broker_is_unreachable() -> None:
    store, broker = FakeStore(due=[_task(1)]), FakeBroker(connected=False)
    controller, _ = _controller(store, broker)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await asyncio.sleep(0.1)  # loop turns while the broker is away: no claims
        assert store.limits == []
        broker.connected = True
        await _until(lambda: broker.published == [1], "the claim once the broker is back")
        stop.set()
        assert await running == 0

    _run(scenario)


def test_outcomes_are_acked_after_the_commit_and_stale_ones_counted() -> None:
    store = StaleStore()
    store.current = {7: 2, 8: 1}
    controller, metrics = _controller(store, FakeBroker())
    acked: list[int] = []

    def ack(task_id: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            assert store.commits, "acked before any commit"
            acked.append(task_id)

        return run

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        # Task 7 is claimed for attempt 2, as reported; task 8 is at attempt 1, so
        # an outcome for its attempt 3 is stale.
        for task_id, attempt in ((7, 2), (8, 3)):
            task = _task(task_id, attempt=attempt)
            outcome = Outcome(task_id, OutcomeClass.SUCCESS, status_code=200, fired_at=DB_NOW)
            controller.record(task, outcome, on_commit=ack(task_id))
        await _until(lambda: sorted(acked) == [7, 8], "both outcomes acked")
        stop.set()
        assert await running == 0

    _run(scenario)
    assert [(t.task_id, t.status) for t in store.recorded] == [(7, Status.DONE)]
    assert metrics.outcomes_recorded._value.get() == 1
    assert metrics.outcomes_stale._value.get() == 1


def test_outcomes_whose_write_fails_are_never_acked() -> None:
    store = FakeStore(record_error=StorageError("server gone"))
    controller, _ = _controller(store, FakeBroker())
    acked: list[int] = []

    async def ack() -> None:
        acked.append(1)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        outcome = Outcome(1, OutcomeClass.SUCCESS, status_code=200, fired_at=DB_NOW)
        controller.record(_task(1), outcome, on_commit=ack)
        assert await running == 1  # the writer gave up: the pod exits 1

    _run(scenario)
    assert acked == []  # unacked, the broker gives the outcome to another controller
