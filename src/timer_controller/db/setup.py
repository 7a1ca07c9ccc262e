"""Connecting to the server, creating the database, migrating it; named locks.

Everything that opens a connection lives behind a function called by the
entry point; importing this module connects to nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from MySQLdb.constants import FIELD_TYPE
from MySQLdb.converters import conversions
from MySQLdb.times import DateTime_or_None
from sqlalchemy import URL, Connection, Engine, create_engine
from sqlalchemy.exc import OperationalError

from timer_controller.db import statements
from timer_controller.db.errors import describe_error
from timer_controller.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

MIGRATION_LOCK_WAIT_S = 120
# Named locks are polled (GET_LOCK with no wait) rather than waited for on
# the server: a server-side wait would outlast the read timeout, and a poll
# lets a stop end the wait at once.
LOCK_POLL_S = 0.5
DEFAULT_DB_TIMEOUT_S = 10


class StartupStopped(Exception):
    """A stop was asked for while start-up was still waiting for the database."""


def _read_tries() -> int:
    """How many times the client library waits ``read_timeout`` before giving up on a read.

    MariaDB Connector/C (libmariadb, 3.x: what the image and CI link) waits
    once: against a proxy that stops relaying, read_timeout=1 and 2 failed
    after 1.0 s and 2.0 s, and connect_timeout the same. Oracle's
    libmysqlclient documents up to three tries per read (and per write).
    """
    import MySQLdb

    major = str(MySQLdb.get_client_info()).split(".", 1)[0]
    return 1 if major == "3" else 3


def driver_timeouts(db_timeout_s: int, *, read_tries: int | None = None) -> dict[str, int]:
    """mysqlclient's timeouts (whole seconds) so that no wait outlasts ``db_timeout_s``."""
    per_try_s = max(1, db_timeout_s // (read_tries or _read_tries()))
    return {"connect_timeout": db_timeout_s, "read_timeout": per_try_s, "write_timeout": per_try_s}


def server_url(*, host: str, port: int, user: str, password: str, database: str | None) -> URL:
    return URL.create(
        "mysql+mysqldb",
        username=user,
        password=password,
        host=host,
        port=port,
        database=database,
        query={"charset": "utf8mb4"},
    )


def make_engine(
    url: URL | str,
    *,
    pool_size: int = 5,
    pre_ping: bool = True,
    db_timeout_s: int = DEFAULT_DB_TIMEOUT_S,
    pool_timeout_s: float | None = None,
    reset_on_return: bool = True,
) -> Engine:
    """An engine whose sessions run at READ COMMITTED in UTC, every wait bounded.

    READ COMMITTED keeps SKIP LOCKED claims from taking gap locks, and UTC
    makes the session's own time functions agree with the stored naive UTC.
    A silent server (dropped packets, a partition that resets nothing) ends
    each connect, read, write and pool checkout within ``db_timeout_s``;
    without these the driver waits as long as TCP does, about 15 minutes.
    ``pool_timeout_s`` may make the wait for a free connection shorter (the api).
    ``reset_on_return=False`` skips the pool's ROLLBACK when a connection comes
    back: only for code whose every use ends its own transaction through a
    ``Connection`` (closing one rolls back what is open), where that ROLLBACK
    is one more round trip after each COMMIT.
    """
    return create_engine(
        url,
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=3600,
        pool_timeout=db_timeout_s if pool_timeout_s is None else pool_timeout_s,
        pool_reset_on_return="rollback" if reset_on_return else None,
        connect_args={
            **driver_timeouts(db_timeout_s),
            "init_command": "SET time_zone = '+00:00'",
            "conv": CONVERSIONS,
        },
    )


def datetime_or_none(text: str) -> datetime | date | None:
    """MySQLdb's DATETIME reading, in C where it can be: 0.19 µs a value against 1.9.

    A claim reads two DATETIMEs a row (``due_at`` and the server's now).
    Anything ``fromisoformat`` does not take (a zero date such as
    ``0000-00-00 00:00:00``, a date alone) gets the driver's own answer.
    """
    if 10 < len(text) <= 26:  # more than six digits of a second: the driver's None
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text)
    found: datetime | date | None = DateTime_or_None(text)
    return found


#: The driver's conversions, but for DATETIME (``datetime_or_none``).
CONVERSIONS: dict[Any, Any] = {**conversions, FIELD_TYPE.DATETIME: datetime_or_none}


