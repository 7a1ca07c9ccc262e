"""What the timer store hands out and takes in: records, new timers, outcomes (no SQL)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from timer_controller.domain.task import Status
from timer_controller.errors import StorageError


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


_WAITING = Status.WAITING.value
_read_time = datetime.fromisoformat
#: What the server decided for a row just inserted: id, due_at and created_at as
#: it writes a DATETIME(6) (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC), and the seconds until
#: due (0 when due). Text, as it comes: an answer writes the times as text again.
Decided = tuple[int, str, str, float]
SERVER_TIME = "%Y-%m-%d %H:%M:%S.%f"


def inserted_record(timer: NewTimer, decided: Decided) -> TimerRecord:
    """The record of a row just inserted from ``timer``: what the server decided, the
    values the row was given, and the defaults of the rest."""
    timer_id, due_at, created_at, time_left_s = decided
    body_bytes = None if timer.body is None else len(timer.body.encode())
    return TimerRecord(
        timer_id, timer.url, timer.method, _WAITING, _read_time(due_at), 0, timer.max_attempts,
        None, None, _read_time(created_at), None, None, timer.idempotency_key,
        timer.idempotency_hash, header_names(timer.headers), body_bytes, time_left_s,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchCreated:
    """What a batch create did, entry by entry, without a record per row.

    A thousand records (and their ``Created``) cost more than the rest of
    the answer; what the server decided is kept beside each entry's NewTimer
    instead, and records are made only when asked for (``created``).
    """

    #: Every entry, in request order.
    timers: list[NewTimer]
    #: For the entries inserted, in order: what the server decided.
    decided: list[Decided]
    #: Request index to the timer its key already named (a replay): not inserted.
    replayed: dict[int, TimerRecord]

    def created(self) -> list[Created]:
        """Each entry as ``create`` would answer it."""
        decided = iter(self.decided)
        return [
            Created(self.replayed[index], created=False)
            if index in self.replayed
            else Created(inserted_record(timer, next(decided)), created=True)
            for index, timer in enumerate(self.timers)
        ]


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


class NotConsecutive(Exception):
    """A multi-row INSERT's ids were not first, first + step, …: insert row by row."""


def header_names(raw: str | None) -> tuple[str, ...] | None:
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
    names = header_names(row[_HEADERS])
    time_left_s = max(0.0, (due_at - row[_DB_NOW]).total_seconds())
    values: tuple[Any, ...] = (*row[:_STORED], names, row[_BODY_BYTES], time_left_s)
    return TimerRecord(*values)
