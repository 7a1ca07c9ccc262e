"""How the timer store inserts rows: multi-row INSERTs with their values rendered in.

On MariaDB an ``INSERT … RETURNING`` answers with what the server decided
(id, times) and the rest of each record is the row's own input; on MySQL 8
(no RETURNING) the rows are read back by id. Either way the order is checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, text

from timer_controller.db.timer_records import (
    NewTimer,
    NotConsecutive,
    TimerRecord,
    header_names,
    to_record,
)
from timer_controller.db.timer_statements import (
    INSERT_COLUMNS,
    INSERT_TIMER,
    INSERT_TIMER_RETURNING,
    SELECT_BY_KEYS,
    SELECT_IDS,
    SELECT_TIMER,
    due_params,
    insert_rows_text,
)
from timer_controller.domain.task import Status

#: A multi-row INSERT stays well under max_allowed_packet (16 MiB by default).
INSERT_CHUNK_BYTES = 2 * 1024 * 1024


def _chunks(timers: Sequence[NewTimer], *, max_rows: int) -> Iterator[Sequence[NewTimer]]:
    """Runs of at most ``max_rows`` timers and about INSERT_CHUNK_BYTES of SQL each."""
    start, size = 0, 0
    for end, timer in enumerate(timers):
        # 200: the row's other values and punctuation.
        row_size = len(timer.url) + len(timer.body or "") + len(timer.headers or "") + 200
        if end > start and (end - start >= max_rows or size + row_size > INSERT_CHUNK_BYTES):
            yield timers[start:end]
            start, size = end, 0
        size += row_size
    if start < len(timers):
        yield timers[start:]


def row_values(timer: NewTimer) -> dict[str, Any]:
    values = {name: getattr(timer, name) for name in INSERT_COLUMNS}
    values.update(due_params(due_at=timer.due_at, delay_s=timer.delay_s))
    return values


def row_tuple(timer: NewTimer) -> tuple[object, ...]:
    """row_values in ROW_VALUES order."""
    due = due_params(due_at=timer.due_at, delay_s=timer.delay_s)
    return (
        timer.url, due["delay_us"], due["at"], timer.method, timer.headers, timer.body,
        timer.max_attempts, timer.idempotency_key, timer.idempotency_hash,
    )  # fmt: skip


def _insert_rows(
    conn: Connection, timers: Sequence[NewTimer], *, returning: bool
) -> CursorResult[Any]:
    """One multi-row INSERT of ``timers``, its values rendered in (``insert_rows_text``)."""
    driver: Any = conn.connection.dbapi_connection

    def quote(value: str) -> str:
        return str(driver.literal(value).decode(driver.encoding))

    rows = map(row_tuple, timers)
    sql = insert_rows_text(rows, conn.dialect, quote=quote, returning=returning)
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


_WAITING = Status.WAITING.value
_read_time = datetime.fromisoformat


def _inserted(timer: NewTimer, decided: Sequence[Any]) -> TimerRecord:
    """The record of a row just inserted from ``timer``: INSERT_TIMER_DECIDED's columns
    with the values the row was given, and the defaults of the rest."""
    timer_id, due_at, created_at, due_in_us = decided
    body_bytes = None if timer.body is None else len(timer.body.encode())
    # Divided as timedelta.total_seconds() divides: the float to_record gives.
    time_left_s = max(0.0, due_in_us / 10**6)
    return TimerRecord(
        timer_id, timer.url, timer.method, _WAITING, _read_time(due_at), 0, timer.max_attempts,
        None, None, _read_time(created_at), None, None, timer.idempotency_key,
        timer.idempotency_hash, header_names(timer.headers), body_bytes, time_left_s,
    )  # fmt: skip


def _check_order(
    records: Sequence[TimerRecord], timers: Sequence[NewTimer], ids: Sequence[int] | None
) -> None:
    """NotConsecutive unless ``records`` are ``timers`` in order (with ``ids``, when known)."""
    got = [(r.url, r.idempotency_key) for r in records]
    if got != [(t.url, t.idempotency_key) for t in timers] or (
        ids is not None and [r.id for r in records] != list(ids)
    ):
        raise NotConsecutive


def holders(conn: Connection, keys: Sequence[str]) -> dict[str | None, TimerRecord]:
    """The timers holding any of ``keys``, by key."""
    if not keys:
        return {}
    rows = conn.execute(SELECT_BY_KEYS, {"keys": list(keys)})
    return {record.idempotency_key: record for record in map(to_record, rows)}


def insert(conn: Connection, timers: Sequence[NewTimer], *, max_rows: int) -> list[TimerRecord]:
    """Insert ``timers`` in order, in multi-row INSERTs of at most ``max_rows``; their records.

    Raises NotConsecutive when the rows did not come back in order (insert row by row then).
    """
    if not timers:
        return []
    if conn.dialect.insert_returning:
        # MariaDB answers with the rows it inserted: no SELECT back.
        return _insert_returning(conn, timers, max_rows=max_rows)
    if len(timers) == 1:
        (timer,) = timers
        timer_id = int(conn.execute(INSERT_TIMER, row_values(timer)).lastrowid)
        return [to_record(conn.execute(SELECT_TIMER, {"timer_id": timer_id}).one())]
    step = int(conn.execute(text("SELECT @@auto_increment_increment")).scalar_one())
    ids: list[int] = []
    for chunk in _chunks(timers, max_rows=max_rows):
        first = int(_insert_rows(conn, chunk, returning=False).lastrowid)
        ids += [first + i * step for i in range(len(chunk))]
    records = [to_record(row) for row in conn.execute(SELECT_IDS, {"ids": ids})]
    # InnoDB numbers a multi-row INSERT's rows consecutively; check rather than trust.
    _check_order(records, timers, ids)
    return records


def _insert_returning(
    conn: Connection, timers: Sequence[NewTimer], *, max_rows: int
) -> list[TimerRecord]:
    if len(timers) == 1:
        return [to_record(conn.execute(INSERT_TIMER_RETURNING, row_values(timers[0])).one())]
    records: list[TimerRecord] = []
    for chunk in _chunks(timers, max_rows=max_rows):
        rows = _insert_rows(conn, chunk, returning=True)
        records += map(_inserted, chunk, rows)
    # The rows come back in the order they were given, so their ids rise; check that.
    if any(a.id >= b.id for a, b in itertools.pairwise(records)):
        raise NotConsecutive
    return records