def wait_for_server(
    engine: Engine,
    *,
    tries: int,
    wait_s: float,
    where: str,
    stop: threading.Event | None = None,
) -> None:
    """Run ``SELECT 1`` until it works, at most ``tries`` times ``wait_s`` apart.

    A set ``stop`` ends the wait between tries with StartupStopped.
    """
    stop = stop or threading.Event()
    reason = "no attempt made"
    for attempt in range(1, tries + 1):
        if stop.is_set():
            raise StartupStopped
        try:
            with engine.connect() as conn:
                conn.execute(statements.ping())
            if attempt > 1:
                log.info("database %s reachable again after %d tries", where, attempt)
            return
        except OperationalError as exc:
            reason = describe_error(exc)
            log.warning("database %s unreachable (try %d of %d): %s", where, attempt, tries, reason)
            if attempt < tries and stop.wait(wait_s):
                raise StartupStopped from None
    raise DatabaseUnavailable(f"cannot reach the database at {where} after {tries} tries: {reason}")


def ensure_database(server_engine: Engine, name: str) -> None:
    with server_engine.begin() as conn:
        conn.execute(statements.create_database(name))


def _poll_lock(
    conn: Connection, name_sql: str, *, wait_s: float, what: str, stop: threading.Event
) -> bool:
    deadline = time.monotonic() + wait_s
    waiting = False
    while conn.execute(statements.get_lock(name_sql), {"wait": 0}).scalar() != 1:
        if time.monotonic() >= deadline:
            return False
        if not waiting:
            waiting = True
            log.info("waiting up to %gs for %s", wait_s, what)
        if stop.wait(LOCK_POLL_S):
            raise StartupStopped
    return True


@contextlib.contextmanager
def named_lock(
    conn: Connection,
    name_sql: str,
    *,
    wait_s: float,
    what: str = "a named lock",
    stop: threading.Event | None = None,
) -> Iterator[bool]:
    """Hold a server-wide ``GET_LOCK`` for the block; yields False if not had in time.

    Named locks belong to the connection, not a transaction, so the block
    may commit as often as it likes while holding it. A set ``stop`` ends
    the wait with StartupStopped.
    """
    got = _poll_lock(conn, name_sql, wait_s=wait_s, what=what, stop=stop or threading.Event())
    conn.commit()
    try:
        yield got
    finally:
        if got:
            conn.execute(statements.release_lock(name_sql))
            conn.commit()


def migrations_dir() -> Path:
    """The Alembic scripts: packaged in the wheel, or the repository's ``migrations/``."""
    packaged = Path(__file__).parents[1] / "migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def upgrade_to_head(
    engine: Engine,
    *,
    stop: threading.Event | None = None,
    migrating: threading.Event | None = None,
) -> None:
    """``alembic upgrade head`` under a named lock, so concurrent pods migrate once.

    A set ``stop`` ends the wait for the lock with StartupStopped. While the
    lock is held ``migrating`` is set: a stop then lets the migration finish.
    """
    migrating = migrating or threading.Event()
    what = "the migration lock (another pod is migrating)"
    with (
        engine.connect() as conn,
        named_lock(
            conn, statements.MIGRATION_LOCK, wait_s=MIGRATION_LOCK_WAIT_S, what=what, stop=stop
        ) as got,
    ):
        if not got:
            raise DatabaseUnavailable(
                f"could not take the migration lock within {MIGRATION_LOCK_WAIT_S}s; "
                "is another pod stuck migrating?"
            )
        migrating.set()
        try:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        finally:
            migrating.clear()


def current_revision_is_head(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == heads


def prepare(
    server: URL,
    database: str,
    *,
    tries: int,
    wait_s: float,
    db_timeout_s: int = DEFAULT_DB_TIMEOUT_S,
    stop: threading.Event | None = None,
    migrating: threading.Event | None = None,
    **engine_options: Any,
) -> Engine:
    """Start-up: reach the server, create the database, migrate; return its engine.

    A set ``stop`` ends any wait on the way with StartupStopped; ``migrating``
    is set while a migration runs (see ``upgrade_to_head``). ``engine_options``
    go to ``make_engine`` (the api sizes its pool and its checkout wait).
    """
    where = f"{server.host}:{server.port}"
    server_engine = make_engine(server.set(database=None), pool_size=1, db_timeout_s=db_timeout_s)
    try:
        wait_for_server(server_engine, tries=tries, wait_s=wait_s, where=where, stop=stop)
        ensure_database(server_engine, database)
    finally:
        server_engine.dispose()
    # No pre-ping: it costs a round trip per claim and per outcome write, and
    # the loop already retries any statement that meets a dead connection.
    engine = make_engine(
        server.set(database=database), pre_ping=False, db_timeout_s=db_timeout_s, **engine_options
    )
    try:
        upgrade_to_head(engine, stop=stop, migrating=migrating)
    except BaseException:
        engine.dispose()
        raise
    return engine
