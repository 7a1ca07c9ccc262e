"""Retention against the real database: what goes, what stays, in small batches,
one purger at a time, and claims carry on meanwhile."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import URL

from tests.support.databases import TestDatabase, fresh_database
from tests.support.waiting import wait_until
from timer_controller.db.clock import DbClock
from timer_controller.db.facade import AsyncStorage
from timer_controller.db.repository import TaskRepository
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime import upkeep as upkeep_module
from timer_controller.runtime.upkeep import Upkeep, UpkeepConfig

HOUR_S = 3600.0
# Generous: the machine is shared; a claim stuck behind a lock would wait 50 s.
DEADLINE_S = 20.0
# The retention lock is server-wide: other test databases' purges may hold it a while.
LOCK_WAIT_S = 60.0


# -- helpers -----------------------------------------------------------------


def insert_tasks(
    db: TestDatabase,
    count: int,
    *,
    status: str = "waiting",
    finished_ago_s: float | None = None,
    due_ago_s: float = 1.0,
) -> list[int]:
    """Plain-SQL rows; finished ones get ``finished_at`` this far in the past."""
    ids: list[int] = []
    with db.engine.begin() as conn:
        for _ in range(count):
            result = conn.execute(
                text(
                    "INSERT INTO tasks (url, due_at) "
                    "VALUES ('http://127.0.0.1:9/x', UTC_TIMESTAMP(6) - INTERVAL :due SECOND)"
                ),
                {"due": due_ago_s},
            )
            ids.append(int(result.lastrowid))
        if status != "waiting" or finished_ago_s is not None:
            conn.execute(
                text(
                    "UPDATE tasks SET status = :status, finished_at = "
                    "CASE WHEN :ago IS NULL THEN NULL "
                    "ELSE UTC_TIMESTAMP(6) - INTERVAL :ago SECOND END "
                    "WHERE id BETWEEN :lo AND :hi"
                ),
                {"status": status, "ago": finished_ago_s, "lo": ids[0], "hi": ids[-1]},
            )
    return ids


def existing(engine: Engine, ids: list[int]) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id FROM tasks WHERE id BETWEEN :lo AND :hi"),
            {"lo": min(ids), "hi": max(ids)},
        )
        return {int(row.id) for row in rows} & set(ids)


def count_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM tasks")).scalar_one())


def never_pause() -> bool:
    return True


def purge(
    repo: TaskRepository,
    *,
    batch_size: int,
    older_than_s: float = HOUR_S,
    pause: Callable[[], bool] = never_pause,
) -> int:
    """``purge_finished`` in this test's own database, whose lock is its own."""
    result = repo.purge_finished(older_than_s=older_than_s, batch_size=batch_size, pause=pause)
    assert result is not None, "the retention lock of this database was taken"
    return result


@contextmanager
def deletes_seen(engine: Engine) -> Iterator[list[int]]:
    """Rows deleted by each DELETE the engine runs while the block runs."""
    deleted: list[int] = []

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deleted.append(int(cursor.rowcount))

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield deleted
    finally:
        event.remove(engine, "after_cursor_execute", after)


class HeldPurge:
    """``purge_finished`` on a thread whose pause blocks until the test lets it go."""

    def __init__(self, repo: TaskRepository, *, older_than_s: float, batch_size: int) -> None:
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.pauses = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="held-purge")
        self.result: Future[int] = self._pool.submit(
            purge, repo, older_than_s=older_than_s, batch_size=batch_size, pause=self._pause
        )

    def _pause(self) -> bool:
        self.pauses += 1
        self.paused.set()
        if not self.resume.wait(60):
            raise TimeoutError("the test never let the purge go on")
        return True

    def wait_paused(self) -> None:
        wait_until(
            lambda: self.paused.is_set() or self.result.done(),
            timeout_s=LOCK_WAIT_S,
            what="the purge to pause between batches",
        )
        assert not self.result.done(), f"purge ended instead of pausing: {self.result.result()}"

    def finish(self) -> int:
        self.resume.set()
        try:
            return self.result.result(timeout=60)
        finally:
            self._pool.shutdown()


