"""Guarded targets and the per-pod concurrency bound, with real processes.

BLOCK_PRIVATE_NETWORKS and ALLOWED_HOSTS decide what the controller may
reach; the receiver (on 127.0.0.1) shows whether anything got through.
MAX_IN_FLIGHT caps both the requests a pod has open and the rows it holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import insert_task as insert
from tests.support.waiting import wait_until

FAST = {"POLL_INTERVAL": "0.1", "WEBHOOK_TIMEOUT": "2", "LEASE_TIME": "5"}

Start = Callable[..., Controller]


def finished_rows(db: TestDatabase, ids: list[int]) -> dict[int, Any]:
    """Until every task is done or failed; their rows."""

    def rows() -> dict[int, Any]:
        with db.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT id, status, attempts, last_error FROM tasks WHERE id IN :ids"
                ).bindparams(ids=tuple(ids))
            ).all()
        return {row.id: row for row in found}

    wait_until(
        lambda: all(r.status in ("done", "failed") for r in rows().values()),
        timeout_s=40,
        what=f"tasks {ids} to finish",
    )
    return rows()


def loopback_targets(receiver: Receiver) -> tuple[str, str]:
    """The receiver by literal address and by a name that resolves to loopback."""
    by_ip = receiver.url("/guarded/ip")
    assert by_ip.startswith("http://127.0.0.1:")
    return by_ip, by_ip.replace("127.0.0.1", "localhost").replace("/ip", "/name")


def test_private_networks_are_blocked_when_asked(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    controllers(db.env(**FAST, BLOCK_PRIVATE_NETWORKS="true")).wait_started()
    by_ip, by_name = loopback_targets(receiver)
    ids = [insert(db, by_ip), insert(db, by_name)]
    rows = finished_rows(db, ids)

    for task_id in ids:
        assert (rows[task_id].status, rows[task_id].attempts) == ("failed", 1), rows[task_id]
        assert rows[task_id].last_error.startswith("blocked destination"), rows[task_id]
    assert receiver.stats()["count"] == 0


def test_a_listed_range_lets_private_targets_through(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    env = db.env(**FAST, BLOCK_PRIVATE_NETWORKS="true", ALLOWED_HOSTS="127.0.0.0/8")
    controllers(env).wait_started()
    by_ip, by_name = loopback_targets(receiver)
    ids = [insert(db, by_ip), insert(db, by_name)]
    rows = finished_rows(db, ids)

    assert {i: rows[i].status for i in ids} == dict.fromkeys(ids, "done")
    assert sorted(r["path"] for r in receiver.records()) == ["/guarded/ip", "/guarded/name"]


def test_hosts_outside_the_allowlist_are_refused(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    controllers(db.env(**FAST, ALLOWED_HOSTS="example.invalid")).wait_started()
    by_ip, by_name = loopback_targets(receiver)
    ids = [insert(db, by_ip), insert(db, by_name)]
    rows = finished_rows(db, ids)

    for task_id in ids:
        assert (rows[task_id].status, rows[task_id].attempts) == ("failed", 1), rows[task_id]
        assert "ALLOWED_HOSTS" in rows[task_id].last_error, rows[task_id]
    assert receiver.stats()["count"] == 0


@dataclass(frozen=True)
class Snapshot:
    """The claimed rows, read by a query that ran between ``start`` and ``end``."""

    start: float
    end: float
    claimed: frozenset[int]


@contextmanager
def watching_claims(db: TestDatabase) -> Iterator[list[Snapshot]]:
    """Read the claimed rows over and over on a thread until the block ends."""
    snapshots: list[Snapshot] = []
    stop = threading.Event()

    def watch() -> None:
        with db.engine.connect() as conn:
            while not stop.is_set():
                start = time.time()
                ids = conn.execute(text("SELECT id FROM tasks WHERE status = 'claimed'")).scalars()
                snapshots.append(Snapshot(start, time.time(), frozenset(ids)))
                conn.commit()  # a fresh READ COMMITTED view for the next read
                stop.wait(0.005)  # a poll interval, not synchronisation

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield snapshots
    finally:
        stop.set()
        watcher.join(10)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most half-open intervals [start, end) that share a moment."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = current = 0
    for _, step in events:  # at equal times the end (-1) sorts first
        current += step
        most = max(most, current)
    return most


def test_max_in_flight_bounds_requests_and_claimed_rows(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    """30 tasks to a receiver that holds each request 0.3 s, MAX_IN_FLIGHT=5.

    The rows a pod holds are bounded by what it has not finished: a row whose
    request was answered stays 'claimed' in the table until the batched
    outcome write (every ~20 ms) records it, while its slot is already free
    and refilled. A raw ``COUNT(*) WHERE status='claimed'`` therefore briefly
    shows more than MAX_IN_FLIGHT (observed: 8-10) without any row being
    hoarded; the check counts the claimed rows whose request had not been
    answered yet, which is exactly what the bound is about.
    """
    max_in_flight, slow_s = 5, 0.3
    proc = controllers(db.env(**FAST, MAX_IN_FLIGHT=str(max_in_flight), LOG_FORMAT="json"))
    proc.wait_started()
    with watching_claims(db) as snapshots:
        ids = [insert(db, receiver.url(f"/slow/{int(slow_s * 1000)}")) for _ in range(30)]
        rows = finished_rows(db, ids)
    assert {rows[i].status for i in ids} == {"done"}

    records = receiver.records()
    assert sorted(int(r["id"]) for r in records) == sorted(ids)
    # Each request is open at the receiver for at least slow_s after it arrives.
    overlap = max_overlap([(r["t"], r["t"] + slow_s) for r in records])
    assert overlap <= max_in_flight, f"{overlap} requests overlapped at the receiver"

    assert any(s.claimed for s in snapshots), "the watcher never saw a claimed row"
    answered_by = {int(r["id"]): r["t"] + slow_s for r in records}
    # A row stays 'claimed' until its outcome is flushed (batched, every ~20 ms)
    # even though its request has ended and its slot is free again; count only
    # rows whose request had not been answered when the read ended.
    held = max(
        sum(1 for i in s.claimed if answered_by.get(i, float("inf")) > s.end) for s in snapshots
    )
    assert held <= max_in_flight, f"{held} rows claimed at once"

    claims = [len(line["task_ids"]) for line in proc.json_lines() if line.get("event") == "claimed"]
    assert max(claims) <= max_in_flight
