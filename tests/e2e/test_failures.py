"""Real controller processes under failure: kill -9, SIGTERM, and a database that goes away.

Every test ends by accounting for every task: its row's final state in the
database and the requests the receiver saw for its ``webhook-id``.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Row:
    id: int
    status: str
    attempts: int
    owner: str | None
    lease_expires_at: datetime | None
    due_at: datetime
    last_error: str | None


def insert_tasks(engine: Engine, url: str, delays_s: list[float]) -> list[int]:
    """One task per delay (seconds from the database's now), in one plain-SQL INSERT."""
    rows = ", ".join(
        f"(:url, TIMESTAMPADD(MICROSECOND, :d{i}, UTC_TIMESTAMP(6)))" for i in range(len(delays_s))
    )
    params: dict[str, object] = {f"d{i}": int(d * 1e6) for i, d in enumerate(delays_s)}
    params["url"] = url
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO tasks (url, due_at) VALUES {rows}"), params)
        ids = conn.execute(text("SELECT id FROM tasks WHERE url = :url"), {"url": url})
        return sorted(ids.scalars())


def rows(engine: Engine, ids: list[int]) -> dict[int, Row]:
    with engine.connect() as conn:
        result = conn.execute(
            text(
                "SELECT id, status, attempts, owner, lease_expires_at, due_at, last_error "
                "FROM tasks WHERE id IN :ids"
            ).bindparams(ids=tuple(ids))
        )
        return {r.id: Row(**r._asdict()) for r in result}


def statuses(engine: Engine, ids: list[int]) -> Counter[str]:
    return Counter(row.status for row in rows(engine, ids).values())


def all_done(engine: Engine, ids: list[int]) -> bool:
    return statuses(engine, ids) == Counter({"done": len(ids)})


def fired(receiver: Receiver) -> Counter[int]:
    """Requests seen per task id."""
    return Counter(int(r["id"]) for r in receiver.records())


def arrivals(receiver: Receiver, task_id: int) -> list[float]:
    return sorted(r["t"] for r in receiver.records() if int(r["id"]) == task_id)


def epoch(utc: datetime) -> float:
    return utc.replace(tzinfo=UTC).timestamp()


def test_kill_9_mid_flight_leaves_tasks_that_another_pod_fires_after_the_lease(
    db: TestDatabase, receiver: Receiver, controllers: Callable[..., Controller]
) -> None:
    # A request lasts 2.5 s: the window in which pod A holds them in flight.
    env = db.env(WEBHOOK_TIMEOUT="4", LEASE_TIME="5", POLL_INTERVAL="0.2")
    pod_a = controllers(env)
    pod_a.wait_started()
    ids = insert_tasks(db.engine, receiver.url("/slow/2500"), [0.0] * 8)
    wait_until(
        lambda: statuses(db.engine, ids) == Counter({"claimed": len(ids)}),
        timeout_s=30,
        what="pod A to claim every task",
    )
    wait_until(
        lambda: set(fired(receiver)) == set(ids), timeout_s=30, what="A's requests to arrive"
    )
    pod_a.kill()
    assert pod_a.wait(10) == -9
    held = rows(db.engine, ids)
    assert {r.status for r in held.values()} == {"claimed"}, "A recorded before it died"
    owners = {r.owner for r in held.values()}
    assert len(owners) == 1
    assert None not in owners

    pod_b = controllers(env)
    wait_until(lambda: all_done(db.engine, ids), timeout_s=60, what="pod B to finish A's tasks")

    final = rows(db.engine, ids)
    assert {r.attempts for r in final.values()} == {2}  # A's attempt and B's
    assert {r.owner for r in final.values()} == {None}
    assert fired(receiver) == Counter(dict.fromkeys(ids, 2))
    for task_id in ids:
        lease = held[task_id].lease_expires_at
        assert lease is not None
        second = arrivals(receiver, task_id)[1]
        assert second >= epoch(lease) - 0.01, "B fired a task while A's lease still held it"
    assert "leases expired" in pod_b.output.text()


def test_sigterm_finishes_in_flight_requests_and_hands_back_unstarted_claims(
    db: TestDatabase, receiver: Receiver, controllers: Callable[..., Controller]
) -> None:
    grace_s = 5
    env = db.env(SHUTDOWN_GRACE=str(grace_s), LOOKAHEAD="6", POLL_INTERVAL="0.2", BATCH_SIZE="50")
    pod_a = controllers(env)
    pod_a.wait_started()
    in_flight = insert_tasks(db.engine, receiver.url("/slow/2000"), [0.0] * 5)
    # Due in 4 s but inside the 6 s look-ahead: claimed now, fired later.
    unstarted = insert_tasks(db.engine, receiver.url("/ok/later"), [4.0] * 5)
    everything = in_flight + unstarted
    wait_until(
        lambda: statuses(db.engine, everything) == Counter({"claimed": len(everything)}),
        timeout_s=30,
        what="pod A to claim all ten tasks",
    )
    wait_until(
        lambda: set(fired(receiver)) == set(in_flight),
        timeout_s=30,
        what="the slow requests to be in flight",
    )

    pod_a.terminate()
    try:
        code = pod_a.wait(grace_s + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"A did not exit within the grace period:\n{pod_a.output.text()}")
    assert code == 0, pod_a.output.text()
    out = pod_a.output.text()
    assert re.search(r"waiting up to 5s for \d+ in-flight requests", out), out
    assert f"handed back {len(unstarted)} unfired claims" in out

    after_a = rows(db.engine, everything)
    assert {after_a[i].status for i in in_flight} == {"done"}
    for task_id in unstarted:
        row = after_a[task_id]
        assert (row.status, row.owner, row.lease_expires_at, row.attempts) == (
            "waiting",
            None,
            None,
            0,
        )
    assert fired(receiver) == Counter(dict.fromkeys(in_flight, 1))

    pod_b = controllers(env)
    pod_b.wait_started()
    wait_until(lambda: all_done(db.engine, everything), timeout_s=60, what="B to fire the rest")
    stats = receiver.stats()
    assert stats["duplicates"] == 0
    assert stats["unique_ids"] == len(everything)
    assert fired(receiver) == Counter(dict.fromkeys(everything, 1))
    for task_id in unstarted:
        # Handed back, not fired early by B either.
        assert arrivals(receiver, task_id)[0] >= epoch(after_a[task_id].due_at)


@pytest.fixture
def proxy(db: TestDatabase) -> Iterator[TcpProxy]:
    with TcpProxy(db.url.host or "127.0.0.1", db.url.port or 3306) as started:
        yield started


def through(proxy: TcpProxy, db: TestDatabase, **overrides: str) -> dict[str, str]:
    return db.env(DB_HOST="127.0.0.1", DB_PORT=str(proxy.port), **overrides)


def test_losing_the_database_for_a_while_loses_no_task(
    db: TestDatabase,
    receiver: Receiver,
    controllers: Callable[..., Controller],
    proxy: TcpProxy,
) -> None:
    env = through(proxy, db, RETRY_NUMBER="20", RECONNECT_WAIT_TIME="0.25", POLL_INTERVAL="0.2")
    pod = controllers(env)
    pod.wait_started()
    ids = insert_tasks(db.engine, receiver.url("/ok"), [i * 0.1 for i in range(40)])
    wait_until(lambda: statuses(db.engine, ids)["done"] >= 5, timeout_s=30, what="the first tasks")

    proxy.cut()
    # The outage lasts until the controller has failed several claims in a row (~1.5 s).
    wait_until(
        lambda: "claim failed (try 6 of 20)" in pod.output.text() or pod.proc.poll() is not None,
        timeout_s=30,
        what="the controller to notice the outage",
    )
    assert pod.proc.poll() is None, f"gave up within its retries:\n{pod.output.text()}"
    assert statuses(db.engine, ids)["done"] < len(ids), "the outage came too late to matter"
    proxy.restore()

    wait_until(lambda: all_done(db.engine, ids), timeout_s=60, what="every task after the outage")
    assert pod.proc.poll() is None, pod.output.text()
    assert proxy.refused > 0
    assert set(fired(receiver)) == set(ids)
    out = pod.output.text()
    assert "database lost" not in out
    assert "Traceback" not in out
    pod.terminate()
    assert pod.wait(30) == 0


def test_a_database_that_never_comes_back_exits_1_and_its_claims_return_on_lease_expiry(
    db: TestDatabase,
    receiver: Receiver,
    controllers: Callable[..., Controller],
    proxy: TcpProxy,
) -> None:
    delivery = {"WEBHOOK_TIMEOUT": "2", "LEASE_TIME": "3", "POLL_INTERVAL": "0.2"}
    env = through(
        proxy, db, RETRY_NUMBER="3", RECONNECT_WAIT_TIME="0.2", SHUTDOWN_GRACE="3", **delivery
    )
    pod_a = controllers(env)
    pod_a.wait_started()
    ids = insert_tasks(db.engine, receiver.url("/slow/1500"), [0.0] * 5)
    wait_until(
        lambda: set(fired(receiver)) == set(ids), timeout_s=30, what="A's requests in flight"
    )

    proxy.cut()
    try:
        code = pod_a.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"A kept running without its database:\n{pod_a.output.text()}")
    out = pod_a.output.text()
    assert code == 1, out
    assert re.search(r"database lost: .*(claims failed 3 times|after 3 tries)", out), out
    assert "Traceback" not in out
    held = rows(db.engine, ids)
    assert {r.status for r in held.values()} == {"claimed"}, "outcomes reached a cut database"

    proxy.restore()
    pod_b = controllers(db.env(**delivery))  # straight to the database
    wait_until(lambda: all_done(db.engine, ids), timeout_s=60, what="B to fire A's tasks")
    assert {r.attempts for r in rows(db.engine, ids).values()} == {2}
    assert fired(receiver) == Counter(dict.fromkeys(ids, 2))
    assert "leases expired" in pod_b.output.text()
