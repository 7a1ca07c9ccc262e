"""Where the tests' database comes from, and a fresh migrated database per test.

``TEST_DATABASE_URL`` (a server URL where tests may create and drop their
own databases) wins; otherwise a pinned MySQL is started with
testcontainers; otherwise the database tiers are skipped — except under
``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.engine import URL

from timer_controller.db.setup import make_engine, upgrade_to_head

MYSQL_IMAGE = "mysql:8.4"


@contextmanager
def database_server() -> Iterator[URL]:
    """A server URL (no database) for the whole session."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield make_url(configured).set(database=None)
        return
    try:
        try:
            from testcontainers.community.mysql import MySqlContainer
        except ImportError:  # testcontainers before 4.10
            from testcontainers.mysql import MySqlContainer
        container = MySqlContainer(MYSQL_IMAGE, username="root", password="test", dialect="mysqldb")
        container.start()
    except Exception as exc:  # no Docker daemon, no image, no testcontainers
        reason = f"no TEST_DATABASE_URL and testcontainers could not start {MYSQL_IMAGE}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs a database: {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield make_url(container.get_connection_url()).set(database=None)
    finally:
        container.stop()


@dataclass(frozen=True)
class TestDatabase:
    """A fresh database, migrated to head, dropped after the test."""

    __test__ = False  # not a test class, despite the name

    url: URL
    engine: Engine

    @property
    def name(self) -> str:
        assert self.url.database is not None
        return self.url.database

    def env(self, **overrides: str) -> dict[str, str]:
        """The controller's environment for this database (for subprocesses)."""
        env = {
            "DB_HOST": self.url.host or "127.0.0.1",
            "DB_PORT": str(self.url.port or 3306),
            "DB_USER": self.url.username or "root",
            "DB_PASSWORD": self.url.password or "",
            "DB_NAME": self.name,
        }
        env.update(overrides)
        return env


@contextmanager
def fresh_database(server: URL, *, migrate: bool = True) -> Iterator[TestDatabase]:
    name = f"tc_test_{secrets.token_hex(4)}"
    admin = make_engine(server, pool_size=1)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}`"))
    url = server.set(database=name)
    engine = make_engine(url)
    try:
        if migrate:
            upgrade_to_head(engine)
        yield TestDatabase(url=url, engine=engine)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