@pytest.fixture
def repo(db: TestDatabase) -> TaskRepository:
    return TaskRepository(db.engine)


# -- what goes, what stays ------------------------------------------------------


def test_purge_deletes_old_finished_rows_and_keeps_young_and_waiting_ones(
    db: TestDatabase, repo: TaskRepository
) -> None:
    old_finished = (
        insert_tasks(db, 4, status="done", finished_ago_s=2 * HOUR_S)
        + insert_tasks(db, 3, status="failed", finished_ago_s=2 * HOUR_S)
        + insert_tasks(db, 2, status="cancelled", finished_ago_s=2 * HOUR_S)
    )
    young_finished = insert_tasks(db, 2, status="done", finished_ago_s=600) + insert_tasks(
        db, 1, status="failed", finished_ago_s=600
    )
    ancient_waiting = insert_tasks(db, 3, due_ago_s=365 * 24 * HOUR_S)
    # A row put back to waiting by hand still carries an old finish time: it must stay.
    requeued = insert_tasks(db, 1, status="waiting", finished_ago_s=2 * HOUR_S)
    old_claimed = insert_tasks(db, 1, status="claimed", due_ago_s=3 * HOUR_S)

    deleted = purge(repo, batch_size=4)

    assert deleted == len(old_finished)
    assert existing(db.engine, old_finished) == set()
    kept = young_finished + ancient_waiting + requeued + old_claimed
    assert existing(db.engine, kept) == set(kept)
    assert count_rows(db.engine) == len(kept)
    # Nothing left to do: a second run deletes nothing.
    assert purge(repo, batch_size=4) == 0


def test_purge_deletes_in_batches_with_a_pause_between_them(
    db: TestDatabase, repo: TaskRepository
) -> None:
    rows, batch = 23, 5
    old = insert_tasks(db, rows, status="done", finished_ago_s=2 * HOUR_S)
    pauses: list[int] = []

    def pause() -> bool:
        pauses.append(len(existing(db.engine, old)))
        return True

    with deletes_seen(db.engine) as deletes:
        assert purge(repo, batch_size=batch, pause=pause) == rows

    assert deletes == [5, 5, 5, 5, 3]
    # A pause after every full batch; each batch is committed before it (others see it gone).
    assert len(pauses) == rows // batch
    assert pauses == [18, 13, 8, 3]


def test_a_pause_that_returns_false_stops_the_purge(db: TestDatabase, repo: TaskRepository) -> None:
    old = insert_tasks(db, 12, status="failed", finished_ago_s=2 * HOUR_S)
    assert purge(repo, batch_size=5, pause=lambda: False) == 5
    assert len(existing(db.engine, old)) == 7


# -- one purger at a time, claims never wait --------------------------------------


def test_a_second_purge_while_the_first_holds_the_lock_returns_none(
    db: TestDatabase, repo: TaskRepository
) -> None:
    old = insert_tasks(db, 6, status="done", finished_ago_s=2 * HOUR_S)
    held = HeldPurge(repo, older_than_s=HOUR_S, batch_size=2)
    try:
        held.wait_paused()
        other_pod = TaskRepository(db.engine)
        assert (
            other_pod.purge_finished(older_than_s=HOUR_S, batch_size=2, pause=never_pause) is None
        )
        assert len(existing(db.engine, old)) == 4  # the second purge deleted nothing
    finally:
        first = held.finish()
    assert first == 6
    # The lock was released: the next purge runs (and finds nothing left).
    assert purge(repo, batch_size=2) == 0


def test_the_lock_is_released_when_a_purge_fails(db: TestDatabase, repo: TaskRepository) -> None:
    insert_tasks(db, 4, status="done", finished_ago_s=2 * HOUR_S)

    def broken_pause() -> bool:
        raise RuntimeError("pause failed")

    with pytest.raises(RuntimeError, match="pause failed"):
        purge(repo, batch_size=2, pause=broken_pause)
    assert purge(repo, batch_size=2) == 2


