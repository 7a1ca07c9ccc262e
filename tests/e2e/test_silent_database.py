"""A database that goes silent: a proxy that stops relaying but keeps every socket open.

Faults that close connections are covered in test_failures.py; these leave
the controller nothing but its own deadlines (DB_TIMEOUT). Every test
accounts for every task once the database answers again.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.test_failures import all_done, fired, insert_tasks, rows, statuses
from tests.support.cli_runner import run_cli
from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until
from timer_controller.ops.probe import READY_DEADLINE_S

DB_TIMEOUT_S = 3
RETRY_NUMBER = 3
RECONNECT_WAIT_S = 1
SHUTDOWN_GRACE_S = 2
# Scheduling noise on a shared 2-core machine, on top of each promised bound.
SLACK_S = 4.0
FAST = {
    "DB_TIMEOUT": str(DB_TIMEOUT_S),
    "RECONNECT_WAIT_TIME": str(RECONNECT_WAIT_S),
    "SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_S),
    "WEBHOOK_TIMEOUT": "2",
    "LEASE_TIME": "4",
    "POLL_INTERVAL": "0.2",
}


@pytest.fixture
def proxy(db: TestDatabase) -> Iterator[TcpProxy]:
    with TcpProxy(db.url.host or "127.0.0.1", db.url.port or 3306) as started:
        yield started


Start = Callable[..., Controller]


def through(proxy: TcpProxy, db: TestDatabase, **overrides: str) -> dict[str, str]:
    return db.env(DB_HOST="127.0.0.1", DB_PORT=str(proxy.port), **{**FAST, **overrides})


def running_with_work(
    db: TestDatabase,
    receiver: Receiver,
    controllers: Callable[..., Controller],
    env: dict[str, str],
) -> tuple[Controller, list[int]]:
    """A pod through the proxy, some tasks done, more due over the next seconds."""
    pod = controllers(env)
    pod.wait_started()
    ids = insert_tasks(db.engine, receiver.url("/ok"), [i * 0.2 for i in range(40)])
    wait_until(lambda: statuses(db.engine, ids)["done"] >= 3, timeout_s=30, what="the first tasks")
    return pod, ids


def exit_code_within(pod: Controller, timeout_s: float) -> tuple[int, float]:
    started = time.monotonic()
    try:
        code = pod.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout_s:g}s:\n{pod.output.text()}")
    return code, time.monotonic() - started


def finish_elsewhere(
    db: TestDatabase, receiver: Receiver, controllers: Callable[..., Controller], ids: list[int]
) -> None:
    """Nothing lost: a pod straight to the database fires every task (leases return claims)."""
    controllers(db.env(**FAST))
    wait_until(lambda: all_done(db.engine, ids), timeout_s=60, what="every task, elsewhere")
    assert set(fired(receiver)) == set(ids)


def test_a_freeze_past_the_retry_budget_exits_1_with_one_line_and_loses_nothing(
    db: TestDatabase, receiver: Receiver, controllers: Callable[..., Controller], proxy: TcpProxy
) -> None:
    env = through(proxy, db, RETRY_NUMBER=str(RETRY_NUMBER))
    pod, ids = running_with_work(db, receiver, controllers, env)

    proxy.freeze()
    wait_until(
        lambda: "claim failed (try 1 of 3)" in pod.output.text() or pod.proc.poll() is not None,
        timeout_s=DB_TIMEOUT_S + SLACK_S,
        what="the first claim to pass its deadline",
    )
    retries_s = RETRY_NUMBER * DB_TIMEOUT_S + (RETRY_NUMBER - 1) * RECONNECT_WAIT_S
    code, elapsed_s = exit_code_within(pod, retries_s + SHUTDOWN_GRACE_S + DB_TIMEOUT_S + SLACK_S)

    out = pod.output.text()
    assert code == 1, out
    assert len(re.findall(r"database lost: ", out)) == 1, out
    # Whichever gave up first, the claims or the outcome writes.
    assert re.search(r"database lost: (claims failed|could not record \d+ outcomes after) 3 ", out)
    assert "Traceback" not in out
    print(f"exited {elapsed_s:.1f}s after the first failed claim")
    proxy.thaw()
    finish_elsewhere(db, receiver, controllers, ids)


def test_sigterm_during_a_freeze_ends_the_pod_within_grace_plus_db_timeout(
    db: TestDatabase, receiver: Receiver, controllers: Start, proxy: TcpProxy
) -> None:
    # Claimed ahead (LOOKAHEAD) and not yet due: the hand-back the database cannot take.
    # Due well after the freeze starts, however slow the machine: still unsent at SIGTERM.
    env = through(proxy, db, RETRY_NUMBER="20", LOOKAHEAD="20", LEASE_TIME="4")
    pod, ids = running_with_work(db, receiver, controllers, env)
    later = insert_tasks(db.engine, receiver.url("/ok/later"), [15.0] * 5)
    wait_until(
        lambda: statuses(db.engine, later) == Counter({"claimed": len(later)}),
        timeout_s=30,
        what="the later tasks to be claimed ahead",
    )

    proxy.freeze()
    noticed = re.compile(r"claim failed \(try 1 of 20\)|renewing \d+ leases failed")
    wait_until(
        lambda: noticed.search(pod.output.text()) or pod.proc.poll() is not None,
        timeout_s=DB_TIMEOUT_S + SLACK_S,
        what="the first database call to pass its deadline",
    )
    pod.terminate()
    code, elapsed_s = exit_code_within(pod, SHUTDOWN_GRACE_S + DB_TIMEOUT_S + SLACK_S)

    out = pod.output.text()
    assert code == 1, out
    assert "giving up on it: the leases will return the claims" in out, out
    assert "Traceback" not in out
    print(f"exited {elapsed_s:.1f}s after SIGTERM")
    proxy.thaw()
    finish_elsewhere(db, receiver, controllers, ids + later)


def test_sigterm_just_before_a_short_freeze_ends_still_hands_back(
    db: TestDatabase, receiver: Receiver, controllers: Start, proxy: TcpProxy
) -> None:
    env = through(proxy, db, RETRY_NUMBER="20", LOOKAHEAD="6", LEASE_TIME="30", SHUTDOWN_GRACE="2")
    pod, ids = running_with_work(db, receiver, controllers, env)
    later = insert_tasks(db.engine, receiver.url("/ok/later"), [5.0] * 5)
    wait_until(
        lambda: statuses(db.engine, later) == Counter({"claimed": len(later)}),
        timeout_s=30,
        what="the later tasks to be claimed ahead",
    )

    proxy.freeze()
    pod.terminate()
    wait_until(lambda: "stopping" in pod.output.text(), timeout_s=10, what="the stop to be seen")
    proxy.thaw()  # within the budget: the hand-back goes through
    code, _ = exit_code_within(pod, SHUTDOWN_GRACE_S + DB_TIMEOUT_S + SLACK_S)

    out = pod.output.text()
    assert code == 0, out
    assert "giving up" not in out
    assert {r.status for r in rows(db.engine, later).values()} == {"waiting"}
    assert {r.attempts for r in rows(db.engine, later).values()} == {0}
    finish_elsewhere(db, receiver, controllers, ids + later)


def test_a_freeze_shorter_than_the_budget_is_survived(
    db: TestDatabase, receiver: Receiver, controllers: Callable[..., Controller], proxy: TcpProxy
) -> None:
    env = through(proxy, db, RETRY_NUMBER="6")
    pod, ids = running_with_work(db, receiver, controllers, env)

    proxy.freeze()
    wait_until(
        lambda: "claim failed (try 2 of 6)" in pod.output.text() or pod.proc.poll() is not None,
        timeout_s=2 * (DB_TIMEOUT_S + RECONNECT_WAIT_S) + SLACK_S,
        what="two claims to pass their deadline",
    )
    assert pod.proc.poll() is None, pod.output.text()
    proxy.thaw()

    wait_until(lambda: all_done(db.engine, ids), timeout_s=60, what="every task after the freeze")
    assert pod.proc.poll() is None, pod.output.text()
    assert set(fired(receiver)) == set(ids)
    out = pod.output.text()
    assert "database lost" not in out
    assert "Traceback" not in out
    pod.terminate()
    assert pod.wait(30) == 0


def test_readyz_answers_not_ready_within_its_deadline_while_the_database_is_silent(
    db: TestDatabase, controllers: Callable[..., Controller], proxy: TcpProxy
) -> None:
    with httpx.Client(timeout=30) as http:
        port = _free_port()
        # DB_TIMEOUT at its default: the probe must not wait for the driver.
        pod = controllers(
            through(proxy, db, METRICS_PORT=str(port), DB_TIMEOUT="10", RETRY_NUMBER="50")
        )
        pod.wait_started()
        url = f"http://127.0.0.1:{port}/readyz"
        assert http.get(url).status_code == 200

        proxy.freeze()
        for _ in range(3):
            started = time.monotonic()
            answer = http.get(url)
            assert answer.status_code == 503, answer.text
            assert time.monotonic() - started < READY_DEADLINE_S + 1.0
        # Alive, though not ready: a liveness probe must not restart it for a silent database.
        assert http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200

        proxy.thaw()
        wait_until(
            lambda: http.get(url).status_code == 200, timeout_s=30, what="ready after the thaw"
        )
        wait_until(
            lambda: http.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
            timeout_s=30,
            what="alive after the thaw",
        )


def test_the_cli_against_a_silent_database_fails_in_one_bounded_line(
    db: TestDatabase, proxy: TcpProxy
) -> None:
    proxy.freeze()
    env = through(proxy, db, RETRY_NUMBER="2", RECONNECT_WAIT_TIME="0.5")

    started = time.monotonic()
    result = run_cli(env, "stats", timeout_s=60)
    elapsed_s = time.monotonic() - started

    assert result.code == 1, result.output
    # Plus the interpreter's start-up, slow on a loaded machine; unbounded, it was 15 min.
    assert elapsed_s < 2 * DB_TIMEOUT_S + 0.5 + SLACK_S + 6, elapsed_s
    final = result.stderr_lines()[-1]
    assert final.startswith("timer-controller: cannot reach the database"), final
    assert "after 2 tries: lost connection, or no answer within DB_TIMEOUT" in final, final
    assert "Traceback" not in result.output


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
