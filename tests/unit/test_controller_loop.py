"""The controller loop in-process: fake storage and a fake sender, no database,
no thread pool, no network. Each test drives the real ``Controller.run``."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from timer_controller.domain.destination import url_prefix
from timer_controller.domain.retry import RetryPolicy
from timer_controller.domain.task import (
    ClaimBatch,
    ClaimedTask,
    Outcome,
    OutcomeClass,
    Status,
    Transition,
)
from timer_controller.errors import StorageError
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.controller import (
    NO_ANSWER_BEFORE_SHUTDOWN,
    Controller,
    LoopConfig,
)
from timer_controller.runtime.writer import OutcomeWriter

DB_NOW = datetime(2026, 12, 1, 12, 0, 0)
DEADLINE_S = 5.0


def _task(task_id: int, *, delay_s: float = 0.0, attempt: int = 1) -> ClaimedTask:
    return ClaimedTask(
        id=task_id,
        url=f"http://receiver.test/{task_id}",
        due_at=DB_NOW + timedelta(seconds=delay_s),
        attempt=attempt,
        max_attempts=None,
        delay_s=delay_s,
    )


def within(
    tasks: list[ClaimedTask], ahead_limit: int | None, is_ahead: Callable[[ClaimedTask], bool]
) -> list[ClaimedTask]:
    """The claim's ``ahead_limit``, as the repository applies it: the first that many ahead."""
    if ahead_limit is None:
        return tasks
    ahead = [t for t in tasks if is_ahead(t)][:ahead_limit]
    return [t for t in tasks if not is_ahead(t) or t in ahead]


@dataclass
class FakeStore:
    """Hands out queued tasks as claims; keeps what is recorded and released."""

    due: list[ClaimedTask] = field(default_factory=list)
    recorded: list[Transition] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)
    out: dict[int, ClaimedTask] = field(default_factory=dict)
    renewed: list[list[int]] = field(default_factory=list)
    claim_error: BaseException | None = None
    record_error: StorageError | None = None

    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        lease_s: float,
        lookahead_s: float,
        skip_prefixes: Collection[str] = (),
        ahead_limit: int | None = None,
    ) -> ClaimBatch:
        self.limits.append(limit)
        if self.claim_error is not None and not self.due:
            raise self.claim_error
        now = time.monotonic()
        eligible = self._eligible(now, lookahead_s=lookahead_s, skip_prefixes=skip_prefixes)
        eligible = within(eligible[:limit], ahead_limit, lambda t: self._delay_s(t, now) > 0)
        self.due = [t for t in self.due if t not in eligible]
        tasks = [self._claimed(t, now) for t in eligible]
        self.out.update((t.id, t) for t in tasks)
        return ClaimBatch(tasks=tasks, selected_at=now)

    def _eligible(
        self, now: float, *, lookahead_s: float, skip_prefixes: Collection[str]
    ) -> list[ClaimedTask]:
        return [t for t in self.due if url_prefix(t.url) not in skip_prefixes]

    def _delay_s(self, task: ClaimedTask, now: float) -> float:
        return task.delay_s

    def _claimed(self, task: ClaimedTask, now: float) -> ClaimedTask:
        return task

    async def renew(self, *, owner: str, task_ids: Collection[int], lease_s: float) -> int:
        self.renewed.append(sorted(task_ids))
        return len(task_ids)

    async def release(self, *, owner: str, task_ids: Collection[int]) -> int:
        """Handed back: waiting again, claimable by the next claim in due order."""
        self.released.extend(sorted(task_ids))
        self.due += [self.out.pop(i) for i in task_ids if i in self.out]
        self.due.sort(key=lambda t: (t.due_at, t.id))
        return len(task_ids)

    async def record(self, *, owner: str | None, transitions: Sequence[Transition]) -> int:
        if self.record_error is not None:
            raise self.record_error
        self.recorded.extend(transitions)
        return len(transitions)

    def status_of(self, task_id: int) -> list[Status]:
        return [t.status for t in self.recorded if t.task_id == task_id]


@dataclass
class FakeSender:
    """Answers 200 at once, or when a task's gate opens."""

    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    fired: dict[int, float] = field(default_factory=dict)
    in_flight: int = 0
    most_in_flight: int = 0

    async def fire(self, task: ClaimedTask) -> Outcome:
        self.fired[task.id] = time.monotonic()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            gate = self.gates.get(task.id)
            if gate is not None:
                await gate.wait()
        finally:
            self.in_flight -= 1
        return Outcome(task.id, OutcomeClass.SUCCESS, status_code=200, fired_at=DB_NOW)


