"""The claim's fast path: statements compiled once, on a connection kept per thread.

A claim of ten rows used to cost about 1.7 ms of CPU, most of it SQLAlchemy
building, caching and compiling the two statements again, checking a
connection out of the pool and rolling it back on return; the SQL itself is
about 0.2 ms (docs/benchmarks.md). Here the statements that
``statements.py`` builds are compiled once to their SQL text and run as such
on a connection that the calling thread keeps between claims. The claim is
still SELECT … FOR UPDATE SKIP LOCKED and UPDATE in one short transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, Dialect, Engine, Executable, bindparam
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import SQLAlchemyError

from timer_controller.db import statements as sql

#: The one parameter rendered at run time: the claimed ids of an UPDATE.
IDS = "ids"


def ids_param() -> BindParameter[Any]:
    """Stands for a list of task ids in a statement compiled by ``compile_once``."""
    return bindparam(IDS, expanding=True)


@dataclass(frozen=True, slots=True)
class Compiled:
    """A statement's SQL text and its (fixed) parameters, in placeholder order."""

    sql: str
    params: tuple[Any, ...]

    def run(self, conn: Connection, *, ids: Collection[int] = ()) -> CursorResult[Any]:
        sql = self.sql
        if ids:
            # Ids are integers this process read from the table: rendered as
            # digits they cannot carry SQL, and the text needs no re-compiling.
            sql = sql.replace(_IDS_TOKEN, ",".join(f"{i:d}" for i in ids))
        return conn.exec_driver_sql(sql, self.params)


_IDS_TOKEN = f"__[POSTCOMPILE_{IDS}]"


def compile_once(statement: Executable, dialect: Dialect) -> Compiled:
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    order: Sequence[str] = compiled.positiontup or ()
    values = compiled.params
    return Compiled(compiled.string, tuple(values[name] for name in order if name != IDS))


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
        self, *, limit: int, lookahead_s: float, skip_prefixes: tuple[str, ...] = ()
    ) -> Compiled:
        # Destinations at their limit change now and then: each set is a key of its own.
        key = ("select", limit, lookahead_s, skip_prefixes)
        found = self._kept.get(key)
        if found is None:
            statement = sql.claim_select(
                limit=limit,
                lookahead_s=lookahead_s,
                max_body_bytes=self._max_body_bytes,
                skip_prefixes=skip_prefixes,
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

    def _keep(self, key: tuple[object, ...], statement: Executable) -> Compiled:
        # Compiled after the first connection: the dialect knows the server by then.
        if len(self._kept) >= self.MAX_KEPT:
            self._kept.clear()
        compiled = self._kept[key] = compile_once(statement, self._dialect)
        return compiled


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
