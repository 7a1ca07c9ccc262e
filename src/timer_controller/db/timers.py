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
from collections.abc import Sequence
from datetime import datetime
from typing import ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, text

from timer_controller.db.errors import storage_operation
from timer_controller.db.timer_inserts import holders, insert
from timer_controller.db.timer_records import (
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

P = ParamSpec("P")
R = TypeVar("R")


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
        max_rows = len(timers) or 1
        for attempt in range(1, _KEY_RACE_TRIES + 1):
            try:
                return self._create_all(timers, keys, max_rows=max_rows)
            except NotConsecutive:
                log.warning("multi-row INSERT ids were not consecutive; inserting row by row")
                max_rows = 1
            except StorageError as exc:
                if exc.code != DUPLICATE_KEY or not keys or attempt == _KEY_RACE_TRIES:
                    raise
                log.info("idempotency key race lost (try %d); reading the winner", attempt)
        return self._create_all(timers, keys, max_rows=1)

    @storage_operation
    def _create_all(
        self, timers: Sequence[NewTimer], keys: Sequence[str], *, max_rows: int
    ) -> list[Created]:
        with self._engine.begin() as conn:
            existing = self._taken(conn, timers, keys)
            fresh = [t for t in timers if t.idempotency_key not in existing]
            records = iter(insert(conn, fresh, max_rows=max_rows))
        return [
            Created(existing[t.idempotency_key], created=False)
            if t.idempotency_key in existing
            else Created(next(records), created=True)
            for t in timers
        ]

    def _taken(
        self, conn: Connection, timers: Sequence[NewTimer], keys: Sequence[str]
    ) -> dict[str | None, TimerRecord]:
        """Timers already holding ``keys``; KeyConflict when any was another request's."""
        found = holders(conn, keys)
        conflicts = {
            index: found[t.idempotency_key]
            for index, t in enumerate(timers)
            if t.idempotency_key in found
            and found[t.idempotency_key].idempotency_hash != t.idempotency_hash
        }
        if conflicts:
            raise KeyConflict(conflicts)
        return dict(found)

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