def test_claiming_goes_on_while_a_purge_is_running(db: TestDatabase, repo: TaskRepository) -> None:
    old = insert_tasks(db, 300, status="done", finished_ago_s=2 * HOUR_S)
    due = insert_tasks(db, 3)
    held = HeldPurge(repo, older_than_s=HOUR_S, batch_size=20)
    claims = ThreadPoolExecutor(1, thread_name_prefix="claimer")
    try:
        held.wait_paused()
        claimer = TaskRepository(db.engine)
        claimed = claims.submit(
            claimer.claim_due, owner="pod-b", limit=10, lease_s=60, lookahead_s=0
        ).result(timeout=DEADLINE_S)
        assert [task.id for task in claimed.tasks] == due
        # New timers keep arriving and are claimed too.
        late = insert_tasks(db, 2)
        claimed = claims.submit(
            claimer.claim_due, owner="pod-b", limit=10, lease_s=60, lookahead_s=0
        ).result(timeout=DEADLINE_S)
        assert [task.id for task in claimed.tasks] == late
        # The first batch is already committed: no long transaction hides it.
        assert len(existing(db.engine, old)) == 280
        assert not held.result.done()
    finally:
        claims.shutdown()
        deleted = held.finish()
    assert deleted == 300
    assert held.pauses == 300 // 20
    assert existing(db.engine, due + late) == set(due + late)


def test_the_retention_lock_only_excludes_purgers_of_the_same_database(
    db: TestDatabase, repo: TaskRepository, db_server: URL
) -> None:
    insert_tasks(db, 4, status="done", finished_ago_s=2 * HOUR_S)
    held = HeldPurge(repo, older_than_s=HOUR_S, batch_size=2)
    try:
        held.wait_paused()
        with fresh_database(db_server) as neighbour:
            insert_tasks(neighbour, 3, status="done", finished_ago_s=2 * HOUR_S)
            deleted = TaskRepository(neighbour.engine).purge_finished(
                older_than_s=HOUR_S, batch_size=2, pause=never_pause
            )
    finally:
        held.finish()
    assert deleted == 3


# -- Upkeep, the controller's retention chore ----------------------------------------


def test_upkeep_purge_deletes_old_finished_rows_and_logs_it(
    db: TestDatabase, repo: TaskRepository, caplog: pytest.LogCaptureFixture
) -> None:
    old = insert_tasks(db, 6, status="done", finished_ago_s=2 * HOUR_S) + insert_tasks(
        db, 4, status="failed", finished_ago_s=2 * HOUR_S
    )
    kept = insert_tasks(db, 2, status="done", finished_ago_s=60) + insert_tasks(
        db, 2, due_ago_s=30 * 24 * HOUR_S
    )
    chores = _upkeep(repo, Metrics(), retention_s=HOUR_S, cleanup_batch=3, sample_backlog=False)

    with caplog.at_level(logging.INFO, logger="timer_controller.runtime.upkeep"):
        # Retried while another test database's purge holds the server-wide lock.
        first = wait_until(
            lambda: asyncio.run(chores.purge()),
            timeout_s=LOCK_WAIT_S,
            what="the retention lock",
            interval_s=0.1,
        )
        assert first == len(old)

    assert existing(db.engine, old) == set()
    assert existing(db.engine, kept) == set(kept)
    assert any("retention deleted 10 finished tasks" in r.getMessage() for r in caplog.records)


