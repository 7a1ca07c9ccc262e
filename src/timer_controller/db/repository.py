"""Every database operation the controller and the CLI run, as named intentions.

Statements are built in ``statements.py``; this module runs each in one
short transaction, and driver errors leave it as ``StorageError``
(``errors.py``). The hot paths (claim, record, release, sweep) are
ORM-enabled Core statements that select columns and update in bulk: loading
ORM objects costs about seven times as much. All "now"s are the database's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from timer_controller.db import statements as sql
from timer_controller.db.clock import utc_now
from timer_controller.db.errors import describe_error, is_data_error, storage_operation
from timer_controller.db.models import INT_MAX, MEDIUMTEXT_MAX_BYTES
from timer_controller.db.prepared import ClaimCursor, ClaimStatements, HeldConnections
from timer_controller.db.setup import named_lock
from timer_controller.domain.task import ClaimedTask, Status, Transition

log = logging.getLogger(__name__)

_NO_SYNC = {"synchronize_session": False}
# Outcome writes carry per-row values in their SQL text, so each is compiled
# once and never again: caching them would fill SQLAlchemy's statement cache
# with dead entries that the garbage collector then keeps walking.
_ONE_OFF = {"synchronize_session": False, "compiled_cache": None}


@dataclass(frozen=True, slots=True)
class ClaimResult:
    tasks: list[ClaimedTask]
    #: The database's clock while the claim ran; None when nothing was claimed.
    db_now: datetime | None = None
    #: Local UTC just before the SELECT: the database read ``db_now`` after it.
    local_before: datetime | None = None
    #: ``time.monotonic()`` just after the SELECT: the database read ``db_now`` before it.
    selected_at: float = 0.0
    #: How long the SELECT took: the uncertainty of pairing ``db_now`` with ``local_before``.
    select_s: float = 0.0


@dataclass(frozen=True, slots=True)
class TaskView:
    id: int
    url: str
    method: str | None
    status: str
    #: None when the row holds a zero or invalid date (the driver reads those as None).
    due_at: datetime | None
    attempts: int
    max_attempts: int | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    fired_at: datetime | None
    finished_at: datetime | None
    owner: str | None


@dataclass(frozen=True, slots=True)
class Stats:
    by_status: dict[str, int]
    oldest_due_waiting: datetime | None
    finished_last_minute: int
    db_now: datetime


def _write(conn: Connection, status: Status, batch: Sequence[Transition], owner: str | None) -> int:
    text, params = sql.outcome_update(status=status, transitions=batch, owner=owner)
    return int(conn.exec_driver_sql(text, params).rowcount)


def _write_alone(conn: Connection, transition: Transition, owner: str | None) -> int:
    """One transition; if the database refuses its values, the task fails with why."""
    try:
        return _write(conn, transition.status, [transition], owner)
    except DBAPIError as exc:
        if not is_data_error(exc):
            raise
        reason = f"could not record the outcome: {describe_error(exc)}"
        log.warning("task %d: %s", transition.task_id, reason)
        failed = dataclasses.replace(
            transition, status=Status.FAILED, status_code=None, error=reason, next_due_at=None
        )
        return _write(conn, Status.FAILED, [failed], owner)


def read_claims(
    rows: Sequence[Any], *, db_now: datetime, max_body_bytes: int
) -> tuple[list[ClaimedTask], dict[int, str]]:
    """The tasks in a claim's rows, and why each row that cannot be one cannot."""
    tasks: list[ClaimedTask] = []
    poison: dict[int, str] = {}
    for row in rows:
        try:
            reason = unclaimable(row, max_body_bytes=max_body_bytes)
            if reason is None:
                tasks.append(
                    ClaimedTask(
                        id=row.id,
                        url=row.url,
                        due_at=row.due_at,
                        attempt=row.attempts + 1,
                        max_attempts=row.max_attempts,
                        method=row.method,
                        headers=row.headers,
                        body=row.body,
                        delay_s=max(0.0, (row.due_at - db_now).total_seconds()),
                    )
                )
        except Exception as exc:  # whatever one row holds, it fails alone
            reason = f"cannot read the row: {type(exc).__name__}: {exc}"
        if reason is not None:
            poison[row.id] = reason
    return tasks, poison


