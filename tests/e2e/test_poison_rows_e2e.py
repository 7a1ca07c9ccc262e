"""Poison rows against a real controller and receiver: each fails alone, the pod keeps firing.

Before, a zero date crashed the pod after its claim committed (and, five
restarts later, failed its whole batch); ``attempts = 2147483647`` stopped
all firing for good; deep JSON held its row claimed until the lease expired.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from tests.support.cli_runner import run_cli
from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import FAST_ENV, insert_task
from tests.support.waiting import wait_until

Start = Callable[..., Controller]
DEEP_JSON = "[" * 30_000 + "]" * 30_000  # fits TEXT; json.loads recursed to death on it


def insert_raw(db: TestDatabase, url: str, assignments: dict[str, str], **params: Any) -> int:
    """A row written as MariaDB's default sql_mode allows, zero dates included."""
    names = ", ".join(["url", *assignments])
    values = ", ".join([":url", *assignments.values()])
    with db.engine.begin() as conn:
        conn.execute(text("SET SESSION sql_mode = ''"))
        result = conn.execute(
            text(f"INSERT INTO tasks ({names}) VALUES ({values})"), {"url": url, **params}
        )
        conn.execute(text("SET SESSION sql_mode = DEFAULT"))
        return int(result.lastrowid)


def statuses(db: TestDatabase) -> dict[int, tuple[str, str | None]]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, last_error FROM tasks")).all()
    return {row.id: (row.status, row.last_error) for row in rows}


def test_poison_rows_fail_alone_and_the_pod_keeps_firing(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    now = "UTC_TIMESTAMP(6)"
    poison = {
        insert_raw(db, receiver.url("/p/zero"), {"due_at": "'0000-00-00 00:00:00'"}): (
            "due_at is not a valid time"
        ),
        insert_raw(db, receiver.url("/p/int"), {"due_at": now, "attempts": "2147483647"}): (
            "attempts is 2147483647"
        ),
        insert_raw(db, receiver.url("/p/deep"), {"due_at": now, "headers": ":h"}, h=DEEP_JSON): (
            "nested too deeply"
        ),
        insert_raw(
            db, receiver.url("/p/body"), {"due_at": now, "body": "REPEAT('x', 2 * 1024 * 1024)"}
        ): "more than MAX_REQUEST_BODY",
    }
    good = [insert_task(db, receiver.url(f"/good/{n}")) for n in range(6)]
    # Inserted by hand as claimed, with no lease: swept, then fired like any other.
    by_hand = insert_raw(db, receiver.url("/by-hand"), {"due_at": now, "status": "'claimed'"})

    pod = controllers(db.env(**FAST_ENV, BATCH_SIZE="20"))
    wait_until(
        lambda: all(status in ("done", "failed") for status, _ in statuses(db).values()),
        timeout_s=60,
        what="every row to finish",
    )

    final = statuses(db)
    for task_id, reason in poison.items():
        status, error = final[task_id]
        assert status == "failed", (task_id, final[task_id])
        assert reason in (error or ""), (task_id, error)
    assert all(final[task_id][0] == "done" for task_id in [*good, by_hand]), final
    assert pod.proc.poll() is None, "the pod died"
    seen = {int(r["id"]) for r in receiver.records()}
    assert seen == {*good, by_hand}, "a poison row reached the receiver, or a good one did not"
    assert "Traceback" not in pod.output.text()

    zero_date = next(iter(poison))
    shown = run_cli(db.env(), "status", str(zero_date))
    assert shown.code == 0, shown
    assert "Traceback" not in shown.output
    assert "due: not a valid time" in shown.stdout


def test_a_due_timer_never_waits_behind_timers_claimed_ahead(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    """LOOKAHEAD=30 and MAX_IN_FLIGHT=4: far-future tasks once took every slot."""
    later = [insert_task(db, receiver.url(f"/later/{n}"), in_s=25) for n in range(10)]
    controllers(db.env(POLL_INTERVAL="0.2", LOOKAHEAD="30", MAX_IN_FLIGHT="4", BATCH_SIZE="4"))

    def claimed() -> int:
        return sum(status == "claimed" for status, _ in statuses(db).values())

    # Half a batch (2 of 4 slots) is kept for due tasks: the rest may hold ones not yet due.
    wait_until(lambda: claimed() >= 2, timeout_s=30, what="tasks claimed ahead")
    due = insert_task(db, receiver.url("/due-now"))

    wait_until(
        lambda: statuses(db)[due][0] == "done",
        timeout_s=8,
        what="the due task to fire while look-ahead claims hold slots",
    )
    assert claimed() <= 2, "tasks not yet due took the slots kept for due ones"
    assert all(statuses(db)[task_id][0] != "done" for task_id in later)


def test_large_bodies_held_at_once_are_capped(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    """60 rows with 1 MiB bodies to a slow receiver: a pod once held them all (290 MB)."""
    mib = 1024 * 1024
    for n in range(60):
        insert_raw(
            db,
            receiver.url("/slow/1500"),
            {"due_at": "UTC_TIMESTAMP(6)", "body": "REPEAT(:c, :n)"},
            c=chr(ord("a") + n % 26),
            n=mib,
        )
    controllers(db.env(**FAST_ENV))

    most = 0

    def finished() -> bool:
        nonlocal most
        with db.engine.connect() as conn:
            claimed, done = conn.execute(
                text("SELECT SUM(status = 'claimed'), SUM(status = 'done') FROM tasks")
            ).one()
        most = max(most, int(claimed or 0))
        return int(done or 0) == 60

    wait_until(finished, timeout_s=60, what="every large body to be delivered", interval_s=0.02)
    # 24 MiB of bodies held, plus the one batch (BATCH_SIZE=10) claimed past it;
    # the table also shows a batch answered but not yet written (FLUSH_INTERVAL).
    assert 0 < most <= 24 + 2 * 10, most
