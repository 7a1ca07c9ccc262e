"""SIGTERM while start-up still waits for the database: one line, exit 0, promptly.

Start-up (connect tries, create, the migration lock, migrating) can take
``RETRY_NUMBER × RECONNECT_WAIT_TIME`` plus two minutes for the lock. The
handlers are installed before any of it, so a stop in that window is a
graceful stop, not a 143 with nothing logged.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.processes import Controller
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until
from timer_controller.db.statements import MIGRATION_LOCK

# "Promptly" is well under a second; the margin is for a shared machine.
PROMPT_S = 3.0
STOP_LINE = "received during start-up: exiting before the controller started"


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def stopped_within(pod: Controller, timeout_s: float, signum: int = signal.SIGTERM) -> float:
    """Send ``signum``; the seconds until the process exited 0 with one stop line."""
    sent = time.monotonic()
    pod.proc.send_signal(signum)
    try:
        code = pod.wait(timeout_s + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout_s + 10}s after the signal:\n{pod.output.text()}")
    elapsed_s = time.monotonic() - sent
    out = pod.output.text()
    assert code == 0, out
    assert sum(STOP_LINE in line for line in pod.output.lines) == 1, out
    assert f"{signal.Signals(signum).name} {STOP_LINE}" in out
    assert "Traceback" not in out
    assert "started:" not in out
    return elapsed_s


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_while_retrying_the_connection_exits_0_at_once(
    db: TestDatabase, closed_port: int, controllers: Callable[..., Controller], signum: int
) -> None:
    pod = controllers(
        db.env(
            DB_HOST="127.0.0.1",
            DB_PORT=str(closed_port),
            RETRY_NUMBER="100",
            RECONNECT_WAIT_TIME="5",
        )
    )
    wait_until(
        lambda: "try 1 of 100" in pod.output.text() or pod.proc.poll() is not None,
        timeout_s=30,
        what="the first failed connection try",
    )

    assert stopped_within(pod, PROMPT_S, signum) < PROMPT_S


def test_a_stop_while_waiting_for_the_migration_lock_exits_0_at_once(
    db: TestDatabase, controllers: Callable[..., Controller]
) -> None:
    with db.engine.connect() as holder:  # another pod, migrating for ever
        assert holder.execute(text(f"SELECT GET_LOCK({MIGRATION_LOCK}, 0)")).scalar() == 1
        pod = controllers(db.env())
        wait_until(
            lambda: (
                "waiting up to 120s for the migration lock" in pod.output.text()
                or pod.proc.poll() is not None
            ),
            timeout_s=30,
            what="the controller to wait for the lock",
        )

        assert stopped_within(pod, PROMPT_S) < PROMPT_S
        holder.execute(text(f"SELECT RELEASE_LOCK({MIGRATION_LOCK})"))


def test_a_stop_while_the_database_is_silent_exits_0_within_db_timeout(
    db: TestDatabase, controllers: Callable[..., Controller]
) -> None:
    db_timeout_s = 5
    with TcpProxy(db.url.host or "127.0.0.1", db.url.port or 3306) as proxy:
        proxy.freeze()
        pod = controllers(
            db.env(DB_HOST="127.0.0.1", DB_PORT=str(proxy.port), DB_TIMEOUT=str(db_timeout_s))
        )
        wait_until(lambda: proxy.accepted > 0, timeout_s=30, what="a connection to the proxy")

        # The try in progress is abandoned, not waited for.
        assert stopped_within(pod, db_timeout_s) < PROMPT_S
