"""How the timer store's statements are built: pure, no connection.

Reads select columns (never ORM objects) and carry the database's clock,
so a timer's time left is measured against the clock ``due_at`` means.
Bodies are never read back: only their length.

The statements are built once, with bound parameters, so each execution
finds its compiled form in SQLAlchemy's cache (a statement rebuilt per call
cost more to match against the cache than the query took to run).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Dialect,
    Select,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    update,
)

from timer_controller.db.models import Task, UtcDateTime
from timer_controller.db.statements import utc_now_sql
from timer_controller.domain.task import Status

#: The columns an INSERT from the store writes; everything else has its default.
INSERT_COLUMNS = (
    "url",
    "method",
    "headers",
    "body",
    "max_attempts",
    "idempotency_key",
    "idempotency_hash",
)

TIMER_COLUMNS = (
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


def _select() -> Select[Any]:
    return select(*TIMER_COLUMNS)


#: Parameter ``timer_id``.
SELECT_TIMER = _select().where(Task.id == bindparam("timer_id"))
#: Parameter ``keys``: rows holding any of them (reads the unique index).
SELECT_BY_KEYS = _select().where(Task.idempotency_key.in_(bindparam("keys", expanding=True)))
#: Parameter ``ids``, in id order.
SELECT_IDS = _select().where(Task.id.in_(bindparam("ids", expanding=True))).order_by(Task.id)


def select_page(
    *, status: str | None, idempotency_key: str | None, after_id: int | None, limit: int
) -> Select[Any]:
    """Keyset pagination on the primary key: ``id > after_id``, ascending."""
    statement = _select().order_by(Task.id).limit(limit)
    if after_id is not None:
        statement = statement.where(Task.id > after_id)
    if status is not None:
        statement = statement.where(Task.status == status)
    if idempotency_key is not None:
        statement = statement.where(Task.idempotency_key == idempotency_key)
    return statement


def _due() -> ColumnElement[datetime]:
    """``at`` when given, else the database's now, plus ``delay_us``: one shape for both.

    The precision is a literal, so that only the row's own values are parameters.
    """
    now = func.utc_timestamp(literal_column("6"))
    return func.timestampadd(
        literal_column("MICROSECOND"),
        bindparam("delay_us"),
        func.coalesce(bindparam("at", type_=UtcDateTime), now),
    )


def due_params(*, due_at: datetime | None, delay_s: float | None) -> dict[str, Any]:
    """The ``at`` and ``delay_us`` parameters of a due time (naive UTC, or seconds from now)."""
    if due_at is not None:
        return {"at": due_at, "delay_us": 0}
    assert delay_s is not None, "a due time needs due_at or delay_s"
    return {"at": None, "delay_us": int(delay_s * 1e6)}


#: One timer; parameters INSERT_COLUMNS, ``at`` and ``delay_us``.
INSERT_TIMER = insert(Task).values(
    {**{name: bindparam(name) for name in INSERT_COLUMNS}, "due_at": _due()}
)


#: INSERT_TIMER answering with the new row's TIMER_COLUMNS, where the server can
#: (MariaDB 10.5+): one round trip instead of an INSERT and a SELECT back.
#: The clock's precision is a literal there, so that the row's values stay its only parameters.
INSERT_TIMER_RETURNING = INSERT_TIMER.returning(
    *TIMER_COLUMNS[:-1], func.utc_timestamp(literal_column("6")).label("db_now")
)


@functools.lru_cache(maxsize=8)
def _insert_parts(dialect: Dialect, returning: bool) -> tuple[str, str, str, tuple[str, ...]]:
    compiled = (INSERT_TIMER_RETURNING if returning else INSERT_TIMER).compile(dialect=dialect)
    head, values_keyword, rest = compiled.string.partition(" VALUES ")
    row, returning_keyword, columns = rest.partition(" RETURNING ")
    assert values_keyword, compiled.string
    assert row.startswith("("), compiled.string
    assert row.endswith(")"), compiled.string
    assert returning_keyword or not returning, compiled.string
    assert "%s" not in columns, compiled.string
    assert compiled.positiontup is not None, "the driver's parameters are positional"
    return head + values_keyword, row, returning_keyword + columns, tuple(compiled.positiontup)


def insert_rows_sql(
    rows: int, dialect: Dialect, *, returning: bool = False
) -> tuple[str, tuple[str, ...]]:
    """INSERT_TIMER for ``rows`` rows as the driver's SQL, and one row's parameter names.

    InnoDB numbers one multi-row INSERT's rows consecutively (a "simple
    insert"). INSERT_TIMER is compiled once and its row repeated, as the
    driver's own executemany does: compiling a thousand-row statement cost
    more than running it. ``returning``: the rows come back (TIMER_COLUMNS),
    in the order given (INSERT_TIMER_RETURNING's condition).
    """
    head, row, tail, names = _insert_parts(dialect, returning)
    return head + ", ".join([row] * rows) + tail, names


def row_params(values: Sequence[Mapping[str, Any]], names: Sequence[str]) -> tuple[Any, ...]:
    """Rows' parameters (each keyed as INSERT_TIMER's), row after row in ``names`` order."""
    return tuple(row[name] for row in values for name in names)


#: Parameter ``timer_id``: a waiting timer becomes cancelled.
CANCEL_TIMER = (
    update(Task)
    .where(Task.id == bindparam("timer_id"), Task.status == Status.WAITING.value)
    .values(status=Status.CANCELLED.value, finished_at=utc_now_sql())
)
#: Parameters ``timer_id``, ``at`` and ``delay_us``: a waiting timer gets a new due time.
RESCHEDULE_TIMER = (
    update(Task)
    .where(Task.id == bindparam("timer_id"), Task.status == Status.WAITING.value)
    .values(due_at=_due())
)