def within_ahead_limit(rows: list[Any], ahead_limit: int) -> list[Any]:
    """The rows due, and the first ``ahead_limit`` not yet due, in (due_at, id) order.

    The due rows come first, so this is a prefix. A row that cannot be read
    as a time (a zero date) counts as due: it is failed at once.
    """
    db_now = rows[0].db_now
    due = 0
    for row in rows:
        if isinstance(row.due_at, datetime) and row.due_at > db_now:
            break
        due += 1
    return rows[: due + ahead_limit]


def unclaimable(row: Any, *, max_body_bytes: int) -> str | None:
    """Why a selected row cannot be delivered, or None."""
    if not isinstance(row.due_at, datetime):
        # The driver reads a zero or invalid DATETIME back as None.
        return "due_at is not a valid time (a zero date such as 0000-00-00?)"
    if row.attempts >= INT_MAX:
        return f"attempts is {row.attempts}, the most its column holds: no attempt can be counted"
    if row.body is None and row.body_bytes is not None:
        return (
            f"body is {row.body_bytes} bytes, more than MAX_REQUEST_BODY ({max_body_bytes}); "
            "it was not loaded"
        )
    return None


class TaskRepository:
    def __init__(self, engine: Engine, *, max_body_bytes: int = MEDIUMTEXT_MAX_BYTES) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._engine = engine
        #: Bodies longer than this are never loaded (see ``claim_select``).
        self._max_body_bytes = max_body_bytes
        # Claims and outcome writes run on connections their threads keep.
        self._held = HeldConnections(engine)
        self._claim_sql = ClaimStatements(engine.dialect, max_body_bytes=max_body_bytes)
        self._cursor = ClaimCursor()

    @storage_operation
    def open_thread_connection(self) -> None:
        """Open the connection the calling thread keeps (claims, writes) now, if it has none."""
        self._held.get()

    def close_thread_connection(self) -> None:
        """Close the connection the calling thread kept (claims, writes), if any."""
        self._held.drop()

    # -- the claim loop's hot paths ---------------------------------------

    @storage_operation
    def claim_due(
        self,
        *,
        owner: str,
        limit: int,
        lease_s: float,
        lookahead_s: float,
        skip_prefixes: Collection[str] = (),
        ahead_limit: int | None = None,
    ) -> ClaimResult:
        """Claim up to ``limit`` waiting tasks due within ``lookahead_s``, oldest first.

        One short transaction: lock with SKIP LOCKED so concurrent pods get
        disjoint rows, write owner and lease, commit. A row this process
        could not deliver (a zero date, attempts at the column's maximum, a
        body over the limit, anything that fails to read) is failed in the
        same transaction with its reason, so no claim ever holds one.
        Of the rows not yet due, only the first ``ahead_limit`` are taken;
        the others were locked only until the commit, and the next claim
        resumes at them.
        """
        conn = self._held.get()
        skip = tuple(skip_prefixes)
        after = self._cursor.resume_after(skip)
        try:
            with conn.begin():
                local_before, started = utc_now(), time.monotonic()
                select = self._claim_sql.select(
                    limit=limit, lookahead_s=lookahead_s, skip_prefixes=skip, resume=bool(after)
                )
                rows = select.fetch(conn, values=after)
                if rows and skip:
                    claim = self._claim_sql.rows(lookahead_s=lookahead_s)
                    rows = claim.fetch(conn, ids=[r.id for r in rows])
                selected_at = time.monotonic()
                selected = len(rows)
                if rows and ahead_limit is not None:
                    rows = within_ahead_limit(rows, ahead_limit)
                if not rows:
                    self._cursor.clear()
                    return ClaimResult(tasks=[])
                db_now: datetime = rows[0].db_now
                tasks, poison = read_claims(
                    rows, db_now=db_now, max_body_bytes=self._max_body_bytes
                )
                tasks = self._mark_claimed(conn, tasks, poison, owner=owner, lease_s=lease_s)
                if poison:
                    conn.execute(sql.poison_update(reasons=poison), execution_options=_ONE_OFF)
        except SQLAlchemyError:
            self._held.drop()
            self._cursor.clear()
            raise
        self._cursor.ended(
            (rows[-1].due_at, rows[-1].id),
            full=selected >= limit or len(rows) < selected,
            skip_prefixes=skip,
            resumed=after is not None,
            started=started,
        )
        for task_id, reason in poison.items():
            log.warning(
                "task %d failed without firing: %s",
                task_id,
                reason,
                extra={"event": "failed", "task_id": task_id, "error": reason},
            )
        return ClaimResult(
            tasks=tasks,
            db_now=db_now,
            local_before=local_before,
            selected_at=selected_at,
            select_s=selected_at - started,
        )

    def _mark_claimed(
        self,
        conn: Connection,
        tasks: list[ClaimedTask],
        poison: dict[int, str],
        *,
        owner: str,
        lease_s: float,
    ) -> list[ClaimedTask]:
        """Write the claim of ``tasks``; those the database refuses join ``poison``.

        A data error (a value out of range, say) rolls back only its own
        statement, so the rows are tried one by one to find the bad ones.
        """
        if not tasks:
            return tasks
        try:
            self._claim_sql.update(owner=owner, lease_s=lease_s).execute(
                conn, ids=[t.id for t in tasks]
            )
            return tasks
        except DBAPIError as exc:
            if not is_data_error(exc):
                raise
        kept = []
        for task in tasks:
            try:
                conn.execute(sql.claim_update(task_ids=[task.id], owner=owner, lease_s=lease_s))
                kept.append(task)
            except DBAPIError as exc:
                if not is_data_error(exc):
                    raise
                poison[task.id] = f"the database refused to claim it: {describe_error(exc)}"
        return kept

    @storage_operation
    def record_outcomes(self, *, owner: str | None, transitions: Sequence[Transition]) -> int:
        """Write a batch of transitions: one UPDATE per kind, one transaction.

        A row is written only while still claimed for the attempt that was
        sent (and by ``owner``, when given): if its lease expired and it was
        claimed again, the newer attempt's outcome is the one kept.
        """
        by_status: dict[Status, list[Transition]] = {}
        for transition in transitions:
            by_status.setdefault(transition.status, []).append(transition)
        written = 0
        # Core on the writer thread's kept connection, not an ORM session per
        # batch: a third of the CPU of a 60-row write (docs/benchmarks.md).
        conn = self._held.get()
        try:
            with conn.begin():
                for status, batch in by_status.items():
                    try:
                        written += _write(conn, status, batch, owner)
                    except DBAPIError as exc:
                        if not is_data_error(exc):
                            raise
                        # Only that statement was rolled back: find the row at fault.
                        written += sum(_write_alone(conn, t, owner) for t in batch)
        except SQLAlchemyError:
            self._held.drop()
            raise
        if Status.WAITING in by_status:
            self._cursor.forget()  # a retry may be due before where claims resume
        return written

    @storage_operation
    def renew_leases(self, *, owner: str, task_ids: Iterable[int], lease_s: float) -> int:
        """Extend the leases this holder still has on ``task_ids`` to now + ``lease_s``."""
        ids = list(task_ids)
        if not ids:
            return 0
        with self._sessions() as session, session.begin():
            result = session.execute(
                sql.renew_update(owner=owner, task_ids=ids, lease_s=lease_s),
                execution_options=_NO_SYNC,
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    @storage_operation
    def release(self, *, owner: str, task_ids: Iterable[int]) -> int:
        """Hand back claims that were never fired, so any pod fires them at once."""
        ids = list(task_ids)
        if not ids:
            return 0
        with self._sessions() as session, session.begin():
            result = session.execute(
                sql.release_update(owner=owner, task_ids=ids), execution_options=_NO_SYNC
            )
        self._cursor.forget()  # waiting again, and older than where claims resume
        return int(result.rowcount)  # type: ignore[attr-defined]

    @storage_operation
    def sweep_expired_leases(self, *, default_max_attempts: int, limit: int = 1000) -> int:
        """Return tasks whose pod vanished to ``waiting`` (reads claimed rows only)."""
        with self._sessions() as session, session.begin():
            result = session.execute(
                sql.sweep_update(default_max_attempts=default_max_attempts, limit=limit),
                execution_options=_NO_SYNC,
            )
        if result.rowcount:  # type: ignore[attr-defined]
            self._cursor.forget()
        return int(result.rowcount)  # type: ignore[attr-defined]

    # -- upkeep ------------------------------------------------------------

    @storage_operation
    def purge_finished(
        self,
        *,
        older_than_s: float,
        batch_size: int,
        pause: Callable[[], bool],
    ) -> int | None:
        """Delete finished tasks older than ``older_than_s``, ``batch_size`` rows at a time.

        Holds a named lock so one pod at a time does it; returns None when
        another holds it. ``pause`` runs between batches and returns False to stop.
        Deleting by primary key in small batches never holds a long lock.
        """
        deleted = 0
        with self._engine.connect() as conn, named_lock(conn, sql.RETENTION_LOCK, wait_s=0) as got:
            if not got:
                return None
            while True:
                ids = (
                    conn.execute(sql.purgeable_ids(older_than_s=older_than_s, limit=batch_size))
                    .scalars()
                    .all()
                )
                if ids:
                    deleted += conn.execute(sql.purge_delete(task_ids=ids)).rowcount
                conn.commit()
                if len(ids) < batch_size or not pause():
                    return deleted

    @storage_operation
    def count_backlog(self) -> int:
        with self._sessions() as session:
            return int(session.execute(sql.backlog_count()).scalar_one())

    @storage_operation
    def ping(self) -> None:
        with self._sessions() as session:
            session.execute(sql.ping())

    @storage_operation
    def db_now(self) -> datetime:
        with self._sessions() as session:
            now: datetime = session.execute(sql.db_now_select()).scalar_one()
        return now

    # -- the operator CLI ---------------------------------------------------

    @storage_operation
    def schedule(
        self,
        *,
        url: str,
        due_at: datetime | None = None,
        delay_s: float = 0.0,
        method: str | None = None,
        headers: str | None = None,
        body: str | None = None,
        max_attempts: int | None = None,
    ) -> int:
        """Insert one task; ``due_at`` (naive UTC) or ``delay_s`` from the database's now."""
        statement = sql.schedule_insert(
            url=url,
            due_at=due_at,
            delay_s=delay_s,
            method=method,
            headers=headers,
            body=body,
            max_attempts=max_attempts,
        )
        with self._sessions() as session, session.begin():
            result = session.execute(statement)
            return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]

    @storage_operation
    def get(self, task_id: int) -> TaskView | None:
        with self._sessions() as session:
            row = session.execute(sql.task_view(task_id)).one_or_none()
        return None if row is None else TaskView(**row._asdict())

    @storage_operation
    def cancel(self, task_id: int) -> bool:
        """Cancel a waiting task; False when it is not waiting (or does not exist)."""
        with self._sessions() as session, session.begin():
            result = session.execute(sql.cancel_update(task_id), execution_options=_NO_SYNC)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    @storage_operation
    def stats(self) -> Stats:
        with self._sessions() as session:
            db_now: datetime = session.execute(sql.db_now_select()).scalar_one()
            counts = session.execute(sql.count_by_status()).all()
            oldest = session.execute(sql.oldest_due_waiting()).scalar_one()
            recent = session.execute(sql.finished_since(db_now - timedelta(minutes=1))).scalar_one()
        return Stats(
            by_status={status: int(n) for status, n in counts},
            oldest_due_waiting=oldest,
            finished_last_minute=int(recent),
            db_now=db_now,
        )
