"""The timer store: what the HTTP API (and the dashboard) do to timers.

Statements are built in ``timer_statements.py``; each operation here runs
in one short transaction and turns driver errors into ``StorageError``.
Creates are ORM-enabled Core statements (no ORM objects are loaded).

Idempotency keys: a key names one timer. A create whose key is taken
returns that timer when the stored request hash is the same (a replay) and
raises ``KeyConflict`` when it differs (a key reused for another request).
Two creates racing with one key meet at the unique index: the loser's
INSERT fails with a duplicate key, and it then reads the winner's row.

The records and new timers are ``timer_records.py``'s (named here too, for
the rooms that use the store); how rows are inserted is ``timer_inserts.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine, text

from timer_controller.db.errors import storage_operation
from timer_controller.db.timer_inserts import decided_of, holders, insert, insert_pipelined
from timer_controller.db.timer_records import (
    BatchCreated,
    Created,
    KeyConflict,
    NewTimer,
    NotConsecutive,
    Outcome,
    TimerPage,
    TimerRecord,
    Transition,
    to_record,
)
from timer_controller.db.timer_statements import (
    CANCEL_TIMER,
    RESCHEDULE_TIMER,
    SELECT_TIMER,
    due_params,
    select_page,
)
from timer_controller.errors import StorageError, StorageUnavailable

__all__ = [
    "BatchCreated",
    "Created",
    "KeyConflict",
    "NewTimer",
    "Outcome",
    "TimerPage",
    "TimerRecord",
    "TimerStore",
    "Transition",
    "to_record",
]

log = logging.getLogger(__name__)

DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
#: Creates that lose a key race read the winner; a winner deleted meanwhile
#: (retention) frees the key, and the create runs again.
_KEY_RACE_TRIES = 3

#: No bound on a multi-row INSERT's rows but its size (``timer_inserts._chunks``).
_ANY_ROWS = 1 << 30

P = ParamSpec("P")
R = TypeVar("R")


class _Taken:
    """Chunks of timers taken once from ``chunks``, and kept, so that another go
    (a lock victim's, a lost key race's) starts from every timer taken so far."""

    def __init__(self, chunks: Iterable[Sequence[NewTimer]]) -> None:
        self._rest = iter(chunks)
        self.taken: list[NewTimer] = []

    def __iter__(self) -> Iterator[Sequence[NewTimer]]:
        if self.taken:
            yield list(self.taken)
        for chunk in self._rest:
            self.taken += chunk
            yield chunk


class _Sorter:
    """Sorts a batch's timers into those to insert, replays and key conflicts."""

    def __init__(self, holders: dict[str | None, TimerRecord]) -> None:
        self._holders = holders
        self.replayed: dict[int, TimerRecord] = {}
        self._conflicts: dict[int, TimerRecord] = {}

    def fresh(self, chunks: Iterable[Sequence[NewTimer]]) -> Iterator[Sequence[NewTimer]]:
        """Each chunk's timers to insert; none after a conflict (the chunks are still taken)."""
        index = 0
        for chunk in chunks:
            fresh = chunk
            if self._holders:
                fresh = []
                for offset, timer in enumerate(chunk):
                    holder = self._holders.get(timer.idempotency_key)
                    if holder is None:
                        fresh.append(timer)
                    elif holder.idempotency_hash == timer.idempotency_hash:
                        self.replayed[index + offset] = holder
                    else:
                        self._conflicts[index + offset] = holder
            index += len(chunk)
            if fresh and not self._conflicts:
                yield fresh

    def raise_conflicts(self) -> None:
        if self._conflicts:
            raise KeyConflict(self._conflicts)


class TimerStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- reads ---------------------------------------------------------------

    @storage_operation
    def get(self, *, timer_id: int) -> TimerRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(SELECT_TIMER, {"timer_id": timer_id}).one_or_none()
        return None if row is None else to_record(row)

    @storage_operation
    def list_page(
        self,
        *,
        status: str | None = None,
        idempotency_key: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> TimerPage:
        """Up to ``limit`` timers with ids above ``after_id``, in id order."""
        statement = select_page(
            status=status, idempotency_key=idempotency_key, after_id=after_id, limit=limit + 1
        )
        with self._engine.connect() as conn:
            rows = conn.execute(statement).all()
        timers = [to_record(row) for row in rows[:limit]]
        more = len(rows) > limit
        return TimerPage(timers=timers, next_after_id=timers[-1].id if more else None)

    @storage_operation
    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- creates -------------------------------------------------------------

    @storage_operation
    def create(self, *, timer: NewTimer) -> Created:
        """Insert one timer, or find the one its idempotency key already names.

        Raises KeyConflict (index 0) when the key names a different request's timer.
        """
        return self.create_many(timers=[timer])[0]

    @storage_operation
    def create_many(self, *, timers: Sequence[NewTimer]) -> list[Created]:
        """Insert all of ``timers`` in one transaction, in order, or none of them.

        A timer whose key is taken by the same request is not inserted again:
        its entry is the existing timer. Raises KeyConflict naming every
        index whose key is taken by another request; nothing is inserted then.
        """
        keys = [t.idempotency_key for t in timers if t.idempotency_key is not None]
        if len(set(keys)) != len(keys):
            raise ValueError("an idempotency key appears twice in one batch")
        return self.create_batch(chunks=[timers], keys=keys).created()

    def create_batch(
        self, *, chunks: Iterable[Sequence[NewTimer]], keys: Sequence[str]
    ) -> BatchCreated:
        """``create_many`` of the timers ``chunks`` hold, taking each chunk as the last is inserted.

        ``chunks`` is taken lazily, within the one transaction: the caller may
        check each chunk as it is taken, and what it raises rolls everything back
        and leaves from here (so a late chunk's problem still inserts nothing).
        ``keys`` are every idempotency key the timers hold (read before any
        insert); a key outside them is taken to be free. On MariaDB the
        database inserts one chunk while the next is checked and rendered
        (``insert_pipelined``). Raises KeyConflict as create_many does, once
        ``chunks`` is exhausted.
        """
        source = _Taken(chunks)
        max_rows = _ANY_ROWS
        for attempt in range(1, _KEY_RACE_TRIES + 1):
            try:
                return self._create_batch(source, keys, max_rows=max_rows)
            except NotConsecutive:
                log.warning("multi-row INSERT ids were not consecutive; inserting row by row")
                max_rows = 1
            except StorageError as exc:
                if exc.code != DUPLICATE_KEY or not keys or attempt == _KEY_RACE_TRIES:
                    raise
                log.info("idempotency key race lost (try %d); reading the winner", attempt)
        return self._create_batch(source, keys, max_rows=1)

    @storage_operation
    def _create_batch(self, source: _Taken, keys: Sequence[str], *, max_rows: int) -> BatchCreated:
        with self._engine.begin() as conn:
            sorter = _Sorter(holders(conn, keys))
            fresh = sorter.fresh(source)
            if conn.dialect.insert_returning:
                decided = insert_pipelined(conn, fresh, max_rows=max_rows)
            else:
                timers = [timer for chunk in fresh for timer in chunk]
                decided = list(map(decided_of, insert(conn, timers, max_rows=max_rows)))
            sorter.raise_conflicts()
        return BatchCreated(list(source.taken), decided, sorter.replayed)

    def create_each(self, *, timers: Sequence[NewTimer]) -> list[Outcome]:
        """``create`` for each timer, as if called one after another: one transaction if it can.

        Each entry is what ``create`` would return, or the KeyConflict or
        StorageError it would raise; StorageUnavailable is raised, for all.
        Unrelated callers' creates go together, so one's failure never fails
        another's: when the shared
        transaction fails (a key raced in from elsewhere, a value the server
        refuses), each timer is created on its own. A key that repeats within
        ``timers`` is settled after its first use, as a later ``create`` would be.
        """
        firsts: dict[str, int] = {}
        shared, later = [], []
        for index, timer in enumerate(timers):
            key = timer.idempotency_key
            if key is not None and firsts.setdefault(key, index) != index:
                later.append(index)
            else:
                shared.append(index)
        results: dict[int, Outcome] = {}
        try:
            answers = self._create_shared([timers[i] for i in shared], list(firsts))
        except StorageUnavailable:
            raise
        except (StorageError, NotConsecutive) as exc:
            log.info("a group of %d creates failed together (%s); one by one", len(shared), exc)
            later = shared + later
        else:
            results.update(zip(shared, answers, strict=True))
        for index in sorted(later):
            results[index] = self._create_alone(timers[index])
        return [results[index] for index in range(len(timers))]

    def _create_alone(self, timer: NewTimer) -> Outcome:
        try:
            return self.create(timer=timer)
        except StorageUnavailable:
            raise
        except (KeyConflict, StorageError) as exc:
            return exc

    @storage_operation
    def _create_shared(
        self, timers: Sequence[NewTimer], keys: Sequence[str]
    ) -> list[Created | KeyConflict]:
        """Timers with distinct keys in one transaction; a key taken answers for its own."""
        answers: list[Created | KeyConflict | None] = []
        with self._engine.begin() as conn:
            found = holders(conn, keys)
            for timer in timers:
                holder = found.get(timer.idempotency_key) if timer.idempotency_key else None
                if holder is None:
                    answers.append(None)
                elif holder.idempotency_hash == timer.idempotency_hash:
                    answers.append(Created(holder, created=False))
                else:
                    answers.append(KeyConflict({0: holder}))
            fresh = [t for t, answer in zip(timers, answers, strict=True) if answer is None]
            records = iter(insert(conn, fresh, max_rows=len(fresh) or 1))
        return [Created(next(records), created=True) if a is None else a for a in answers]

    # -- changes -------------------------------------------------------------

    @storage_operation
    def cancel(self, *, timer_id: int) -> Transition:
        """A waiting timer becomes ``cancelled``; any other is left as it is."""
        with self._engine.begin() as conn:
            applied = bool(conn.execute(CANCEL_TIMER, {"timer_id": timer_id}).rowcount)
            row = conn.execute(SELECT_TIMER, {"timer_id": timer_id}).one_or_none()
        return Transition(timer=None if row is None else to_record(row), applied=applied)

    @storage_operation
    def reschedule(
        self, *, timer_id: int, due_at: datetime | None = None, delay_s: float | None = None
    ) -> Transition:
        """A waiting timer becomes due at ``due_at`` (naive UTC) or ``delay_s`` from now."""
        if (due_at is None) == (delay_s is None):
            raise ValueError("reschedule needs exactly one of due_at and delay_s")
        params = {"timer_id": timer_id, **due_params(due_at=due_at, delay_s=delay_s)}
        with self._engine.begin() as conn:
            applied = bool(conn.execute(RESCHEDULE_TIMER, params).rowcount)
            row = conn.execute(SELECT_TIMER, {"timer_id": timer_id}).one_or_none()
        return Transition(timer=None if row is None else to_record(row), applied=applied)
