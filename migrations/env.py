"""Alembic environment: the controller passes its connection; by hand, the
same settings object as the controller supplies the database."""

from __future__ import annotations

import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from timer_controller.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


def run_by_hand() -> None:
    """``alembic upgrade head`` from a shell: create the database, then migrate."""
    from timer_controller.bootstrap import database_url
    from timer_controller.db.setup import ensure_database, make_engine, wait_for_server
    from timer_controller.errors import ConfigError, DatabaseUnavailable
    from timer_controller.settings import load_settings

    try:
        settings = load_settings()
        server = make_engine(
            database_url(settings, database=None),
            pool_size=1,
            db_timeout_s=settings.db_timeout_s,
        )
        wait_for_server(
            server,
            tries=settings.retry_number,
            wait_s=settings.reconnect_wait_s,
            where=f"{settings.db_host}:{settings.db_port}",
        )
        ensure_database(server, settings.db_name)
        server.dispose()
    except (ConfigError, DatabaseUnavailable) as exc:
        sys.exit(f"alembic: {exc}")
    engine = make_engine(
        database_url(settings, database=settings.db_name),
        pool_size=1,
        db_timeout_s=settings.db_timeout_s,
    )
    with engine.connect() as connection:
        run_with(connection)
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")

connection = config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    run_by_hand()
