"""The dashboard overview's statements: pure, no connection.

Each one reads a bounded range of an index and nothing else, so the overview
costs the same with a million finished rows as with none:

- live counts read the ``waiting`` and ``claimed`` prefixes of
  ``(status, due_at)``;
- the last hour's outcomes read ``(status, finished_at)`` from an hour ago;
- firing and lateness read ``(fired_at, status, attempts, due_at)`` from an
  hour ago, index-only (migration 0003).

Whole-table counts of finished rows are left out on purpose: counting a
million index entries costs a noticeable fraction of a second, every few
seconds, for every open dashboard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, literal_column, select

from timer_controller.db.models import Task
from timer_controller.db.statements import plus_s, utc_now_sql
from timer_controller.domain.task import Status

WINDOW_S = 3600
BUCKET_S = 60
#: Upper bounds (exclusive, in ms) of the lateness histogram's buckets; the
#: last bucket holds everything later. Roughly logarithmic, like
#: ``timer_lateness_seconds``.
LATENESS_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
)  # fmt: skip
#: Outcomes whose row still describes its first attempt: fired once and
#: finished, so ``due_at`` was never moved by a retry.
FIRST_ATTEMPT_STATUSES = (Status.DONE.value, Status.FAILED.value)
FINISHED_VALUES = tuple(s.value for s in (Status.DONE, Status.FAILED, Status.CANCELLED))
LIVE_VALUES = (Status.WAITING.value, Status.CLAIMED.value)


def _window_start() -> ColumnElement[datetime]:
    return plus_s(utc_now_sql(), -WINDOW_S)


def _minutes_ago(column: Any) -> ColumnElement[int]:
    return func.timestampdiff(literal_column("MINUTE"), column, utc_now_sql())


def live_counts_statement() -> Select[*tuple[Any, ...]]:
    """Waiting and claimed rows, counted from their prefixes of ``(status, due_at)``."""
    return (
        select(Task.status, func.count().label("n"))
        .where(Task.status.in_(LIVE_VALUES))
        .group_by(Task.status)
    )


def finished_counts_statement() -> Select[*tuple[Any, ...]]:
    """Rows finished in the last hour, by status: ``(status, finished_at)`` ranges."""
    return (
        select(Task.status, func.count().label("n"))
        .where(Task.status.in_(FINISHED_VALUES), Task.finished_at >= _window_start())
        .group_by(Task.status)
    )


def backlog_statement() -> Select[*tuple[Any, ...]]:
    """Due but unclaimed, and the clock it was counted by."""
    now = utc_now_sql()
    return select(func.count().label("n"), now.label("db_now")).where(
        Task.status == Status.WAITING.value, Task.due_at <= now
    )


def oldest_due_statement() -> Select[*tuple[Any, ...]]:
    """The one waiting timer that has been due longest."""
    return (
        select(Task.id, Task.due_at, Task.url)
        .where(Task.status == Status.WAITING.value, Task.due_at <= utc_now_sql())
        .order_by(Task.due_at, Task.id)
        .limit(1)
    )


def fired_statement() -> Select[*tuple[Any, ...]]:
    """Rows last fired in the last hour, by minute and lateness bucket.

    ``first`` marks rows that still describe their first attempt, the only
    ones whose ``fired_at - due_at`` is a lateness (a retry moves
    ``due_at``). At most 60 × 16 × 2 rows come back, however many fired.
    """
    lateness_us = func.timestampdiff(literal_column("MICROSECOND"), Task.due_at, Task.fired_at)
    # INTERVAL(n, b1, b2, ...) is the index of the first bound above n (MySQL and MariaDB).
    bucket = func.interval(lateness_us, *(int(ms * 1000) for ms in LATENESS_BOUNDS_MS))
    first = and_(Task.attempts == 1, Task.status.in_(FIRST_ATTEMPT_STATUSES))
    minutes_ago = _minutes_ago(Task.fired_at).label("minutes_ago")
    bucket_label = bucket.label("bucket")
    first_label = first.label("first")
    return (
        select(minutes_ago, bucket_label, first_label, func.count().label("n"))
        .where(Task.fired_at >= _window_start())
        .group_by(minutes_ago, bucket_label, first_label)
    )


def failures_per_minute_statement() -> Select[*tuple[Any, ...]]:
    """Rows that failed for good in the last hour, by minute: the failed prefix."""
    minutes_ago = _minutes_ago(Task.finished_at).label("minutes_ago")
    return (
        select(minutes_ago, func.count().label("n"))
        .where(Task.status == Status.FAILED.value, Task.finished_at >= _window_start())
        .group_by(minutes_ago)
    )


def retrying_statement() -> Select[*tuple[Any, ...]]:
    """Rows whose last attempt, in the last hour, failed and will be retried."""
    return (
        select(func.count().label("n"))
        .select_from(Task)
        .where(Task.fired_at >= _window_start(), Task.status == Status.WAITING.value)
    )


def recent_failures_statement(*, limit: int) -> Select[*tuple[Any, ...]]:
    """Failed rows, newest first: the failed prefix of ``(status, finished_at)`` backwards."""
    return (
        select(
            Task.id,
            Task.url,
            Task.method,
            Task.attempts,
            Task.last_status_code,
            Task.last_error,
            Task.fired_at,
            Task.finished_at,
        )
        .where(Task.status == Status.FAILED.value)
        .order_by(Task.finished_at.desc(), Task.id.desc())
        .limit(limit)
    )
