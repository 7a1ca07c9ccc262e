"""Every database operation the controller and the CLI run, as named intentions.

Statements are built in ``statements.py``; this module runs them, one short
transaction each.

The hot paths (claim, record, release, sweep) use ORM-enabled Core
statements that select columns and update in bulk: loading ORM objects
costs about seven times as much. All "now"s are the database's clock.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    Engine,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from timer_controller.db.clock import utc_now
from timer_controller.db.models import ERROR_MAX_CHARS, Task
from timer_controller.db.setup import error_code
from timer_controller.db.statements import (
    RETENTION_LOCK,
    claim_statement,
    per_row,
    plus_s,
    sweep_statement,
    utc_now_sql,
)
from timer_controller.domain.task import FINISHED_STATUSES, ClaimedTask, Status

log = logging.getLogger(__name__)

_NO_SYNC = {"synchronize_session": False}
# Outcome writes carry per-row values in their SQL text, so each is compiled
# once and never again: caching them would fill SQLAlchemy's statement cache
# with dead entries that the garbage collector then keeps walking.
_ONE_OFF = {"synchronize_session": False, "compiled_cache": None}
# InnoDB may pick one of two transactions touching the same index pages as a
# deadlock victim (claims and outcome writes both move rows between status
# prefixes of one index). The victim's work was rolled back whole, so it is
# simply run again, at once, instead of being treated as a lost database.
_RETRYABLE_LOCK_ERRORS = frozenset({1213, 1205})  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
_LOCK_RETRIES = 5

P = ParamSpec("P")
R = TypeVar("R")


def _retry_lock_conflicts(work: Callable[P, R]) -> Callable[P, R]:
    """Run a one-transaction repository method again when InnoDB rolls it back."""

    @functools.wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, _LOCK_RETRIES + 1):
            try:
                return work(*args, **kwargs)
            except OperationalError as exc:
                code = error_code(exc)
                if code not in _RETRYABLE_LOCK_ERRORS or attempt == _LOCK_RETRIES:
                    raise
                log.info("%s: lock conflict (%s), running it again", work.__name__, code)
        raise AssertionError("unreachable")

    return run


@dataclass(frozen=True, slots=True)
class ClaimResult:
    tasks: list[ClaimedTask]
    #: The database's clock while the claim ran; None when nothing was claimed.
    db_now: datetime | None = None
    #: Local UTC just before the SELECT: the database read ``db_now`` after it.
    local_before: datetime | None = None
    #: ``time.monotonic()`` just after the SELECT: the database read ``db_now`` before it.
    selected_at: float = 0.0
    #: How long the SELECT took: the uncertainty of pairing ``db_now`` with ``local_before``.
    select_s: float = 0.0


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """What to write for one finished attempt; ``status`` picks the statement."""

    task_id: int
    status: Status  # DONE, FAILED, or WAITING for a retry
    fired_at: datetime | None
    status_code: int | None = None
    error: str | None = None
    #: For a retry: when to try next (database clock).
    next_due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskView:
    id: int
    url: str
    method: str | None
    status: str
    due_at: datetime
    attempts: int
    max_attempts: int | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    fired_at: datetime | None
    finished_at: datetime | None
    owner: str | None


@dataclass(frozen=True, slots=True)
class Stats:
    by_status: dict[str, int]
    oldest_due_waiting: datetime | None
    finished_last_minute: int
    db_now: datetime


class TaskRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._engine = engine

    # -- the claim loop's hot paths ---------------------------------------

    @_retry_lock_conflicts
    def claim_due(
        self, *, owner: str, limit: int, lease_s: float, lookahead_s: float
    ) -> ClaimResult:
        """Claim up to ``limit`` waiting tasks due within ``lookahead_s``, oldest first.

        One short transaction: lock with SKIP LOCKED so concurrent pods get
        disjoint rows, write owner and lease, commit. The lease runs from the
        later of now and ``due_at``, so a look-ahead wait is covered.
        """
        now = utc_now_sql()
        with self._sessions() as session, session.begin():
            local_before, started = utc_now(), time.monotonic()
            rows = session.execute(claim_statement(limit=limit, lookahead_s=lookahead_s)).all()
            selected_at = time.monotonic()
            if not rows:
                return ClaimResult(tasks=[])
            session.execute(
                update(Task)
                .where(Task.id.in_([row.id for row in rows]))
                .values(
                    status=Status.CLAIMED.value,
                    owner=owner,
                    lease_expires_at=plus_s(func.greatest(Task.due_at, now), lease_s),
                    attempts=Task.attempts + 1,
                ),
                execution_options=_NO_SYNC,
            )
        db_now: datetime = rows[0].db_now
        tasks = [
            ClaimedTask(
                id=row.id,
                url=row.url,
                due_at=row.due_at,
                attempt=row.attempts + 1,
                max_attempts=row.max_attempts,
                method=row.method,
                headers=row.headers,
                body=row.body,
                delay_s=max(0.0, (row.due_at - db_now).total_seconds()),
            )
            for row in rows
        ]
        return ClaimResult(
            tasks=tasks,
            db_now=db_now,
            local_before=local_before,
            selected_at=selected_at,
            select_s=selected_at - started,
        )

    @_retry_lock_conflicts
    def record_outcomes(self, *, owner: str, outcomes: Sequence[OutcomeRecord]) -> int:
        """Write a batch of outcomes: one UPDATE per kind, one transaction.

        Only rows this process still holds are written: if the lease expired
        and another pod took the task, that pod's outcome is the one kept.
        """
        by_status: dict[Status, list[OutcomeRecord]] = {}
        for record in outcomes:
            by_status.setdefault(record.status, []).append(record)
        written = 0
        with self._sessions() as session, session.begin():
            for status, records in by_status.items():
                written += self._write_kind(session, owner, status, records)
        return written

    def _write_kind(
        self, session: Session, owner: str, status: Status, records: list[OutcomeRecord]
    ) -> int:
        ids = [r.task_id for r in records]
        values: dict[str, Any] = {
            "status": status.value,
            "owner": None,
            "lease_expires_at": None,
            "fired_at": per_row({r.task_id: r.fired_at for r in records}),
            "last_status_code": per_row({r.task_id: r.status_code for r in records}),
            "last_error": per_row(
                {r.task_id: (r.error or None) and r.error[:ERROR_MAX_CHARS] for r in records}
            ),
        }
        if status is Status.WAITING:
            values["due_at"] = per_row({r.task_id: r.next_due_at for r in records})
        else:
            values["finished_at"] = utc_now_sql()
        result = session.execute(
            update(Task)
            .where(Task.id.in_(ids), Task.owner == owner, Task.status == Status.CLAIMED.value)
            .values(values),
            execution_options=_ONE_OFF,
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    @_retry_lock_conflicts
    def release(self, *, owner: str, task_ids: Iterable[int]) -> int:
        """Hand back claims that were never fired, so any pod fires them at once."""
        ids = list(task_ids)
        if not ids:
            return 0
        with self._sessions() as session, session.begin():
            result = session.execute(
                update(Task)
                .where(Task.id.in_(ids), Task.owner == owner, Task.status == Status.CLAIMED.value)
                .values(
                    status=Status.WAITING.value,
                    owner=None,
                    lease_expires_at=None,
                    attempts=func.greatest(Task.attempts - 1, 0),
                ),
                execution_options=_NO_SYNC,
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    @_retry_lock_conflicts
    def sweep_expired_leases(self, *, default_max_attempts: int, limit: int = 1000) -> int:
        """Return tasks whose pod vanished to ``waiting`` (reads claimed rows only)."""
        with self._sessions() as session, session.begin():
            result = session.execute(
                sweep_statement(default_max_attempts=default_max_attempts, limit=limit),
                execution_options=_NO_SYNC,
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- upkeep ------------------------------------------------------------

    def purge_finished(
        self,
        *,
        older_than_s: float,
        batch_size: int,
        pause: Callable[[], bool],
    ) -> int | None:
        """Delete finished tasks older than ``older_than_s``, ``batch_size`` rows at a time.

        Holds a named lock so one pod at a time does it; returns None when
        another holds it. ``pause`` runs between batches and returns False to stop.
        Deleting by primary key in small batches never holds a long lock.
        """
        finished = [s.value for s in FINISHED_STATUSES]
        deleted = 0
        with self._engine.connect() as conn:
            if conn.execute(text(f"SELECT GET_LOCK({RETENTION_LOCK}, 0)")).scalar() != 1:
                return None
            conn.commit()
            try:
                while True:
                    ids = (
                        conn.execute(
                            select(Task.id)
                            .where(
                                Task.status.in_(finished),
                                Task.finished_at < plus_s(utc_now_sql(), -older_than_s),
                            )
                            .limit(batch_size)
                        )
                        .scalars()
                        .all()
                    )
                    if ids:
                        deleted += conn.execute(
                            delete(Task).where(Task.id.in_(ids), Task.status.in_(finished))
                        ).rowcount
                    conn.commit()
                    if len(ids) < batch_size or not pause():
                        return deleted
            finally:
                conn.execute(text(f"SELECT RELEASE_LOCK({RETENTION_LOCK})"))
                conn.commit()

    def count_backlog(self) -> int:
        """Due tasks nobody has claimed yet (a cheap index range count)."""
        with self._sessions() as session:
            return int(
                session.execute(
                    select(func.count())
                    .select_from(Task)
                    .where(Task.status == Status.WAITING.value, Task.due_at <= utc_now_sql())
                ).scalar_one()
            )

    def ping(self) -> None:
        with self._sessions() as session:
            session.execute(text("SELECT 1"))

    def db_now(self) -> datetime:
        with self._sessions() as session:
            return session.execute(select(utc_now_sql())).scalar_one()

    # -- the operator CLI ---------------------------------------------------

    def schedule(
        self,
        *,
        url: str,
        due_at: datetime | None = None,
        delay_s: float = 0.0,
        method: str | None = None,
        headers: str | None = None,
        body: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Insert one task; ``due_at`` (naive UTC) or ``delay_s`` from the database's now."""
        when: Any = due_at if due_at is not None else plus_s(utc_now_sql(), delay_s)
        with self._sessions() as session, session.begin():
            result = session.execute(
                insert(Task).values(
                    url=url,
                    due_at=when,
                    method=method,
                    headers=headers,
                    body=body,
                    max_attempts=max_attempts,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]

    def get(self, task_id: int) -> TaskView | None:
        with self._sessions() as session:
            row = session.execute(
                select(
                    Task.id,
                    Task.url,
                    Task.method,
                    Task.status,
                    Task.due_at,
                    Task.attempts,
                    Task.max_attempts,
                    Task.last_status_code,
                    Task.last_error,
                    Task.created_at,
                    Task.fired_at,
                    Task.finished_at,
                    Task.owner,
                ).where(Task.id == task_id)
            ).one_or_none()
        return None if row is None else TaskView(**row._asdict())

    def cancel(self, task_id: int) -> bool:
        """Cancel a waiting task; False when it is not waiting (or does not exist)."""
        with self._sessions() as session, session.begin():
            result = session.execute(
                update(Task)
                .where(Task.id == task_id, Task.status == Status.WAITING.value)
                .values(status=Status.CANCELLED.value, finished_at=utc_now_sql()),
                execution_options=_NO_SYNC,
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def stats(self) -> Stats:
        with self._sessions() as session:
            db_now: datetime = session.execute(select(utc_now_sql())).scalar_one()
            counts = session.execute(select(Task.status, func.count()).group_by(Task.status)).all()
            oldest = session.execute(
                select(func.min(Task.due_at)).where(Task.status == Status.WAITING.value)
            ).scalar_one()
            recent = session.execute(
                select(func.count())
                .select_from(Task)
                .where(
                    Task.status.in_([Status.DONE.value, Status.FAILED.value]),
                    Task.finished_at >= db_now - timedelta(minutes=1),
                )
            ).scalar_one()
        return Stats(
            by_status={status: int(n) for status, n in counts},
            oldest_due_waiting=oldest,
            finished_last_minute=int(recent),
            db_now=db_now,
        )
