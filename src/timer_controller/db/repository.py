"""Every database operation the controller and the CLI run, as named intentions.

Statements are built in ``statements.py``; this module runs each in one
short transaction, and driver errors leave it as ``StorageError``
(``errors.py``). The hot paths (claim, record, release, sweep) are
ORM-enabled Core statements that select columns and update in bulk: loading
ORM objects costs about seven times as much. All "now"s are the database's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from timer_controller.db import statements as sql
from timer_controller.db.clock import utc_now
from timer_controller.db.errors import storage_operation
from timer_controller.db.setup import named_lock
from timer_controller.domain.task import ClaimedTask, Status, Transition

log = logging.getLogger(__name__)

_NO_SYNC = {"synchronize_session": False}
# Outcome writes carry per-row values in their SQL text, so each is compiled
# once and never again: caching them would fill SQLAlchemy's statement cache
# with dead entries that the garbage collector then keeps walking.
_ONE_OFF = {"synchronize_session": False, "compiled_cache": None}


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

    @storage_operation
    def claim_due(
        self,
        *,
        owner: str,
        limit: int,
        lease_s: float,
        lookahead_s: float,
        skip_prefixes: Collection[str] = (),
    ) -> ClaimResult:
        """Claim up to ``limit`` waiting tasks due within ``lookahead_s``, oldest first.

        One short transaction: lock with SKIP LOCKED so concurrent pods get
        disjoint rows, write owner and lease, commit.
        """
        with self._sessions() as session, session.begin():
            local_before, started = utc_now(), time.monotonic()
            rows = session.execute(
                sql.claim_select(limit=limit, lookahead_s=lookahead_s, skip_prefixes=skip_prefixes)
            ).all()
            selected_at = time.monotonic()
            if not rows:
                return ClaimResult(tasks=[])
            session.execute(
                sql.claim_update(task_ids=[row.id for row in rows], owner=owner, lease_s=lease_s),
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

    @storage_operation
    def record_outcomes(self, *, owner: str | None, transitions: Sequence[Transition]) -> int:
        """Write a batch of transitions: one UPDATE per kind, one transaction.

        A row is written only while still claimed for the attempt that was
        sent (and by ``owner``, when given): if its lease expired and it was
        claimed again, the newer attempt's outcome is the one kept.
        """
        by_status: dict[Status, list[Transition]] = {}
        for transition in transitions:
            by_status.setdefault(transition.status, []).append(transition)
        written = 0
        with self._sessions() as session, session.begin():
            for status, batch in by_status.items():
                result = session.execute(
                    sql.outcome_update(status=status, transitions=batch, owner=owner),
                    execution_options=_ONE_OFF,
                )
                written += int(result.rowcount)  # type: ignore[attr-defined]
        return written

    @storage_operation
    def renew_leases(self, *, owner: str, task_ids: Iterable[int], lease_s: float) -> int:
        """Extend the leases this holder still has on ``task_ids`` to now + ``lease_s``."""
        ids = list(task_ids)
        if not ids:
            return 0
        with self._sessions() as session, session.begin():
            result = session.execute(
                sql.renew_update(owner=owner, task_ids=ids, lease_s=lease_s),
                execution_options=_NO_SYNC,
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    @storage_operation
    def release(self, *, owner: str, task_ids: Iterable[int]) -> int:
        """Hand back claims that were never fired, so any pod fires them at once."""
        ids = list(task_ids)
        if not ids:
            return 0
        with self._sessions() as session, session.begin():
            result = session.execute(
                sql.release_update(owner=owner, task_ids=ids), execution_options=_NO_SYNC
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    @storage_operation
    def sweep_expired_leases(self, *, default_max_attempts: int, limit: int = 1000) -> int:
        """Return tasks whose pod vanished to ``waiting`` (reads claimed rows only)."""
        with self._sessions() as session, session.begin():
            result = session.execute(
                sql.sweep_update(default_max_attempts=default_max_attempts, limit=limit),
                execution_options=_NO_SYNC,
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- upkeep ------------------------------------------------------------

    @storage_operation
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
        deleted = 0
        with self._engine.connect() as conn, named_lock(conn, sql.RETENTION_LOCK, wait_s=0) as got:
            if not got:
                return None
            while True:
                ids = (
                    conn.execute(sql.purgeable_ids(older_than_s=older_than_s, limit=batch_size))
                    .scalars()
                    .all()
                )
                if ids:
                    deleted += conn.execute(sql.purge_delete(task_ids=ids)).rowcount
                conn.commit()
                if len(ids) < batch_size or not pause():
                    return deleted

    @storage_operation
    def count_backlog(self) -> int:
        with self._sessions() as session:
            return int(session.execute(sql.backlog_count()).scalar_one())

    @storage_operation
    def ping(self) -> None:
        with self._sessions() as session:
            session.execute(sql.ping())

    @storage_operation
    def db_now(self) -> datetime:
        with self._sessions() as session:
            now: datetime = session.execute(sql.db_now_select()).scalar_one()
        return now

    # -- the operator CLI ---------------------------------------------------

    @storage_operation
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
        statement = sql.schedule_insert(
            url=url,
            due_at=due_at,
            delay_s=delay_s,
            method=method,
            headers=headers,
            body=body,
            max_attempts=max_attempts,
        )
        with self._sessions() as session, session.begin():
            result = session.execute(statement)
            return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]

    @storage_operation
    def get(self, task_id: int) -> TaskView | None:
        with self._sessions() as session:
            row = session.execute(sql.task_view(task_id)).one_or_none()
        return None if row is None else TaskView(**row._asdict())

    @storage_operation
    def cancel(self, task_id: int) -> bool:
        """Cancel a waiting task; False when it is not waiting (or does not exist)."""
        with self._sessions() as session, session.begin():
            result = session.execute(sql.cancel_update(task_id), execution_options=_NO_SYNC)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    @storage_operation
    def stats(self) -> Stats:
        with self._sessions() as session:
            db_now: datetime = session.execute(sql.db_now_select()).scalar_one()
            counts = session.execute(sql.count_by_status()).all()
            oldest = session.execute(sql.oldest_due_waiting()).scalar_one()
            recent = session.execute(sql.finished_since(db_now - timedelta(minutes=1))).scalar_one()
        return Stats(
            by_status={status: int(n) for status, n in counts},
            oldest_due_waiting=oldest,
            finished_last_minute=int(recent),
            db_now=db_now,
        )
