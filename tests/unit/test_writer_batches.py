"""How the outcome writer groups outcomes into writes (``runtime/writer.py``).

Outcomes fired here wait FLUSH_INTERVAL from the first for company; outcomes
that came as broker messages (each with an ack to run after the commit) wait
up to ``acked_linger_s`` for a full batch, since their queue holds them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from tests.unit.test_controller_loop import _run, _until
from timer_controller.domain.task import Status, Transition
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.writer import OutcomeWriter

INTERVAL_S = 0.01
#: Far longer than any test waits: a batch that needed it would time the test out.
FOREVER_S = 600.0


@dataclass
class BatchStore:
    writes: list[list[int]] = field(default_factory=list)

    async def record(self, *, owner: str | None, transitions: Sequence[Transition]) -> int:
        self.writes.append([t.task_id for t in transitions])
        return len(transitions)


def _done(task_id: int) -> Transition:
    return Transition(task_id, 1, Status.DONE, fired_at=None, status_code=200)


def _writer(store: BatchStore, *, batch: int, acked_linger_s: float | None) -> OutcomeWriter:
    return OutcomeWriter(
        store,
        owner=None,
        flush_interval_s=INTERVAL_S,
        flush_batch=batch,
        retry_number=2,
        reconnect_wait_s=0.001,
        metrics=Metrics(),
        acked_linger_s=acked_linger_s,
    )


async def _ack() -> None:
    return None


Feed = Callable[[OutcomeWriter], Awaitable[None]]


def _writes(*, batch: int, acked_linger_s: float, feed: Feed) -> list[list[int]]:
    """Run the writer while ``feed`` adds outcomes; the task ids of each write, once one is made."""
    store = BatchStore()
    writer = _writer(store, batch=batch, acked_linger_s=acked_linger_s)

    async def scenario() -> None:
        running = asyncio.create_task(writer.run())
        await feed(writer)
        await _until(lambda: bool(store.writes), "a write")
        writer.close()
        await running

    _run(scenario)
    return store.writes


def test_acked_outcomes_arriving_slower_than_the_flush_interval_fill_one_write() -> None:
    async def feed(writer: OutcomeWriter) -> None:
        for task_id in range(1, 6):
            writer.add(_done(task_id), on_commit=_ack)
            await asyncio.sleep(3 * INTERVAL_S)  # outcome messages come apart

    assert _writes(batch=5, acked_linger_s=FOREVER_S, feed=feed) == [[1, 2, 3, 4, 5]]


def test_outcomes_fired_here_are_written_after_the_flush_interval_as_before() -> None:
    async def feed(writer: OutcomeWriter) -> None:
        writer.add(_done(1))

    assert _writes(batch=5, acked_linger_s=FOREVER_S, feed=feed) == [[1]]


def test_a_lone_acked_outcome_is_written_once_the_linger_is_over() -> None:
    async def feed(writer: OutcomeWriter) -> None:
        writer.add(_done(1), on_commit=_ack)

    assert _writes(batch=500, acked_linger_s=5 * INTERVAL_S, feed=feed) == [[1]]


def test_an_outcome_fired_here_joining_acked_ones_is_not_held_by_their_linger() -> None:
    async def feed(writer: OutcomeWriter) -> None:
        writer.add(_done(1), on_commit=_ack)
        await asyncio.sleep(2 * INTERVAL_S)
        writer.add(_done(2))

    assert _writes(batch=500, acked_linger_s=FOREVER_S, feed=feed) == [[1, 2]]
