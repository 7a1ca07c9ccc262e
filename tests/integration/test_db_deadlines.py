"""DB_TIMEOUT against a real server behind a proxy that goes silent (freezes).

These measure the bound rather than assume it: the client library decides
how long a read really waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.support.databases import TestDatabase
from tests.support.tcp_proxy import TcpProxy
from timer_controller.db.errors import describe_error
from timer_controller.db.setup import StartupStopped, make_engine, upgrade_to_head
from timer_controller.db.statements import MIGRATION_LOCK

DB_TIMEOUT_S = 3
# Above: scheduling noise on a shared machine; the bound itself is DB_TIMEOUT_S.
SLACK_S = 1.5


@pytest.fixture
def proxy(db: TestDatabase) -> Iterator[TcpProxy]:
    with TcpProxy(db.url.host or "127.0.0.1", db.url.port or 3306) as started:
        yield started


@pytest.fixture
def proxied(db: TestDatabase, proxy: TcpProxy) -> Iterator[Engine]:
    url = db.url.set(host="127.0.0.1", port=proxy.port)
    engine = make_engine(url, pool_size=1, pre_ping=False, db_timeout_s=DB_TIMEOUT_S)
    try:
        yield engine
    finally:
        engine.dispose()


def timed_failure(engine: Engine) -> tuple[float, OperationalError]:
    started = time.monotonic()
    with pytest.raises(OperationalError) as caught, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return time.monotonic() - started, caught.value


def test_a_query_on_a_silent_connection_fails_within_db_timeout(
    proxied: Engine, proxy: TcpProxy
) -> None:
    with proxied.connect() as conn:  # the pooled connection is open before the freeze
        conn.execute(text("SELECT 1"))
    proxy.freeze()

    elapsed_s, error = timed_failure(proxied)

    assert DB_TIMEOUT_S - 0.5 <= elapsed_s <= DB_TIMEOUT_S + SLACK_S, elapsed_s
    assert describe_error(error) == "lost connection, or no answer within DB_TIMEOUT"


def test_connecting_to_a_silent_server_fails_within_db_timeout(
    proxied: Engine, proxy: TcpProxy
) -> None:
    proxy.freeze()  # TCP connects (the kernel accepts), the greeting never comes

    elapsed_s, _ = timed_failure(proxied)

    assert DB_TIMEOUT_S - 0.5 <= elapsed_s <= DB_TIMEOUT_S + SLACK_S, elapsed_s


def test_after_the_freeze_the_same_engine_works_again(proxied: Engine, proxy: TcpProxy) -> None:
    proxy.freeze()
    timed_failure(proxied)
    proxy.thaw()

    with proxied.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def hold_migration_lock(db: TestDatabase) -> tuple[threading.Event, threading.Thread]:
    """Another "pod" holds the migration lock until the returned event is set."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.engine.connect() as conn:
            assert conn.execute(text(f"SELECT GET_LOCK({MIGRATION_LOCK}, 0)")).scalar() == 1
            taken.set()
            release.wait(60)
            conn.execute(text(f"SELECT RELEASE_LOCK({MIGRATION_LOCK})"))

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(10), "the holder never took the lock"
    return release, holder


def test_waiting_for_the_migration_lock_outlasts_the_read_timeout(db: TestDatabase) -> None:
    # A server-side GET_LOCK wait would be cut off by the read timeout; polling is not.
    engine = make_engine(db.url, pool_size=1, db_timeout_s=DB_TIMEOUT_S)
    release, holder = hold_migration_lock(db)
    timer = threading.Timer(DB_TIMEOUT_S + 1.5, release.set)
    timer.start()
    try:
        started = time.monotonic()
        upgrade_to_head(engine)
        assert time.monotonic() - started >= DB_TIMEOUT_S + 1
    finally:
        timer.cancel()
        release.set()
        holder.join(10)
        engine.dispose()


def test_a_stop_ends_the_wait_for_the_migration_lock_at_once(db: TestDatabase) -> None:
    engine = make_engine(db.url, pool_size=1, db_timeout_s=DB_TIMEOUT_S)
    release, holder = hold_migration_lock(db)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        started = time.monotonic()
        with pytest.raises(StartupStopped):
            upgrade_to_head(engine, stop=stop)
        assert time.monotonic() - started < 0.5 + SLACK_S
    finally:
        timer.cancel()
        release.set()
        holder.join(10)
        engine.dispose()
