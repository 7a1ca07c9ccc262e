"""The timer store: what the HTTP API (and the dashboard) do to timers.

Statements are built in ``timer_statements.py``; each operation here runs
in one short transaction and turns driver errors into ``StorageError``.
Creates are ORM-enabled Core statements (no ORM objects are loaded).

Idempotency keys: a key names one timer. A create whose key is taken
returns that timer when the stored request hash is the same (a replay) and
raises ``KeyConflict`` when it differs (a key reused for another request).
Two creates racing with one key meet at the unique index: the loser's
INSERT fails with a duplicate key, and it then reads the winner's row.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, CursorResult, Engine, text

from timer_controller.db.errors import storage_operation
from timer_controller.db.timer_statements import (
    CANCEL_TIMER,
    INSERT_COLUMNS,
    INSERT_TIMER,
    INSERT_TIMER_RETURNING,
    RESCHEDULE_TIMER,
    SELECT_BY_KEYS,
    SELECT_IDS,
    SELECT_TIMER,
    due_params,
    insert_rows_text,
    select_page,
)
from timer_controller.domain.task import Status
from timer_controller.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)

DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
#: A multi-row INSERT stays well under max_allowed_packet (16 MiB by default).
INSERT_CHUNK_BYTES = 2 * 1024 * 1024
#: Creates that lose a key race read the winner; a winner deleted meanwhile
#: (retention) frees the key, and the create runs again.
_KEY_RACE_TRIES = 3

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class TimerRecord:
    """One timer as stored. Header values and the body are never read back."""

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
    idempotency_key: str | None
    idempotency_hash: str | None
    #: Names of the row's extra headers; None when its ``headers`` is not a JSON object.
    header_names: tuple[str, ...] | None
    body_bytes: int | None
    #: Seconds until ``due_at`` by the database's clock; 0 when due or past.
    time_left_s: float


@dataclass(frozen=True, slots=True)
class NewTimer:
    """A timer to create: ``due_at`` (naive UTC) or ``delay_s`` from the database's now."""

    url: str
    due_at: datetime | None = None
    delay_s: float | None = None
    method: str | None = None
    #: JSON object text, as the controller reads it.
    headers: str | None = None
    body: str | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    #: Hash of the creating request's body (see ``api/idempotency.py``).
    idempotency_hash: str | None = None

    def __post_init__(self) -> None:
        if (self.due_at is None) == (self.delay_s is None):
            raise ValueError("a new timer needs exactly one of due_at and delay_s")


@dataclass(frozen=True, slots=True)
class Created:
    timer: TimerRecord
    #: False: the key was already taken by this same request (a replay).
    created: bool


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of a cancel or reschedule."""

    #: None: no such timer.
    timer: TimerRecord | None
    #: False: the timer was not waiting; ``timer`` shows its status now.
    applied: bool


@dataclass(frozen=True, slots=True)
class TimerPage:
    timers: list[TimerRecord]
    #: Pass as ``after_id`` for the next page; None on the last page.
    next_after_id: int | None


class KeyConflict(Exception):
    """Idempotency keys already name timers created by other requests."""

    def __init__(self, existing: Mapping[int, TimerRecord]) -> None:
        #: Request index (0 for a single create) to the timer that holds its key.
        self.existing = dict(existing)
        super().__init__(f"{len(existing)} idempotency keys are used by other requests")


#: What one create came to, in ``create_each``.
Outcome = Created | KeyConflict | StorageError


class _NotConsecutive(Exception):
    """A multi-row INSERT's ids were not first, first + step, …: insert row by row."""


def _header_names(raw: str | None) -> tuple[str, ...] | None:
    if raw is None or not raw.strip():
        return ()
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return tuple(str(name) for name in parsed) if isinstance(parsed, dict) else None


#: TIMER_COLUMNS' order: TimerRecord's stored fields, then headers, body_bytes, db_now.
_STORED = len(TimerRecord.__dataclass_fields__) - 3
_HEADERS, _BODY_BYTES, _DB_NOW = _STORED, _STORED + 1, _STORED + 2


def to_record(row: Sequence[Any]) -> TimerRecord:
    """A TIMER_COLUMNS row as a record, by position (a batch reads a thousand of them)."""
    due_at: datetime = row[4]
    header_names = _header_names(row[_HEADERS])
    time_left_s = max(0.0, (due_at - row[_DB_NOW]).total_seconds())
    values: tuple[Any, ...] = (*row[:_STORED], header_names, row[_BODY_BYTES], time_left_s)
    return TimerRecord(*values)


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


def _row_values(timer: NewTimer) -> dict[str, Any]:
    values = {name: getattr(timer, name) for name in INSERT_COLUMNS}
    values.update(due_params(due_at=timer.due_at, delay_s=timer.delay_s))
    return values


