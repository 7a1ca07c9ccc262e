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
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Dialect,
    Select,
    String,
    bindparam,
    cast,
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


#: What only the server decides for a row, for callers that have its other values:
#: the id, the due and creation times, and microseconds until due. The times come as
#: text: mysqlclient parses a DATETIME in Python, and three a row were a fifth of
#: reading a batch's answer.
_DECIDED = (
    Task.id,
    cast(Task.due_at, String).label("due_at"),
    cast(Task.created_at, String).label("created_at"),
    func.timestampdiff(
        literal_column("MICROSECOND"), func.utc_timestamp(literal_column("6")), Task.due_at
    ).label("due_in_us"),
)
#: INSERT_TIMER answering with _DECIDED.
INSERT_TIMER_DECIDED = INSERT_TIMER.returning(*_DECIDED)


def _insert_of(columns: tuple[str, ...], dated: bool, returning: bool) -> Any:
    """INSERT_TIMER (INSERT_TIMER_DECIDED) writing ``columns`` only, the rest left to their
    defaults (NULL); without ``dated``, every row is due ``delay_us`` from now."""
    now = func.utc_timestamp(literal_column("6"))
    undated = func.timestampadd(literal_column("MICROSECOND"), bindparam("delay_us"), now)
    values: dict[str, Any] = {name: bindparam(name) for name in columns}
    statement = insert(Task).values({**values, "due_at": _due() if dated else undated})
    return statement.returning(*_DECIDED) if returning else statement


@functools.lru_cache(maxsize=64)
def _insert_parts(
    dialect: Dialect, returning: bool, columns: tuple[str, ...], dated: bool
) -> tuple[str, str, str, tuple[str, ...]]:
    compiled = _insert_of(columns, dated, returning).compile(dialect=dialect)
    head, values_keyword, rest = compiled.string.partition(" VALUES ")
    row, returning_keyword, names = rest.partition(" RETURNING ")
    assert values_keyword, compiled.string
    assert row.startswith("("), compiled.string
    assert row.endswith(")"), compiled.string
    assert returning_keyword or not returning, compiled.string
    assert "%" not in names, compiled.string
    assert compiled.positiontup is not None, "the driver's parameters are positional"
    return head + values_keyword, row, returning_keyword + names, tuple(compiled.positiontup)


#: The order of a row's values for ``insert_rows_text``: INSERT_TIMER's parameters as compiled.
ROW_VALUES = (
    "url",
    "delay_us",
    "at",
    "method",
    "headers",
    "body",
    "max_attempts",
    "idempotency_key",
    "idempotency_hash",
)
_AT = ROW_VALUES.index("at") - 1  # in a row's rest (all but the URL)


@functools.lru_cache(maxsize=64)
def _row_template(
    dialect: Dialect, returning: bool, present: frozenset[int]
) -> tuple[str, str, str, str, tuple[int, ...]]:
    """The INSERT's head, a row's text before and after its URL, the tail, and which of a
    row's rest values (by index) fill the %s after the URL, for rows whose rest values
    at ``present`` are the only ones not NULL."""
    names = [name for index, name in enumerate(ROW_VALUES[1:]) if index in present]
    columns = ("url", *(name for name in names if name in INSERT_COLUMNS))
    head, row, tail, order = _insert_parts(dialect, returning, columns, _AT in present)
    assert [name for name in ROW_VALUES if name in order] == list(order), order
    assert "%" not in row.replace("%s", ""), row
    assert row.startswith("(%s, "), row  # the URL first
    assert order[0] == "url", order
    before, after = row.split("%s", 1)
    return head, before, after, tail, tuple(ROW_VALUES.index(name) - 1 for name in order[1:])


def _literal(value: object, quote: Callable[[str], str]) -> str:
    """``value`` as SQL, as the driver would send the bound parameter."""
    if value is None:
        return "NULL"
    kind = type(value)
    if kind is int:
        return f"{value:d}"
    if kind is str:
        return quote(value)  # type: ignore[arg-type]
    if kind is datetime:
        return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"
    raise TypeError(f"no SQL literal for a {kind.__name__}")


def insert_rows_text(
    rows: Iterable[tuple[object, ...]],
    dialect: Dialect,
    *,
    quote: Callable[[str], str],
    returning: bool = False,
) -> str:
    """A multi-row INSERT_TIMER (INSERT_TIMER_DECIDED with ``returning``) with its values in it.

    ``rows`` hold their values in ROW_VALUES order. mysqlclient binds
    parameters by rendering each one into the text (``cursor._mogrify``);
    here strings are quoted by the driver's own ``literal`` (``quote``), and
    numbers, NULLs and times written directly, for a fraction of the cost.
    InnoDB numbers one multi-row INSERT's rows consecutively (a "simple
    insert"); with ``returning`` the rows come back in the order given.
    Run it with no parameters (``no_parameters``), so the driver leaves it as it is.
    """
    # The URL is a row's first value; rows alike in the rest (a batch's, mostly) share
    # its text, rendered once. A column NULL in every row is left out (its default):
    # a shorter statement for the server to read; rows without a time get the shorter
    # due expression (1,000 plain timers, INSERT … RETURNING and COMMIT: 17.9 -> 14.5 ms).
    rows = list(rows)
    rests: dict[tuple[object, ...], str] = dict.fromkeys((values[1:] for values in rows), "")
    present = frozenset(i for rest in rests for i, value in enumerate(rest) if value is not None)
    head, before, after, tail, picks = _row_template(dialect, returning, present)
    for rest in rests:
        # Only the template is read for %s: a value's own % signs stay as they are.
        rests[rest] = after % tuple([_literal(rest[i], quote) for i in picks])
    texts = [before + _literal(values[0], quote) + rests[values[1:]] for values in rows]
    return head + ", ".join(texts) + tail


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
