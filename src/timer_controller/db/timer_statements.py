"""How the timer store's statements are built: pure, no connection.

Reads select columns (never ORM objects) and carry the database's clock,
so a timer's time left is measured against the clock ``due_at`` means.
Bodies are never read back: only their length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, Update, func, insert, select, update
from sqlalchemy.sql.roles import ExpressionElementRole

from timer_controller.db.models import Task
from timer_controller.db.statements import plus_s, utc_now_sql
from timer_controller.domain.task import Status

#: Columns an INSERT from the api writes; everything else has its default.
INSERT_COLUMNS = (
    "url",
    "due_at",
    "method",
    "headers",
    "body",
    "max_attempts",
    "idempotency_key",
    "idempotency_hash",
)


def timer_columns() -> tuple[ExpressionElementRole[Any], ...]:
    return (
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
        Task.idempotency_key,
        Task.idempotency_hash,
        Task.headers,
        func.octet_length(Task.body).label("body_bytes"),
        utc_now_sql().label("db_now"),
    )


def select_timers() -> Select[Any]:
    return select(*timer_columns())


def select_timer(timer_id: int) -> Select[Any]:
    return select_timers().where(Task.id == timer_id)


def select_by_keys(keys: Sequence[str]) -> Select[Any]:
    """Rows holding any of ``keys``; reads the unique index."""
    return select_timers().where(Task.idempotency_key.in_(keys))


def select_ids(ids: Sequence[int]) -> Select[Any]:
    return select_timers().where(Task.id.in_(ids)).order_by(Task.id)


def select_page(
    *, status: str | None, idempotency_key: str | None, after_id: int | None, limit: int
) -> Select[Any]:
    """Keyset pagination on the primary key: ``id > after_id``, ascending."""
    statement = select_timers().order_by(Task.id).limit(limit)
    if after_id is not None:
        statement = statement.where(Task.id > after_id)
    if status is not None:
        statement = statement.where(Task.status == status)
    if idempotency_key is not None:
        statement = statement.where(Task.idempotency_key == idempotency_key)
    return statement


def due_value(*, due_at: datetime | None, delay_s: float | None) -> Any:
    """A naive-UTC ``due_at`` as given, or ``delay_s`` after the database's now."""
    if due_at is not None:
        return due_at
    assert delay_s is not None, "a due time needs due_at or delay_s"
    return plus_s(utc_now_sql(), delay_s)


def insert_timers(rows: Sequence[Mapping[str, Any]]) -> Insert:
    """One multi-row INSERT: InnoDB gives its rows consecutive ids (a "simple insert")."""
    return insert(Task).values([{name: row[name] for name in INSERT_COLUMNS} for row in rows])


def cancel_statement(timer_id: int) -> Update:
    return (
        update(Task)
        .where(Task.id == timer_id, Task.status == Status.WAITING.value)
        .values(status=Status.CANCELLED.value, finished_at=utc_now_sql())
    )


def reschedule_statement(timer_id: int, *, due: Any) -> Update:
    return (
        update(Task)
        .where(Task.id == timer_id, Task.status == Status.WAITING.value)
        .values(due_at=due)
    )