def _row_tuple(timer: NewTimer) -> tuple[object, ...]:
    """_row_values in ROW_VALUES order."""
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

    rows = map(_row_tuple, timers)
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
        timer.idempotency_hash, _header_names(timer.headers), body_bytes, time_left_s,
    )  # fmt: skip


def _check_order(
    records: Sequence[TimerRecord], timers: Sequence[NewTimer], ids: Sequence[int] | None
) -> None:
    """_NotConsecutive unless ``records`` are ``timers`` in order (with ``ids``, when known)."""
    got = [(r.url, r.idempotency_key) for r in records]
    if got != [(t.url, t.idempotency_key) for t in timers] or (
        ids is not None and [r.id for r in records] != list(ids)
    ):
        raise _NotConsecutive


def _holders(conn: Connection, keys: Sequence[str]) -> dict[str | None, TimerRecord]:
    """The timers holding any of ``keys``, by key."""
    if not keys:
        return {}
    rows = conn.execute(SELECT_BY_KEYS, {"keys": list(keys)})
    return {record.idempotency_key: record for record in map(to_record, rows)}


class TimerStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- reads ---------------------------------------------------------------

    @storage_operation
    def get(self, *, timer_id: int) -> TimerRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(SELECT_TIMER, {"timer_id": timer_id}).one_or_none()
        return None if row is None else to_record(row)

    @storage_operation
    def list_page(
        self,
        *,
        status: str | None = None,
        idempotency_key: str | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> TimerPage:
        """Up to ``limit`` timers with ids above ``after_id``, in id order."""
        statement = select_page(
            status=status, idempotency_key=idempotency_key, after_id=after_id, limit=limit + 1
        )
        with self._engine.connect() as conn:
            rows = conn.execute(statement).all()
        timers = [to_record(row) for row in rows[:limit]]
        more = len(rows) > limit
        return TimerPage(timers=timers, next_after_id=timers[-1].id if more else None)

    @storage_operation
    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- creates -------------------------------------------------------------

    @storage_operation
    def create(self, *, timer: NewTimer) -> Created:
        """Insert one timer, or find the one its idempotency key already names.

        Raises KeyConflict (index 0) when the key names a different request's timer.
        """
        return self.create_many(timers=[timer])[0]

    @storage_operation
    def create_many(self, *, timers: Sequence[NewTimer]) -> list[Created]:
        """Insert all of ``timers`` in one transaction, in order, or none of them.

        A timer whose key is taken by the same request is not inserted again:
        its entry is the existing timer. Raises KeyConflict naming every
        index whose key is taken by another request; nothing is inserted then.
        """
        keys = [t.idempotency_key for t in timers if t.idempotency_key is not None]
        if len(set(keys)) != len(keys):
            raise ValueError("an idempotency key appears twice in one batch")
        max_rows = len(timers) or 1
        for attempt in range(1, _KEY_RACE_TRIES + 1):
            try:
                return self._create_all(timers, keys, max_rows=max_rows)
            except _NotConsecutive:
                log.warning("multi-row INSERT ids were not consecutive; inserting row by row")
                max_rows = 1
            except StorageError as exc:
                if exc.code != DUPLICATE_KEY or not keys or attempt == _KEY_RACE_TRIES:
                    raise
                log.info("idempotency key race lost (try %d); reading the winner", attempt)
        return self._create_all(timers, keys, max_rows=1)

    @storage_operation
    def _create_all(
        self, timers: Sequence[NewTimer], keys: Sequence[str], *, max_rows: int
    ) -> list[Created]:
        with self._engine.begin() as conn:
            existing = self._taken(conn, timers, keys)
            fresh = [t for t in timers if t.idempotency_key not in existing]
            records = iter(self._insert(conn, fresh, max_rows=max_rows))
        return [
            Created(existing[t.idempotency_key], created=False)
            if t.idempotency_key in existing
            else Created(next(records), created=True)
            for t in timers
        ]

    def _taken(
        self, conn: Connection, timers: Sequence[NewTimer], keys: Sequence[str]
    ) -> dict[str | None, TimerRecord]:
        """Timers already holding ``keys``; KeyConflict when any was another request's."""
        found = _holders(conn, keys)
        conflicts = {
            index: found[t.idempotency_key]
            for index, t in enumerate(timers)
            if t.idempotency_key in found
            and found[t.idempotency_key].idempotency_hash != t.idempotency_hash
        }
        if conflicts:
            raise KeyConflict(conflicts)
        return dict(found)

    def _insert(
        self, conn: Connection, timers: Sequence[NewTimer], *, max_rows: int
    ) -> list[TimerRecord]:
        if not timers:
            return []
        if conn.dialect.insert_returning:
            # MariaDB answers with the rows it inserted: no SELECT back.
            return self._insert_returning(conn, timers, max_rows=max_rows)
        if len(timers) == 1:
            (timer,) = timers
            timer_id = int(conn.execute(INSERT_TIMER, _row_values(timer)).lastrowid)
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
        self, conn: Connection, timers: Sequence[NewTimer], *, max_rows: int
    ) -> list[TimerRecord]:
        if len(timers) == 1:
            return [to_record(conn.execute(INSERT_TIMER_RETURNING, _row_values(timers[0])).one())]
        records: list[TimerRecord] = []
        for chunk in _chunks(timers, max_rows=max_rows):
            rows = _insert_rows(conn, chunk, returning=True)
            records += map(_inserted, chunk, rows)
        # The rows come back in the order they were given, so their ids rise; check that.
        if any(a.id >= b.id for a, b in itertools.pairwise(records)):
            raise _NotConsecutive
        return records

    def create_each(self, *, timers: Sequence[NewTimer]) -> list[Outcome]:
        """``create`` for each timer, as if called one after another: one transaction if it can.

        Each entry is what ``create`` would return, or the KeyConflict or
        StorageError it would raise; StorageUnavailable is raised, for all.
        Unrelated callers' creates go together, so one's failure never fails
        another's: when the shared
        transaction fails (a key raced in from elsewhere, a value the server
        refuses), each timer is created on its own. A key that repeats within
        ``timers`` is settled after its first use, as a later ``create`` would be.
        """
        firsts: dict[str, int] = {}
        shared, later = [], []
        for index, timer in enumerate(timers):
            key = timer.idempotency_key
            if key is not None and firsts.setdefault(key, index) != index:
                later.append(index)
            else:
                shared.append(index)
        results: dict[int, Outcome] = {}
        try:
            answers = self._create_shared([timers[i] for i in shared], list(firsts))
        except StorageUnavailable:
            raise
        except (StorageError, _NotConsecutive) as exc:
            log.info("a group of %d creates failed together (%s); one by one", len(shared), exc)
            later = shared + later
        else:
            results.update(zip(shared, answers, strict=True))
        for index in sorted(later):
            results[index] = self._create_alone(timers[index])
        return [results[index] for index in range(len(timers))]

    def _create_alone(self, timer: NewTimer) -> Outcome:
        try:
            return self.create(timer=timer)
        except StorageUnavailable:
            raise
        except (KeyConflict, StorageError) as exc:
            return exc

    @storage_operation
    def _create_shared(
        self, timers: Sequence[NewTimer], keys: Sequence[str]
    ) -> list[Created | KeyConflict]:
        """Timers with distinct keys in one transaction; a key taken answers for its own."""
        answers: list[Created | KeyConflict | None] = []
        with self._engine.begin() as conn:
            found = _holders(conn, keys)
            for timer in timers:
                holder = found.get(timer.idempotency_key) if timer.idempotency_key else None
                if holder is None:
                    answers.append(None)
                elif holder.idempotency_hash == timer.idempotency_hash:
                    answers.append(Created(holder, created=False))
                else:
                    answers.append(KeyConflict({0: holder}))
            fresh = [t for t, answer in zip(timers, answers, strict=True) if answer is None]
            records = iter(self._insert(conn, fresh, max_rows=len(fresh) or 1))
        return [Created(next(records), created=True) if a is None else a for a in answers]

    # -- changes -------------------------------------------------------------

    @storage_operation
    def cancel(self, *, timer_id: int) -> Transition:
        """A waiting timer becomes ``cancelled``; any other is left as it is."""
        with self._engine.begin() as conn:
            applied = bool(conn.execute(CANCEL_TIMER, {"timer_id": timer_id}).rowcount)
            row = conn.execute(SELECT_TIMER, {"timer_id": timer_id}).one_or_none()
        return Transition(timer=None if row is None else to_record(row), applied=applied)

    @storage_operation
    def reschedule(
        self, *, timer_id: int, due_at: datetime | None = None, delay_s: float | None = None
    ) -> Transition:
        """A waiting timer becomes due at ``due_at`` (naive UTC) or ``delay_s`` from now."""
        if (due_at is None) == (delay_s is None):
            raise ValueError("reschedule needs exactly one of due_at and delay_s")
        params = {"timer_id": timer_id, **due_params(due_at=due_at, delay_s=delay_s)}
        with self._engine.begin() as conn:
            applied = bool(conn.execute(RESCHEDULE_TIMER, params).rowcount)
            row = conn.execute(SELECT_TIMER, {"timer_id": timer_id}).one_or_none()
        return Transition(timer=None if row is None else to_record(row), applied=applied)
