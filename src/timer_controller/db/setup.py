"""Connecting to the server, creating the database, migrating it.

Everything that opens a connection lives behind a function called by the
entry point; importing this module connects to nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from timer_controller.settings import Settings

log = logging.getLogger(__name__)

# Server-wide, so scoped by the (hashed) database name; see repository.py.
MIGRATION_LOCK = "CONCAT('timer_controller.migrate.', MD5(DATABASE()))"
MIGRATION_LOCK_WAIT_S = 120
CONNECT_TIMEOUT_S = 5

# mysqlclient / MySQL client error codes worth a human explanation.
_REASONS = {
    1045: "access denied (check DB_USER and DB_PASSWORD)",
    1044: "access denied to the database (check the user's grants)",
    1049: "unknown database",
    2002: "connection refused (is the server running?)",
    2003: "connection refused or unreachable (is the server running and the port right?)",
    2005: "unknown host (check DB_HOST)",
    2006: "server has gone away",
    2013: "lost connection during the handshake",
}


class DatabaseUnavailable(Exception):
    """The server could not be reached within the allowed tries."""


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
    io_timeout_s: int | None = None,
    pool_timeout_s: float = 30,
) -> Engine:
    """An engine whose sessions run at READ COMMITTED in UTC.

    READ COMMITTED keeps SKIP LOCKED claims from taking gap locks, and UTC
    makes the session's own time functions agree with the stored naive UTC.
    ``io_timeout_s`` bounds each read and write on a connection (the driver's
    read_timeout and write_timeout); ``pool_timeout_s`` the wait for a free one.
    """
    connect_args: dict[str, object] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "init_command": "SET time_zone = '+00:00'",
    }
    if io_timeout_s is not None:
        connect_args.update(read_timeout=io_timeout_s, write_timeout=io_timeout_s)
    return create_engine(
        url,
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=3600,
        pool_timeout=pool_timeout_s,
        connect_args=connect_args,
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
) -> None:
    """Run ``SELECT 1`` until it works, at most ``tries`` times ``wait_s`` apart."""
    reason = "no attempt made"
    for attempt in range(1, tries + 1):
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
            if attempt < tries:
                time.sleep(wait_s)
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


def upgrade_to_head(engine: Engine) -> None:
    """``alembic upgrade head`` under a named lock, so concurrent pods migrate once."""
    with engine.connect() as conn:
        got = conn.execute(
            text(f"SELECT GET_LOCK({MIGRATION_LOCK}, :wait)"),
            {"wait": MIGRATION_LOCK_WAIT_S},
        ).scalar()
        if got != 1:
            raise DatabaseUnavailable(
                f"could not take the migration lock within {MIGRATION_LOCK_WAIT_S}s; "
                "is another pod stuck migrating?"
            )
        try:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
            conn.commit()
        finally:
            conn.execute(text(f"SELECT RELEASE_LOCK({MIGRATION_LOCK})"))


def current_revision_is_head(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == heads


def prepare(settings: Settings, **engine_options: Any) -> Engine:
    """Start-up: reach the server, create the database, migrate; return its engine.

    ``engine_options`` go to ``make_engine`` (the api sizes its pool and deadlines).
    """
    where = f"{settings.db_host}:{settings.db_port}"
    server = make_engine(server_url(settings, database=None), pool_size=1)
    try:
        wait_for_server(
            server, tries=settings.retry_number, wait_s=settings.reconnect_wait_s, where=where
        )
        ensure_database(server, settings.db_name)
    finally:
        server.dispose()
    # No pre-ping: it costs a round trip per claim and per outcome write, and
    # the loop already retries any statement that meets a dead connection.
    engine = make_engine(
        server_url(settings, database=settings.db_name), pre_ping=False, **engine_options
    )
    upgrade_to_head(engine)
    return engine
