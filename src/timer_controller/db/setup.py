"""Connecting to the server, creating the database, migrating it.

Everything that opens a connection lives behind a function called by the
entry point; importing this module connects to nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from timer_controller.settings import Settings

log = logging.getLogger(__name__)

# Server-wide, so scoped by the (hashed) database name; see repository.py.
MIGRATION_LOCK = "CONCAT('timer_controller.migrate.', MD5(DATABASE()))"
MIGRATION_LOCK_WAIT_S = 120
# The lock is polled (GET_LOCK with no wait) rather than waited for on the
# server: a server-side wait would outlast the read timeout, and a poll lets
# a stop end the wait at once.
MIGRATION_LOCK_POLL_S = 0.5
DEFAULT_DB_TIMEOUT_S = 10

# mysqlclient / MySQL client error codes worth a human explanation.
_REASONS = {
    1045: "access denied (check DB_USER and DB_PASSWORD)",
    1044: "access denied to the database (check the user's grants)",
    1049: "unknown database",
    2002: "connection refused (is the server running?)",
    2003: "connection refused or unreachable (is the server running and the port right?)",
    2005: "unknown host (check DB_HOST)",
    2006: "server has gone away",
    2013: "lost connection, or no answer within DB_TIMEOUT",
}


class DatabaseUnavailable(Exception):
    """The server could not be reached within the allowed tries."""


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


def server_url(settings: Settings, *, database: str | None) -> URL:
    return URL.create(
        "mysql+mysqldb",
        username=settings.db_user,
        password=settings.db_password.get_secret_value(),
        host=settings.db_host,
        port=settings.db_port,
        database=database,
        query={"charset": "utf8mb4"},
    )


def make_engine(
    url: URL | str,
    *,
    pool_size: int = 5,
    pre_ping: bool = True,
    db_timeout_s: int = DEFAULT_DB_TIMEOUT_S,
) -> Engine:
    """An engine whose sessions run at READ COMMITTED in UTC, every wait bounded.

    READ COMMITTED keeps SKIP LOCKED claims from taking gap locks, and UTC
    makes the session's own time functions agree with the stored naive UTC.
    A silent server (dropped packets, a partition that resets nothing) ends
    each connect, read, write and pool checkout within ``db_timeout_s``;
    without these the driver waits as long as TCP does, about 15 minutes.
    """
    return create_engine(
        url,
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=3600,
        pool_timeout=db_timeout_s,
        connect_args={
            **driver_timeouts(db_timeout_s),
            "init_command": "SET time_zone = '+00:00'",
        },
    )


def engine_for(settings: Settings, *, database: str | None, pool_size: int = 5) -> Engine:
    """``make_engine`` for the configured server, with DB_TIMEOUT."""
    return make_engine(
        server_url(settings, database=database),
        pool_size=pool_size,
        db_timeout_s=settings.db_timeout_s,
    )


def error_code(exc: BaseException) -> int | None:
    """The MySQL/MariaDB error number behind a driver or SQLAlchemy error, if any."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return args[0] if args and isinstance(args[0], int) else None


def describe_error(exc: BaseException) -> str:
    """A short reason for a failed connection: refused, unknown host, denied…"""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    code = error_code(exc)
    if code in _REASONS:
        return _REASONS[code]
    detail = args[1] if len(args) > 1 else str(orig)
    return str(detail).splitlines()[0] if str(detail) else type(orig).__name__


def wait_for_server(
    engine: Engine,
    *,
    tries: int,
    wait_s: float,
    where: str,
    on_failure: Callable[[], None] | None = None,
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
                conn.execute(text("SELECT 1"))
            if attempt > 1:
                log.info("database %s reachable again after %d tries", where, attempt)
            return
        except OperationalError as exc:
            reason = describe_error(exc)
            log.warning("database %s unreachable (try %d of %d): %s", where, attempt, tries, reason)
            if on_failure is not None:
                on_failure()
            if attempt < tries and stop.wait(wait_s):
                raise StartupStopped from None
    raise DatabaseUnavailable(f"cannot reach the database at {where} after {tries} tries: {reason}")


def ensure_database(server_engine: Engine, name: str) -> None:
    # The name is validated against [A-Za-z0-9_] by Settings, so quoting is safe.
    with server_engine.begin() as conn:
        conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4"))


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


def _take_migration_lock(conn: Connection, stop: threading.Event) -> None:
    deadline = time.monotonic() + MIGRATION_LOCK_WAIT_S
    waiting = False
    while conn.execute(text(f"SELECT GET_LOCK({MIGRATION_LOCK}, 0)")).scalar() != 1:
        if not waiting:
            waiting = True
            log.info(
                "waiting up to %ds for the migration lock (another pod is migrating)",
                MIGRATION_LOCK_WAIT_S,
            )
        if time.monotonic() >= deadline:
            raise DatabaseUnavailable(
                f"could not take the migration lock within {MIGRATION_LOCK_WAIT_S}s; "
                "is another pod stuck migrating?"
            )
        if stop.wait(MIGRATION_LOCK_POLL_S):
            raise StartupStopped


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
    with engine.connect() as conn:
        _take_migration_lock(conn, stop or threading.Event())
        migrating.set()
        try:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        finally:
            conn.execute(text(f"SELECT RELEASE_LOCK({MIGRATION_LOCK})"))
            migrating.clear()


def current_revision_is_head(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == heads


def prepare(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    migrating: threading.Event | None = None,
) -> Engine:
    """Start-up: reach the server, create the database, migrate; return its engine.

    A set ``stop`` ends any wait on the way with StartupStopped; ``migrating``
    is set while a migration runs (see ``upgrade_to_head``).
    """
    where = f"{settings.db_host}:{settings.db_port}"
    server = engine_for(settings, database=None, pool_size=1)
    try:
        wait_for_server(
            server,
            tries=settings.retry_number,
            wait_s=settings.reconnect_wait_s,
            where=where,
            stop=stop,
        )
        ensure_database(server, settings.db_name)
    finally:
        server.dispose()
    # No pre-ping: it costs a round trip per claim and per outcome write, and
    # the loop already retries any statement that meets a dead connection.
    engine = make_engine(
        server_url(settings, database=settings.db_name),
        pre_ping=False,
        db_timeout_s=settings.db_timeout_s,
    )
    try:
        upgrade_to_head(engine, stop=stop, migrating=migrating)
    except BaseException:
        engine.dispose()
        raise
    return engine
