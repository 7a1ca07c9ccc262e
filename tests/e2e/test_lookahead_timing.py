"""Look-ahead firing in a real controller: claimed early, never fired early.

Tasks fall due 0.5-2 s after they are scheduled. The database, the
controller and the receiver share this machine's clock, so the receiver's
arrival time (``time.time()``) and the row's ``due_at`` (naive UTC from
``UTC_TIMESTAMP(6)``) can be compared directly. No speed is asserted: only a
very generous sanity bound on lateness.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.waiting import wait_until

Start = Callable[..., Controller]
N_TASKS = 16
FIRST_DUE_S, LAST_DUE_S = 0.5, 2.0
SANITY_BOUND_S = 5.0
# The JSON log's time is cut to milliseconds.
LOG_TIME_RESOLUTION_S = 0.001


def epoch(naive_utc: datetime) -> float:
    return naive_utc.replace(tzinfo=UTC).timestamp()


def schedule_staggered(db: TestDatabase, url: str) -> dict[int, datetime]:
    """N_TASKS tasks due FIRST_DUE_S..LAST_DUE_S from now (database clock); id -> due_at."""
    step_s = (LAST_DUE_S - FIRST_DUE_S) / (N_TASKS - 1)
    with db.engine.begin() as conn:
        for i in range(N_TASKS):
            conn.execute(
                text(
                    "INSERT INTO tasks (url, due_at) VALUES "
                    "(:url, TIMESTAMPADD(MICROSECOND, :us, UTC_TIMESTAMP(6)))"
                ),
                {"url": url, "us": round((FIRST_DUE_S + i * step_s) * 1e6)},
            )
        rows = conn.execute(text("SELECT id, due_at FROM tasks")).all()
    return {int(task_id): due_at for task_id, due_at in rows}


def all_finished(db: TestDatabase) -> list[Any] | None:
    """The finished rows once all N_TASKS are finished, else None."""
    with db.engine.connect() as conn:
        rows = list(
            conn.execute(
                text(
                    "SELECT id, status, attempts, due_at, fired_at FROM tasks "
                    "WHERE status IN ('done', 'failed')"
                )
            ).all()
        )
    return rows if len(rows) == N_TASKS else None


def claim_times(proc: Controller) -> dict[int, float]:
    """task id -> when its (only) claim was logged, epoch seconds."""
    claimed: dict[int, float] = {}
    for entry in proc.json_lines():
        if entry.get("event") == "claimed":
            at = datetime.fromisoformat(entry["time"]).timestamp()
            for task_id in entry["task_ids"]:
                assert task_id not in claimed, f"task {task_id} claimed twice"
                claimed[task_id] = at
    return claimed


@pytest.mark.parametrize(
    ("lookahead_env", "claims_ahead"),
    [({}, True), ({"LOOKAHEAD": "0"}, False)],
    ids=["lookahead-default", "lookahead-0"],
)
def test_fires_once_never_before_due_and_claims_ahead_only_with_lookahead(
    db: TestDatabase,
    receiver: Receiver,
    controllers: Start,
    lookahead_env: dict[str, str],
    claims_ahead: bool,
) -> None:
    # Default POLL_INTERVAL (0.5 s), so the default look-ahead is 0.5 s too.
    proc = controllers(db.env(LOG_FORMAT="json", **lookahead_env))
    proc.wait_started()
    due = schedule_staggered(db, receiver.url("/timed"))
    rows = wait_until(
        lambda: all_finished(db),
        timeout_s=60,
        what=f"all {N_TASKS} tasks finished",
    )
    assert rows is not None

    stats = receiver.stats()
    assert stats == {"count": N_TASKS, "unique_ids": N_TASKS, "duplicates": 0}
    arrivals = {int(rec["id"]): rec["t"] for rec in receiver.records()}
    assert arrivals.keys() == due.keys()
    for task_id, due_at in due.items():
        late_s = arrivals[task_id] - epoch(due_at)
        assert late_s >= 0, f"task {task_id} arrived {-late_s * 1e3:.3f} ms before due_at"
        assert late_s <= SANITY_BOUND_S, f"task {task_id} arrived {late_s:.1f} s after due_at"

    for row in rows:
        assert row.status == "done", row
        assert row.attempts == 1, row
        assert row.due_at == due[row.id], row  # never rescheduled
        assert row.fired_at >= row.due_at, (
            f"task {row.id}: fired_at {row.fired_at} is before due_at {row.due_at}"
        )
        assert (row.fired_at - row.due_at).total_seconds() <= SANITY_BOUND_S, row

    claimed = claim_times(proc)  # each task claimed once
    assert claimed.keys() == due.keys()
    # The logged time is cut to the millisecond, so it may read up to 1 ms early.
    ahead = [i for i, at in claimed.items() if at + LOG_TIME_RESOLUTION_S < epoch(due[i])]
    if claims_ahead:
        assert ahead, "no task was claimed before its due time: look-ahead is not in effect"
    else:
        assert ahead == [], f"LOOKAHEAD=0, yet tasks {ahead} were claimed before they were due"
