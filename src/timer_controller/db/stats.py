"""The dashboard's reads: the overview and the recent failures.

Statements come from ``stats_statements.py``; each method here runs them in
one short read-only transaction and returns plain values (no ORM objects).
Driver errors leave as the timer store's ``StorageError`` (``db/timers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from timer_controller.db.errors import storage_operation
from timer_controller.db.stats_statements import (
    BUCKET_S,
    LATENESS_BOUNDS_MS,
    WINDOW_S,
    backlog_statement,
    failures_per_minute_statement,
    finished_counts_statement,
    fired_statement,
    live_counts_statement,
    oldest_due_statement,
    recent_failures_statement,
    retrying_statement,
)

MINUTES = WINDOW_S // BUCKET_S
MAX_FAILURES = 500


@dataclass(frozen=True, slots=True)
class OldestDue:
    id: int
    url: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Overview:
    """The last hour, read by the database's clock ``db_now``.

    Per-minute lists run oldest first: index 0 is 59 minutes ago, the last
    index is the current minute.
    """

    db_now: datetime
    #: waiting and claimed: every such row; done, failed, cancelled: finished in the last hour.
    by_status: dict[str, int]
    backlog: int
    oldest_due: OldestDue | None
    fired_per_minute: list[int]
    #: Per minute, first attempts per lateness bucket (see LATENESS_BOUNDS_MS).
    lateness_per_minute: list[list[int]]
    failed_per_minute: list[int]
    #: Fired in the last hour, failed, and waiting for another attempt.
    retrying: int

    @property
    def lateness_bounds_ms(self) -> tuple[float, ...]:
        return LATENESS_BOUNDS_MS

    @property
    def failed_last_hour(self) -> int:
        return sum(self.failed_per_minute)


@dataclass(frozen=True, slots=True)
class FailureView:
    id: int
    url: str
    method: str | None
    attempts: int
    last_status_code: int | None
    last_error: str | None
    fired_at: datetime | None
    finished_at: datetime | None


def _slot(minutes_ago: int | None) -> int | None:
    """The list index of a row ``minutes_ago`` old, or None outside the window.

    A pod's estimate of the database clock may run a little ahead, so a row
    fired "in the future" belongs to the current minute.
    """
    ago = max(0, int(minutes_ago or 0))
    return MINUTES - 1 - ago if ago < MINUTES else None


class StatsRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @storage_operation
    def overview(self) -> Overview:
        with self._engine.connect() as conn, conn.begin():
            live = conn.execute(live_counts_statement()).all()
            finished = conn.execute(finished_counts_statement()).all()
            backlog = conn.execute(backlog_statement()).one()
            oldest = conn.execute(oldest_due_statement()).first()
            fired_rows = conn.execute(fired_statement()).all()
            failed_rows = conn.execute(failures_per_minute_statement()).all()
            retrying = conn.execute(retrying_statement()).scalar_one()
        fired = [0] * MINUTES
        lateness = [[0] * (len(LATENESS_BOUNDS_MS) + 1) for _ in range(MINUTES)]
        for row in fired_rows:
            slot = _slot(row.minutes_ago)
            if slot is None:
                continue
            fired[slot] += int(row.n)
            if row.first:
                # INTERVAL() is -1 for a NULL; a first attempt always has both times.
                lateness[slot][max(0, int(row.bucket))] += int(row.n)
        failed = [0] * MINUTES
        for row in failed_rows:
            slot = _slot(row.minutes_ago)
            if slot is not None:
                failed[slot] += int(row.n)
        return Overview(
            db_now=backlog.db_now,
            by_status={row.status: int(row.n) for row in (*live, *finished)},
            backlog=int(backlog.n),
            oldest_due=OldestDue(id=oldest.id, url=oldest.url, due_at=oldest.due_at)
            if oldest is not None
            else None,
            fired_per_minute=fired,
            lateness_per_minute=lateness,
            failed_per_minute=failed,
            retrying=int(retrying),
        )

    @storage_operation
    def recent_failures(self, *, limit: int = 50) -> list[FailureView]:
        """Failed timers, newest first (at most ``MAX_FAILURES``)."""
        limit = max(1, min(limit, MAX_FAILURES))
        with self._engine.connect() as conn, conn.begin():
            rows = conn.execute(recent_failures_statement(limit=limit)).all()
        return [
            FailureView(
                id=row.id,
                url=row.url,
                method=row.method,
                attempts=row.attempts,
                last_status_code=row.last_status_code,
                last_error=row.last_error,
                fired_at=row.fired_at,
                finished_at=row.finished_at,
            )
            for row in rows
        ]
