"""The claim's fast path: statements compiled once, on a connection kept per thread.

A claim of ten rows used to cost about 1.7 ms of CPU, most of it SQLAlchemy
building, caching and compiling the two statements again, checking a
connection out of the pool and rolling it back on return; the SQL itself is
about 0.2 ms (docs/benchmarks.md). Here the statements that
``statements.py`` builds are compiled once to their SQL text and run as such,
on the driver's cursor (``driver_cursor``), on a connection that the calling
thread keeps between claims. The claim is still SELECT … FOR UPDATE SKIP
LOCKED and UPDATE in one short transaction.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, Dialect, Engine, Executable, bindparam
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from timer_controller.db import statements as sql

#: The one parameter rendered at run time: the claimed ids of an UPDATE.
IDS = "ids"


def ids_param() -> BindParameter[Any]:
    """Stands for a list of task ids in a statement compiled by ``compile_once``."""
    return bindparam(IDS, expanding=True)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement's SQL text and its parameters, in placeholder order.

    Most are fixed; those named in ``late`` (by position) are given to ``run``.
    """

    sql: str
    params: tuple[Any, ...]
    late: tuple[tuple[int, str], ...] = ()

    def fetch(
        self,
        conn: Connection,
        *,
        ids: Collection[int] = (),
        values: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """The rows, each with its columns as attributes (``row.id``)."""
        sql, params = self._filled(ids, values)
        with driver_cursor(conn, sql, params) as cursor:
            found = cursor.fetchall()
            make = _row_type(tuple(column[0] for column in cursor.description))._make
            return [make(row) for row in found]

    def execute(
        self,
        conn: Connection,
        *,
        ids: Collection[int] = (),
        values: Mapping[str, Any] | None = None,
    ) -> int:
        """Run it; the rows it matched."""
        sql, params = self._filled(ids, values)
        with driver_cursor(conn, sql, params) as cursor:
            return int(cursor.rowcount)

    def _filled(
        self, ids: Collection[int], values: Mapping[str, Any] | None
    ) -> tuple[str, tuple[Any, ...]]:
        sql, params = self.sql, self.params
        if ids:
            # Ids are integers this process read from the table: rendered as
            # digits they cannot carry SQL, and the text needs no re-compiling.
            sql = sql.replace(_IDS_TOKEN, ",".join(f"{i:d}" for i in ids))
        if self.late:
            filled = list(params)
            for position, name in self.late:
                filled[position] = (values or {})[name]
            params = tuple(filled)
        return sql, params


@contextlib.contextmanager
def driver_cursor(conn: Connection, sql: str, params: tuple[Any, ...]) -> Iterator[Any]:
    """``sql`` run on the driver's own cursor, inside ``conn``'s transaction.

    The claim's statements used to go through ``exec_driver_sql``: its
    execution context and result took about a fifth of a 10-row claim's CPU
    (0.71 ms against 0.31 ms for the same SQL through bare MySQLdb, issue 12).
    What SQLAlchemy would do around it is kept: the engine's cursor events
    fire (tracing hooks see the claim), a driver error becomes a
    ``DBAPIError``, and a lost connection is invalidated.
    """
    dbapi_conn = conn.connection.dbapi_connection
    assert dbapi_conn is not None, "a connection inside a transaction has its driver's"
    cursor = dbapi_conn.cursor()
    try:
        events = conn.dispatch
        if events.before_cursor_execute:
            for hook in events.before_cursor_execute:
                hook(conn, cursor, sql, params, None, False)
        try:
            cursor.execute(sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            lost = conn.dialect.is_disconnect(exc, dbapi_conn, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                sql,
                params,
                exc,
                conn.dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=conn.dialect,
            ) from exc
        if events.after_cursor_execute:
            for hook in events.after_cursor_execute:
                hook(conn, cursor, sql, params, None, False)
        yield cursor
    finally:
        # Closing reads what is left of the results: on a lost connection that
        # fails too, and the error that matters is the one already raised.
        with contextlib.suppress(conn.dialect.loaded_dbapi.Error):
            cursor.close()


@functools.cache
def _row_type(names: tuple[str, ...]) -> Any:
    """A named tuple for the rows of one statement's columns."""
    return collections.namedtuple("ClaimRow", names)


_IDS_TOKEN = f"__[POSTCOMPILE_{IDS}]"


def compile_once(
    statement: Executable, dialect: Dialect, *, late: Set[str] = frozenset()
) -> Compiled:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    order: Sequence[str] = [name for name in compiled.positiontup or () if name != IDS]
    values = compiled.params
    return Compiled(
        compiled.string,
        tuple(values[name] for name in order),
        tuple((position, name) for position, name in enumerate(order) if name in late),
    )


class ClaimStatements:
    """The claim's SELECT and UPDATE, compiled on first use for each set of arguments.

    A pod claims with one owner, lease and look-ahead and a few limits, so
    a handful of texts serve it for its whole life.
    """

    MAX_KEPT = 64

    def __init__(self, dialect: Dialect, *, max_body_bytes: int) -> None:
        self._dialect = dialect
        self._max_body_bytes = max_body_bytes
        self._kept: dict[tuple[object, ...], Compiled] = {}

    def select(
        self,
        *,
        limit: int,
        lookahead_s: float,
        skip_prefixes: tuple[str, ...] = (),
        resume: bool = False,
    ) -> Compiled:
        # Destinations at their limit change now and then: each set is a key of its own.
        key = ("select", limit, lookahead_s, skip_prefixes, resume)
        found = self._kept.get(key)
        if found is None:
            statement = sql.claim_select(
                limit=limit,
                lookahead_s=lookahead_s,
                max_body_bytes=self._max_body_bytes,
                skip_prefixes=skip_prefixes,
                resume=resume,
                # Skipping may pass over many rows: read ids, then lock those (claim_rows).
                ids_only=bool(skip_prefixes),
            )
            found = self._keep(key, statement, late={sql.AFTER_DUE, sql.AFTER_ID})
        return found

    def rows(self, *, lookahead_s: float) -> Compiled:
        """The claim of the candidates a select of ids only found."""
        key: tuple[object, ...] = ("rows", lookahead_s)
        found = self._kept.get(key)
        if found is None:
            statement = sql.claim_rows(
                task_ids=ids_param(), lookahead_s=lookahead_s, max_body_bytes=self._max_body_bytes
            )
            found = self._keep(key, statement)
        return found

    def update(self, *, owner: str, lease_s: float) -> Compiled:
        key = ("update", owner, lease_s)
        found = self._kept.get(key)
        if found is None:
            statement = sql.claim_update(task_ids=ids_param(), owner=owner, lease_s=lease_s)
            found = self._keep(key, statement)
        return found

    def _keep(
        self, key: tuple[object, ...], statement: Executable, *, late: Set[str] = frozenset()
    ) -> Compiled:
        # Compiled after the first connection: the dialect knows the server by then.
        if len(self._kept) >= self.MAX_KEPT:
            self._kept.clear()
        compiled = self._kept[key] = compile_once(statement, self._dialect, late=late)
        return compiled


#: How long claims may resume where the last one ended before one starts
#: from the oldest due row again. A row that turns waiting behind the
#: resume point (inserted due now, handed back by another pod, its lease
#: swept) is claimed within this; an idle loop already waits POLL_INTERVAL
#: (0.5 s by default) between claims, so no row waits longer than it could.
RESUME_FOR_S = 0.1


@dataclass(frozen=True, slots=True)
class _Position:
    due_at: datetime
    id: int
    skip_prefixes: tuple[str, ...]
    #: Monotonic time of the claim that started from the oldest row.
    since: float
    epoch: int


class ClaimCursor:
    """Where the claims thread's last full claim ended, so the next can start there.

    Each claim marks the rows it takes ``claimed``, which leaves their
    ``(status, due_at)`` index entries delete-marked until InnoDB's purge
    removes them, and every claim that starts from the oldest due row walks
    all of them first. At ten rows a claim, that walk was most of the
    database's CPU per claim: 1.0-1.6 ms for a SELECT just after 1,500 rows
    were claimed, 0.2 ms once purged (docs/benchmarks.md). A claim that
    came back full resumes after its last row; everything before that was
    claimed or locked by another claim. Rows that turn waiting behind it are
    found by the next claim from the start: after a short claim, after
    ``forget`` (this process handed rows back or set a retry), when the
    skipped destinations change, and at least every ``RESUME_FOR_S``.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._epoch = 0

    def resume_after(self, skip_prefixes: tuple[str, ...]) -> Mapping[str, Any] | None:
        """The parameters of a claim that resumes, or None to start from the oldest row."""
        at: _Position | None = getattr(self._local, "at", None)
        # Read before the claim: a ``forget`` while it runs must not be lost.
        self._local.epoch = self._epoch
        if (
            at is None
            or at.epoch != self._epoch
            or at.skip_prefixes != skip_prefixes
            or time.monotonic() - at.since > RESUME_FOR_S
        ):
            self._local.at = None
            return None
        return {sql.AFTER_DUE: at.due_at, sql.AFTER_ID: at.id}

    def ended(
        self,
        last: tuple[object, int],
        *,
        full: bool,
        skip_prefixes: tuple[str, ...],
        resumed: bool,
        started: float,
    ) -> None:
        """Note where a committed claim ended: ``last`` is its last row's (due_at, id)."""
        at: _Position | None = getattr(self._local, "at", None)
        due_at, task_id = last
        if not full or not isinstance(due_at, datetime):
            self.clear()  # nothing more was due, or a zero date: no place to resume from
            return
        since = at.since if resumed and at is not None else started
        epoch: int = getattr(self._local, "epoch", -1)
        self._local.at = _Position(due_at, task_id, skip_prefixes, since, epoch)

    def clear(self) -> None:
        """This thread's next claim starts from the oldest row (after no rows, or an error)."""
        self._local.at = None

    def forget(self) -> None:
        """Rows went back to waiting: every thread's next claim starts from the oldest."""
        self._epoch += 1


class HeldConnections:
    """One connection per thread, kept open from one claim to the next.

    The claims lane is a single thread, so the claim finds its connection
    where the last one left it: no pool checkout, and no rollback on return.
    After any database error the connection is dropped and the next call
    opens a new one, as a pooled checkout would have.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()

    def get(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._engine.connect()
            self._local.conn = conn
        return conn

    def drop(self) -> None:
        """Close this thread's connection (after an error, or at the end)."""
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        try:
            conn.close()
        except SQLAlchemyError:
            conn.invalidate()