def _controller(
    store: FakeStore,
    sender: FakeSender,
    *,
    max_in_flight: int = 10,
    batch_size: int = 10,
    shutdown_grace_s: float = 1.0,
    max_attempts: int = 3,
    poll_interval_s: float = 0.01,
) -> Controller:
    metrics = Metrics()
    writer = OutcomeWriter(
        store,
        owner="pod-a",
        flush_interval_s=0.001,
        flush_batch=500,
        retry_number=2,
        reconnect_wait_s=0.001,
        metrics=metrics,
    )
    config = LoopConfig(
        owner="pod-a",
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        poll_interval_s=poll_interval_s,
        lookahead_s=1.0,
        lease_s=60.0,
        shutdown_grace_s=shutdown_grace_s,
        retry_number=2,
        reconnect_wait_s=0.001,
    )
    return Controller(
        store,
        sender,
        writer,
        config,
        retry=RetryPolicy(max_attempts=max_attempts, base_s=1.0, max_s=60.0),
        metrics=metrics,
        db_now=lambda: DB_NOW,
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)  # a poll, not synchronisation


def _run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))


def test_a_claimed_task_waits_for_its_due_time_fires_and_is_recorded() -> None:
    store, sender = FakeStore(due=[_task(1, delay_s=0.05)]), FakeSender()
    controller = _controller(store, sender)

    async def scenario() -> None:
        stop = asyncio.Event()
        started = time.monotonic()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: store.status_of(1) == [Status.DONE], "the outcome to be recorded")
        assert sender.fired[1] - started >= 0.05  # never before it was due
        stop.set()
        assert await running == 0

    _run(scenario)
    assert store.recorded == [Transition(1, 1, Status.DONE, DB_NOW, status_code=200)]
    assert store.released == []


def test_claims_never_take_more_than_the_free_slots() -> None:
    store = FakeStore(due=[_task(i) for i in range(1, 11)])
    sender = FakeSender(gates={i: asyncio.Event() for i in range(1, 11)})
    controller = _controller(store, sender, max_in_flight=4, batch_size=4)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: sender.in_flight == 4, "four requests in flight")
        await asyncio.sleep(0.05)  # loop turns while full: it must not claim
        assert controller.held == 4
        assert len(store.due) == 6
        for gate in sender.gates.values():
            gate.set()
        await _until(lambda: len(store.recorded) == 10, "every task to be recorded")
        stop.set()
        assert await running == 0

    _run(scenario)
    assert sender.most_in_flight == 4
    assert all(limit <= 4 for limit in store.limits)
    assert {t.task_id for t in store.recorded} == set(range(1, 11))


def _holds(controller: Controller, count: int) -> bool:
    return controller.held == count


def test_a_full_loop_wakes_once_a_claims_worth_of_slots_is_free() -> None:
    """Batch 10: a claim waits for 5 free slots, so the 4 before wake nothing."""
    store = FakeStore(due=[_task(i) for i in range(1, 21)])
    sender = FakeSender(gates={i: asyncio.Event() for i in range(1, 21)})
    # A long poll, so the loop turns only when woken (or after 3 s).
    controller = _controller(store, sender, max_in_flight=10, poll_interval_s=3.0)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: sender.in_flight == 10, "ten requests in flight")
        await asyncio.sleep(0.01)  # the loop settles into its wait for slots
        tick = controller.last_tick
        for task_id in range(1, 5):
            sender.gates[task_id].set()
            await _until(functools.partial(_holds, controller, 10 - task_id), f"{task_id} done")
            await asyncio.sleep(0)
        assert controller.last_tick == tick  # four free slots: no turn of the loop
        sender.gates[5].set()
        await _until(lambda: store.limits == [10, 5], "a claim of the five free slots")
        for gate in sender.gates.values():
            gate.set()
        await _until(lambda: len(store.recorded) == 20, "every task to be recorded")
        stop.set()
        assert await running == 0

    _run(scenario)


def test_a_stop_hands_back_unsent_claims_and_lets_in_flight_ones_finish() -> None:
    store = FakeStore(due=[_task(1), _task(2, delay_s=30.0)])
    sender = FakeSender(gates={1: asyncio.Event()})
    controller = _controller(store, sender)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: sender.in_flight == 1, "task 1 in flight")
        stop.set()
        await _until(lambda: store.released == [2], "task 2 handed back")
        assert not running.done()  # still waiting for task 1's answer
        sender.gates[1].set()
        assert await running == 0

    _run(scenario)
    assert store.status_of(1) == [Status.DONE]
    assert store.status_of(2) == []
    assert 2 not in sender.fired


