"""How the repository's statements are built: pure, no connection.

Every statement here reads the ``(status, due_at)`` index by a status
prefix; "now" is always the database's ``UTC_TIMESTAMP(6)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    case,
    func,
    literal,
    literal_column,
    select,
    update,
)

from timer_controller.db.models import Task
from timer_controller.domain.task import Status

# Named locks are server-wide: the database's name (hashed, as lock names
# are capped at 64 characters) keeps databases on one server apart.
RETENTION_LOCK = "CONCAT('timer_controller.retention.', MD5(DATABASE()))"
# A lease that expires means its pod vanished mid-delivery. Such tasks go back
# to waiting; one that keeps losing its pods this many times beyond its
# attempts is taken to be what kills them, and fails instead of looping.
LEASE_LOSSES_BEFORE_FAILING = 3


def utc_now_sql() -> ColumnElement[datetime]:
    return func.utc_timestamp(6)


def plus_s(moment: ColumnElement[Any], seconds: float) -> ColumnElement[datetime]:
    # TIMESTAMPADD works on MySQL and MariaDB alike; MariaDB has no MILLISECOND unit.
    return func.timestampadd(literal_column("MICROSECOND"), int(seconds * 1e6), moment)


def per_row(values: Mapping[int, Any]) -> ColumnElement[Any]:
    """One value per task id in a single UPDATE; a constant when all agree.

    Strings (error texts, which may quote a receiver) are bound parameters.
    Numbers and times are rendered into the SQL: they are ours, cannot carry
    quotes, and building a bound parameter per row cost more than the UPDATE
    itself on the outcome writer's hot path.
    """
    distinct = set(values.values())
    if len(distinct) == 1:
        return literal(next(iter(distinct)))
    if all(v is None or type(v) in (int, datetime) for v in distinct):
        whens = " ".join(
            f"WHEN {task_id:d} THEN {_sql_literal(v)}" for task_id, v in values.items()
        )
        return literal_column(f"CASE {Task.__tablename__}.id {whens} END")
    return case(dict(values), value=Task.id)


def _sql_literal(value: int | datetime | None) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"
    return f"{value:d}"


def claim_statement(*, limit: int, lookahead_s: float) -> Select[*tuple[Any, ...]]:
    """The claim's SELECT: due waiting rows, oldest first, skipping locked ones.

    It reads the ``(status, due_at)`` index in order and stops after
    ``limit`` rows, so finished rows are never walked.
    """
    now = utc_now_sql()
    return (
        select(
            Task.id,
            Task.url,
            Task.due_at,
            Task.attempts,
            Task.max_attempts,
            Task.method,
            Task.headers,
            Task.body,
            now.label("db_now"),
        )
        .where(Task.status == Status.WAITING.value, Task.due_at <= plus_s(now, lookahead_s))
        .order_by(Task.due_at, Task.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def sweep_statement(*, default_max_attempts: int, limit: int) -> Update:
    """Expired leases back to ``waiting``; reads the claimed prefix of the index."""
    now = utc_now_sql()
    hopeless = Task.attempts >= (
        func.coalesce(Task.max_attempts, default_max_attempts) + LEASE_LOSSES_BEFORE_FAILING
    )
    return (
        update(Task)
        .where(Task.status == Status.CLAIMED.value, Task.lease_expires_at < now)
        .values(
            status=case((hopeless, Status.FAILED.value), else_=Status.WAITING.value),
            finished_at=case((hopeless, now), else_=None),
            last_error=case(
                (hopeless, "lease expired too often: the task may be crashing its pods"),
                else_="lease expired: the pod holding it stopped; retrying",
            ),
            owner=None,
            lease_expires_at=None,
        )
        .with_dialect_options(mysql_limit=limit)
    )