class CountingRepository(TaskRepository):
    """The real repository, counting the chores' calls."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.purges = 0
        self.backlog_samples = 0

    def purge_finished(
        self, *, older_than_s: float, batch_size: int, pause: Callable[[], bool]
    ) -> int | None:
        self.purges += 1
        return super().purge_finished(older_than_s=older_than_s, batch_size=batch_size, pause=pause)

    def count_backlog(self) -> int:
        self.backlog_samples += 1
        return super().count_backlog()


async def _wait_for(
    condition: Callable[[], object], what: str, timeout_s: float = DEADLINE_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)  # a poll interval, not synchronisation


def _upkeep(
    repo: TaskRepository,
    metrics: Metrics,
    *,
    retention_s: float,
    cleanup_batch: int,
    sample_backlog: bool,
) -> Upkeep:
    config = UpkeepConfig(
        lease_s=60.0,
        max_attempts=3,
        retention_s=retention_s,
        cleanup_batch=cleanup_batch,
        sample_backlog=sample_backlog,
    )
    return Upkeep(AsyncStorage(repo, DbClock()), metrics, config)


@pytest.fixture
def quick_upkeep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chores every few tens of ms instead of every minute / 10 s."""
    monkeypatch.setattr(upkeep_module, "RETENTION_EVERY_S", 0.2)
    monkeypatch.setattr(upkeep_module, "BACKLOG_EVERY_S", 0.05)


@pytest.mark.usefixtures("quick_upkeep")
def test_upkeep_run_purges_and_samples_the_backlog_until_stopped(db: TestDatabase) -> None:
    old = insert_tasks(db, 7, status="done", finished_ago_s=2 * HOUR_S)
    due = insert_tasks(db, 3)
    insert_tasks(db, 1, due_ago_s=-HOUR_S)  # not due yet: not backlog
    repo = CountingRepository(db.engine)
    metrics = Metrics()
    chores = _upkeep(repo, metrics, retention_s=HOUR_S, cleanup_batch=2, sample_backlog=True)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(chores.run(stop))
        await _wait_for(
            lambda: not existing(db.engine, old), "retention to delete the old rows", LOCK_WAIT_S
        )
        await _wait_for(
            lambda: metrics.registry.get_sample_value("timer_backlog_tasks") == len(due),
            "the backlog gauge",
        )
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)

    asyncio.run(scenario())
    assert repo.purges >= 1
    assert existing(db.engine, due) == set(due)


@pytest.mark.usefixtures("quick_upkeep")
def test_upkeep_with_retention_zero_never_purges(db: TestDatabase) -> None:
    old = insert_tasks(db, 3, status="done", finished_ago_s=400 * 24 * HOUR_S)
    repo = CountingRepository(db.engine)
    chores = _upkeep(repo, Metrics(), retention_s=0, cleanup_batch=2, sample_backlog=True)

    async def scenario() -> None:
        stop = asyncio.Event()
        started = time.monotonic()
        running = asyncio.create_task(chores.run(stop))
        # Several turns of the loop, past the time a purge would first have run.
        await _wait_for(
            lambda: (
                repo.backlog_samples >= 5
                and time.monotonic() > started + upkeep_module.RETENTION_EVERY_S
            ),
            "the chores loop to turn",
        )
        stop.set()
        await asyncio.wait_for(running, DEADLINE_S)

    asyncio.run(scenario())
    assert repo.purges == 0
    assert existing(db.engine, old) == set(old)


@pytest.mark.usefixtures("quick_upkeep")
def test_stopping_upkeep_interrupts_a_long_purge_between_batches(db: TestDatabase) -> None:
    old = insert_tasks(db, 200, status="done", finished_ago_s=2 * HOUR_S)
    first_pause = threading.Event()
    stopped = threading.Event()

    class PausingRepository(TaskRepository):
        def purge_finished(
            self, *, older_than_s: float, batch_size: int, pause: Callable[[], bool]
        ) -> int | None:
            def watched_pause() -> bool:
                if not first_pause.is_set():
                    first_pause.set()
                    stopped.wait(DEADLINE_S)
                return pause()

            return super().purge_finished(
                older_than_s=older_than_s, batch_size=batch_size, pause=watched_pause
            )

    chores = _upkeep(
        PausingRepository(db.engine),
        Metrics(),
        retention_s=HOUR_S,
        cleanup_batch=10,
        sample_backlog=False,
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(chores.run(stop))
        await _wait_for(first_pause.is_set, "the first batch of the purge")
        stop.set()
        stopped.set()
        await asyncio.wait_for(running, 60)

    asyncio.run(scenario())
    # Stopped between batches: most old rows are still there for the next run.
    assert len(existing(db.engine, old)) > 100