def test_a_writer_that_gives_up_ends_the_loop_with_exit_1() -> None:
    store = FakeStore(due=[_task(1)], record_error=StorageError("server has gone away"))
    controller = _controller(store, FakeSender())

    async def scenario() -> None:
        assert await controller.run(asyncio.Event()) == 1

    _run(scenario)


def test_an_unexpected_error_in_the_loop_still_runs_the_shutdown() -> None:
    store = FakeStore(due=[_task(1, delay_s=30.0)], claim_error=TimeoutError("pool timeout"))
    controller = _controller(store, FakeSender())

    async def scenario() -> None:
        assert await controller.run(asyncio.Event()) == 1

    _run(scenario)
    assert store.released == [1]


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, Status.WAITING), (3, Status.FAILED)], ids=["left", "last"]
)
def test_a_request_unanswered_when_the_grace_ends_counts_as_an_attempt(
    attempt: int, expected: Status
) -> None:
    store = FakeStore(due=[_task(1, attempt=attempt)])
    sender = FakeSender(gates={1: asyncio.Event()})  # never answers
    controller = _controller(store, sender, shutdown_grace_s=0.05, max_attempts=3)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: sender.in_flight == 1, "the request in flight")
        stop.set()
        assert await running == 0

    _run(scenario)
    assert store.released == []
    (recorded,) = store.recorded
    assert (recorded.status, recorded.attempt) == (expected, attempt)
    assert recorded.error == NO_ANSWER_BEFORE_SHUTDOWN
    assert (recorded.next_due_at is not None) == (expected is Status.WAITING)


def test_a_task_claimed_again_while_still_held_keeps_both_slots_apart() -> None:
    """Its lease ran out mid-flight and this pod claimed it again: two attempts,
    two slots; finishing one never frees the other's."""
    store = FakeStore(due=[_task(1, attempt=1)])
    sender = FakeSender(gates={1: asyncio.Event()})
    controller = _controller(store, sender)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: sender.in_flight == 1, "attempt 1 in flight")
        store.due.append(_task(1, attempt=2, delay_s=30.0))
        await _until(lambda: controller.held == 2, "attempt 2 claimed")
        sender.gates[1].set()
        await _until(lambda: store.status_of(1) == [Status.DONE], "attempt 1 recorded")
        assert controller.held == 1  # attempt 2 still holds its slot
        stop.set()
        assert await running == 0

    _run(scenario)
    assert [t.attempt for t in store.recorded] == [1]
    assert store.released == [1]  # attempt 2, never sent


@dataclass
class WindowStore(FakeStore):
    """Claims as the database does: only tasks due within the look-ahead window,
    each with its delay from the claim's moment (monotonic due times)."""

    due_at_s: dict[int, float] = field(default_factory=dict)

    def _eligible(
        self, now: float, *, lookahead_s: float, skip_prefixes: Collection[str]
    ) -> list[ClaimedTask]:
        return [t for t in self.due if self.due_at_s[t.id] <= now + lookahead_s]

    def _delay_s(self, task: ClaimedTask, now: float) -> float:
        return max(0.0, self.due_at_s[task.id] - now)

    def _claimed(self, task: ClaimedTask, now: float) -> ClaimedTask:
        return dataclasses.replace(task, delay_s=self._delay_s(task, now))


def test_a_window_fuller_than_the_look_ahead_room_is_claimed_as_room_frees() -> None:
    """40 tasks due 20 ms apart, a 1.1 s window, room for 15 tasks ahead of time
    (20 slots, 5 kept for due tasks), and a poll interval of 2 s: the claims
    after the first must follow the tasks that start, not the poll interval."""
    store = WindowStore()
    sender = FakeSender()
    controller = _controller(store, sender, max_in_flight=20, poll_interval_s=2.0)

    async def scenario() -> None:
        start = time.monotonic() + 0.05
        store.due = [_task(i) for i in range(1, 41)]
        store.due_at_s = {i: start + i * 0.02 for i in range(1, 41)}
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await _until(lambda: len(sender.fired) == 40, "every task to fire")
        stop.set()
        assert await running == 0
        late = {i: sender.fired[i] - store.due_at_s[i] for i in sender.fired}
        assert min(late.values()) >= 0
        # Without claims as room frees, tasks 16-40 wait for the next poll, 2 s on.
        assert max(late.values()) < 0.25, sorted(late.items(), key=lambda kv: -kv[1])[:3]

    _run(scenario)
