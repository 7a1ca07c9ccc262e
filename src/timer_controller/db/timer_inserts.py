"""How the timer store inserts rows: multi-row INSERTs with their values rendered in.

On MariaDB an ``INSERT … RETURNING`` answers with what the server decided
(id, times) and the rest of each record is the row's own input; on MySQL 8
(no RETURNING) the rows are read back by id. Either way the order is checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, CursorResult, text
from sqlalchemy.exc import DBAPIError

from timer_controller.db.timer_records import (
    SERVER_TIME,
    Decided,
    NewTimer,
    NotConsecutive,
    TimerRecord,
    inserted_record,
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
    """row_values in ROW_VALUES order (due_params' values, without its dict)."""
    at, delay_s = timer.due_at, timer.delay_s
    delay_us = 0 if at is not None or delay_s is None else int(delay_s * 1e6)
    return (
        timer.url, delay_us, at, timer.method, timer.headers, timer.body,
        timer.max_attempts, timer.idempotency_key, timer.idempotency_hash,
    )  # fmt: skip


def _rows_sql(conn: Connection, timers: Sequence[NewTimer], *, returning: bool) -> str:
    """One multi-row INSERT of ``timers``, its values rendered in (``insert_rows_text``)."""
    driver: Any = conn.connection.dbapi_connection

    def quote(value: str) -> str:
        return str(driver.literal(value).decode(driver.encoding))

    return insert_rows_text(map(row_tuple, timers), conn.dialect, quote=quote, returning=returning)


def _insert_rows(
    conn: Connection, timers: Sequence[NewTimer], *, returning: bool
) -> CursorResult[Any]:
    sql = _rows_sql(conn, timers, returning=returning)
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


def _decided(row: Sequence[Any]) -> Decided:
    """INSERT_TIMER_DECIDED's columns as what the server decided."""
    timer_id, due_at, created_at, due_in_us = row
    # Divided as timedelta.total_seconds() divides: the float to_record gives.
    return timer_id, due_at, created_at, max(0.0, due_in_us / 10**6)


def decided_of(record: TimerRecord) -> Decided:
    due_at, created_at = (f"{time:{SERVER_TIME}}" for time in (record.due_at, record.created_at))
    return record.id, due_at, created_at, record.time_left_s


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
        records += map(inserted_record, chunk, map(_decided, rows))
    # The rows come back in the order they were given, so their ids rise; check that.
    if any(a.id >= b.id for a, b in itertools.pairwise(records)):
        raise NotConsecutive
    return records


def insert_pipelined(
    conn: Connection, chunks: Iterable[Sequence[NewTimer]], *, max_rows: int
) -> list[Decided]:
    """Insert ``chunks`` of timers in order, each INSERT running while the next is made.

    MariaDB only (RETURNING). Taking a chunk from ``chunks`` may be slow (the
    caller checks it then) or raise (the caller's problem: nothing waits on the
    connection then, and the transaction rolls back): each INSERT is sent
    without waiting for its answer (mysqlclient's ``send_query``), the next
    chunk is taken and rendered, and only then is the answer read, so the
    database works on one chunk while this thread prepares the next.
    Raises NotConsecutive when the rows did not come back in order.
    """
    decided: list[Decided] = []
    running: Sequence[NewTimer] | None = None
    try:
        for chunk in chunks:
            for part in _chunks(chunk, max_rows=max_rows):
                sql = _rows_sql(conn, part, returning=True)
                rows: Sequence[Any] = ()
                if running is not None:
                    done, running = running, None
                    rows = _answer(conn, len(done))
                _send(conn, sql)
                running = part
                decided += map(_decided, rows)
        if running is not None:
            done, running = running, None
            decided += map(_decided, _answer(conn, len(done)))
    finally:
        if running is not None:
            _abandon(conn)
    # The rows come back in the order they were given, so their ids rise; check that.
    if any(a[0] >= b[0] for a, b in itertools.pairwise(decided)):
        raise NotConsecutive
    return decided


def _send(conn: Connection, sql: str) -> None:
    driver: Any = conn.connection.dbapi_connection
    try:
        driver.send_query(sql.encode(driver.encoding))
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, exc, sql) from exc


def _answer(conn: Connection, rows: int) -> Sequence[Any]:
    """The rows of the INSERT sent last; NotConsecutive unless there are ``rows``."""
    driver: Any = conn.connection.dbapi_connection
    try:
        driver.read_query_result()
        answer: Sequence[Any] = driver.store_result().fetch_row(0)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, exc, "INSERT INTO tasks … RETURNING") from exc
    if len(answer) != rows:
        raise NotConsecutive
    return answer


def _abandon(conn: Connection) -> None:
    """Read (and drop) the answer of an INSERT sent last, so the connection can roll back."""
    driver: Any = conn.connection.dbapi_connection
    try:
        driver.read_query_result()
        driver.store_result()
    except conn.dialect.loaded_dbapi.Error as exc:
        if conn.dialect.is_disconnect(exc, driver, None):
            conn.invalidate(exc)


def _wrapped(conn: Connection, exc: Any, sql: str) -> BaseException:
    """``exc`` as SQLAlchemy raises a driver's error (the connection invalidated if lost)."""
    driver: Any = conn.connection.dbapi_connection
    lost = bool(conn.dialect.is_disconnect(exc, driver, None))
    if lost:
        conn.invalidate(exc)
    wrapped: BaseException = DBAPIError.instance(
        sql[:200],
        None,
        exc,
        conn.dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=conn.dialect,
    )
    return wrapped
