"""Retention in a real controller process: old finished rows go, nothing else does.

The first retention run comes about 15 s after start (upkeep.py:
``RETENTION_EVERY_S / 4``), so this test waits for it. A second controller,
started first on its own database with ``RETENTION=0``, has passed the same
moment by then, and must have deleted nothing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import URL

from tests.support.databases import TestDatabase, fresh_database
from tests.support.processes import Controller, Receiver
from tests.support.waiting import wait_until

Start = Callable[..., Controller]
# A pacing interval for the background load, not synchronisation.
LIVE_EVERY_S = 0.5

_INSERT = text(
    "INSERT INTO tasks (url, due_at, status, owner, lease_expires_at, finished_at) VALUES ("
    " :url,"
    " TIMESTAMPADD(SECOND, :due_in_s, UTC_TIMESTAMP(6)),"
    " :status,"
    " :owner,"
    " TIMESTAMPADD(SECOND, :lease_in_s, UTC_TIMESTAMP(6)),"
    " TIMESTAMPADD(SECOND, :finished_s_ago * -1, UTC_TIMESTAMP(6)))"
)


@dataclass
class Rows:
    """Hand-made rows, by what retention must do with them."""

    old: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)


def insert_row(
    db: TestDatabase,
    *,
    status: str,
    due_in_s: int,
    finished_s_ago: int | None = None,
    owner: str | None = None,
    lease_in_s: int | None = None,
    url: str = "http://127.0.0.1:9/never-fired",
) -> int:
    with db.engine.begin() as conn:
        result = conn.execute(
            _INSERT,
            {
                "url": url,
                "due_in_s": due_in_s,
                "status": status,
                "owner": owner,
                "lease_in_s": lease_in_s,
                "finished_s_ago": finished_s_ago,
            },
        )
        return int(result.lastrowid)


def seed_rows(db: TestDatabase) -> Rows:
    hour = 3600
    rows = Rows()
    # Old finished rows: 7 of them, so CLEANUP_BATCH=2 needs four batches.
    for status in ("done", "done", "done", "failed", "failed", "cancelled", "cancelled"):
        rows.old.append(insert_row(db, status=status, due_in_s=-3 * hour, finished_s_ago=2 * hour))
    # Young finished rows.
    for status, age_s in (("done", 600), ("failed", 60), ("cancelled", 5)):
        rows.kept.append(insert_row(db, status=status, due_in_s=-hour, finished_s_ago=age_s))
    # Waiting rows, due in an hour; one even carries a stale finish time.
    rows.kept.append(insert_row(db, status="waiting", due_in_s=hour))
    rows.kept.append(insert_row(db, status="waiting", due_in_s=hour))
    rows.kept.append(insert_row(db, status="waiting", due_in_s=hour, finished_s_ago=2 * hour))
    # Held by another live pod (lease an hour ahead), with a stale finish time.
    rows.kept.append(
        insert_row(
            db,
            status="claimed",
            due_in_s=-3 * hour,
            owner="elsewhere/1-abc",
            lease_in_s=hour,
            finished_s_ago=2 * hour,
        )
    )
    return rows


def present_ids(db: TestDatabase) -> set[int]:
    with db.engine.connect() as conn:
        return {int(i) for i in conn.execute(text("SELECT id FROM tasks")).scalars()}


def statuses(db: TestDatabase, ids: list[int]) -> Counter[str]:
    """How many of ``ids`` are in each status."""
    wanted = set(ids)
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status FROM tasks")).all()
    return Counter(str(status) for task_id, status in rows if task_id in wanted)


@contextmanager
def live_load(db: TestDatabase, url: str) -> Iterator[list[int]]:
    """Schedules a task due now every LIVE_EVERY_S until the block ends."""
    ids: list[int] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            with db.engine.begin() as conn:
                result = conn.execute(
                    text("INSERT INTO tasks (url, due_at) VALUES (:url, UTC_TIMESTAMP(6))"),
                    {"url": url},
                )
                ids.append(int(result.lastrowid))
            stop.wait(LIVE_EVERY_S)

    thread = threading.Thread(target=run, name="live-load", daemon=True)
    thread.start()
    try:
        yield ids
    finally:
        stop.set()
        thread.join(10)


def retention_events(proc: Controller) -> list[dict[str, object]]:
    return [e for e in proc.json_lines() if e.get("event") == "retention"]


def test_retention_deletes_only_old_finished_rows_and_zero_disables_it(
    db: TestDatabase, db_server: URL, receiver: Receiver, controllers: Start
) -> None:
    rows = seed_rows(db)
    with fresh_database(db_server) as other_db:
        off_rows = seed_rows(other_db)
        # Started first, so its first retention moment comes before the other's.
        off = controllers(other_db.env(RETENTION="0", LOG_FORMAT="json"))
        try:
            check_retention(db, rows, other_db, off_rows, off, receiver, controllers)
        finally:
            off.stop()  # before its database is dropped


def check_retention(
    db: TestDatabase,
    rows: Rows,
    other_db: TestDatabase,
    off_rows: Rows,
    off: Controller,
    receiver: Receiver,
    controllers: Start,
) -> None:
    off.wait_started()
    on = controllers(db.env(RETENTION="1h", CLEANUP_BATCH="2", LOG_FORMAT="json"))
    on.wait_started()
    off_live = insert_row(other_db, status="waiting", due_in_s=0, url=receiver.url("/off"))

    with live_load(db, receiver.url("/live")) as live:
        events = wait_until(
            lambda: retention_events(on),
            timeout_s=60,
            what="the first retention run (about 15 s after start)",
        )
        # Claiming goes on after the purge too.
        n_before_stop = len(live)
        wait_until(lambda: len(live) >= n_before_stop + 2, timeout_s=30, what="two more live tasks")
    assert [e["deleted"] for e in events] == [len(rows.old)]

    wait_until(
        lambda: statuses(db, live)["done"] == len(live),
        timeout_s=60,
        what="every live task done",
    )
    assert present_ids(db) == {*rows.kept, *live}
    assert statuses(db, rows.kept) == {
        "done": 1,
        "failed": 1,
        "cancelled": 1,
        "waiting": 3,
        "claimed": 1,
    }
    arrivals = Counter(rec["id"] for rec in receiver.records() if rec["path"] == "/live")
    assert arrivals == Counter(str(i) for i in live)  # each fired exactly once

    # RETENTION=0: the same rows, past the same moment, all still there.
    wait_until(
        lambda: any(rec["path"] == "/off" for rec in receiver.records()),
        timeout_s=30,
        what="the RETENTION=0 controller to fire its task",
    )
    assert present_ids(other_db) == {*off_rows.old, *off_rows.kept, off_live}
    assert retention_events(off) == []
