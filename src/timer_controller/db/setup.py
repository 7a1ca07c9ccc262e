"""Connecting to the server, creating the database, migrating it; named locks.

Everything that opens a connection lives behind a function called by the
entry point; importing this module connects to nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Connection, Engine, create_engine
from sqlalchemy.exc import OperationalError

from timer_controller.db import statements
from timer_controller.db.errors import describe_error
from timer_controller.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

MIGRATION_LOCK_WAIT_S = 120
CONNECT_TIMEOUT_S = 5


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
    io_timeout_s: int | None = None,
    pool_timeout_s: float = 30,
    reset_on_return: bool = True,
) -> Engine:
    """An engine whose sessions run at READ COMMITTED in UTC.

    READ COMMITTED keeps SKIP LOCKED claims from taking gap locks, and UTC
    makes the session's own time functions agree with the stored naive UTC.
    ``io_timeout_s`` bounds each read and write on a connection (the driver's
    read_timeout and write_timeout); ``pool_timeout_s`` the wait for a free one.
    ``reset_on_return=False`` skips the pool's ROLLBACK when a connection comes
    back: only for code whose every use ends its own transaction through a
    ``Connection`` (closing one rolls back what is open), where that ROLLBACK
    is one more round trip after each COMMIT.
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
        pool_reset_on_return="rollback" if reset_on_return else None,
        connect_args=connect_args,
    )


def wait_for_server(
    engine: Engine,
    *,
    tries: int,
    wait_s: float,
    where: str,
) -> None:
    """Run ``SELECT 1`` until it works, at most ``tries`` times ``wait_s`` apart."""
    reason = "no attempt made"
    for attempt in range(1, tries + 1):
        try:
            with engine.connect() as conn:
                conn.execute(statements.ping())
            if attempt > 1:
                log.info("database %s reachable again after %d tries", where, attempt)
            return
        except OperationalError as exc:
            reason = describe_error(exc)
            log.warning("database %s unreachable (try %d of %d): %s", where, attempt, tries, reason)
            if attempt < tries:
                time.sleep(wait_s)
    raise DatabaseUnavailable(f"cannot reach the database at {where} after {tries} tries: {reason}")


def ensure_database(server_engine: Engine, name: str) -> None:
    with server_engine.begin() as conn:
        conn.execute(statements.create_database(name))


@contextlib.contextmanager
def named_lock(conn: Connection, name_sql: str, *, wait_s: float) -> Iterator[bool]:
    """Hold a server-wide ``GET_LOCK`` for the block; yields False if not had in time.

    Named locks belong to the connection, not a transaction, so the block
    may commit as often as it likes while holding it.
    """
    got = conn.execute(statements.get_lock(name_sql), {"wait": wait_s}).scalar() == 1
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


def upgrade_to_head(engine: Engine) -> None:
    """``alembic upgrade head`` under a named lock, so concurrent pods migrate once."""
    with (
        engine.connect() as conn,
        named_lock(conn, statements.MIGRATION_LOCK, wait_s=MIGRATION_LOCK_WAIT_S) as got,
    ):
        if not got:
            raise DatabaseUnavailable(
                f"could not take the migration lock within {MIGRATION_LOCK_WAIT_S}s; "
                "is another pod stuck migrating?"
            )
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()


def current_revision_is_head(engine: Engine) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    return current == heads


def prepare(
    server: URL, database: str, *, tries: int, wait_s: float, **engine_options: Any
) -> Engine:
    """Start-up: reach the server, create the database, migrate; return its engine.

    ``engine_options`` go to ``make_engine`` (the api sizes its pool and deadlines).
    """
    where = f"{server.host}:{server.port}"
    server_engine = make_engine(server.set(database=None), pool_size=1)
    try:
        wait_for_server(server_engine, tries=tries, wait_s=wait_s, where=where)
        ensure_database(server_engine, database)
    finally:
        server_engine.dispose()
    # No pre-ping: it costs a round trip per claim and per outcome write, and
    # the loop already retries any statement that meets a dead connection.
    engine = make_engine(server.set(database=database), pre_ping=False, **engine_options)
    upgrade_to_head(engine)
    return engine
