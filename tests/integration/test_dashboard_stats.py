"""The dashboard's overview and failures against the real database, and their plans.

Rows are written as the controller leaves them (status, attempts, fired_at,
finished_at), with times relative to the database's clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import ClauseElement, text

from tests.support.databases import TestDatabase
from timer_controller.db import stats_statements
from timer_controller.db.stats import MINUTES, StatsRepository


def put(
    db: TestDatabase,
    *,
    status: str,
    due_s: float,
    attempts: int = 0,
    fired_s: float | None = None,
    finished_s: float | None = None,
    code: int | None = None,
    error: str | None = None,
) -> int:
    """A row in the state the controller leaves it; ``*_s`` are seconds from now (negative: ago)."""

    def at(name: str) -> str:
        return f"TIMESTAMPADD(MICROSECOND, :{name}, UTC_TIMESTAMP(6))"

    with db.engine.begin() as conn:
        result = conn.execute(
            text(
                "INSERT INTO tasks (url, due_at, status, attempts, fired_at, finished_at, "
                "last_status_code, last_error) VALUES ('http://127.0.0.1:9/x', "
                f"{at('due')}, :status, :attempts, "
                f"IF(:fired IS NULL, NULL, {at('fired')}), "
                f"IF(:finished IS NULL, NULL, {at('finished')}), "
                ":code, :error)"
            ),
            {
                "status": status,
                "attempts": attempts,
                "due": int(due_s * 1e6),
                "fired": None if fired_s is None else int(fired_s * 1e6),
                "finished": None if finished_s is None else int(finished_s * 1e6),
                "code": code,
                "error": error,
            },
        )
        return int(result.lastrowid)


def test_the_overview_counts_what_the_rows_say(db: TestDatabase) -> None:
    put(db, status="waiting", due_s=3600)  # not due
    oldest = put(db, status="waiting", due_s=-120)
    put(db, status="waiting", due_s=-5)
    put(db, status="claimed", due_s=-1, attempts=1)
    # Fired 10 ms late, two minutes ago; and 2 s late, now.
    put(db, status="done", due_s=-120.01, attempts=1, fired_s=-120, finished_s=-120)
    put(db, status="done", due_s=-2, attempts=1, fired_s=0, finished_s=0)
    # A first attempt that failed for good; a retry waiting (its due_at moved: not a lateness).
    put(db, status="failed", due_s=-30.5, attempts=1, fired_s=-30, finished_s=-30, code=410)
    put(db, status="waiting", due_s=600, attempts=1, fired_s=-10, code=503)
    # A third attempt that succeeded, and a cancel.
    put(db, status="done", due_s=-60, attempts=3, fired_s=-59, finished_s=-59)
    put(db, status="cancelled", due_s=3600, finished_s=-1)
    # Outside the window: two hours ago.
    put(db, status="done", due_s=-7200, attempts=1, fired_s=-7200, finished_s=-7200)
    put(db, status="failed", due_s=-7200, attempts=1, fired_s=-7200, finished_s=-7200)

    overview = StatsRepository(db.engine).overview()

    assert overview.by_status == {
        "waiting": 4,
        "claimed": 1,
        "done": 3,
        "failed": 1,
        "cancelled": 1,
    }
    assert overview.backlog == 2
    assert overview.oldest_due is not None
    assert overview.oldest_due.id == oldest
    assert (overview.db_now - overview.oldest_due.due_at).total_seconds() >= 120
    assert len(overview.fired_per_minute) == MINUTES
    assert sum(overview.fired_per_minute) == 5  # every row fired in the last hour, once
    assert overview.fired_per_minute[-1] >= 1  # the one fired "now"
    assert overview.retrying == 1
    assert overview.failed_last_hour == 1
    assert overview.failed_per_minute[-1] == 1
    firsts = [sum(col) for col in zip(*overview.lateness_per_minute, strict=True)]
    bounds = overview.lateness_bounds_ms
    assert sum(firsts) == 3  # the two done first attempts and the failed one
    assert firsts[bounds.index(10) + 1] == 1  # [10 ms, 20 ms)
    assert firsts[bounds.index(500) + 1] == 1  # [500 ms, 1 s): the failed one, 0.5 s late
    assert firsts[bounds.index(2000) + 1] == 1  # [2 s, 5 s)


def test_recent_failures_are_newest_first_with_their_reasons(db: TestDatabase) -> None:
    old = put(
        db,
        status="failed",
        due_s=-100,
        attempts=3,
        fired_s=-90,
        finished_s=-90,
        code=503,
        error="HTTP 503",
    )
    new = put(
        db,
        status="failed",
        due_s=-10,
        attempts=1,
        fired_s=-5,
        finished_s=-5,
        error="connection refused",
    )
    put(db, status="done", due_s=-10, attempts=1, fired_s=-5, finished_s=-5)

    failures = StatsRepository(db.engine).recent_failures(limit=10)

    assert [f.id for f in failures] == [new, old]
    assert (failures[0].last_status_code, failures[0].last_error) == (None, "connection refused")
    assert (failures[1].last_status_code, failures[1].last_error) == (503, "HTTP 503")
    assert failures[1].attempts == 3


def _plan(db: TestDatabase, statement: ClauseElement) -> list[dict[str, Any]]:
    sql = str(statement.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text("EXPLAIN " + sql))]


OLD_FINISHED_ROWS = 4000


@pytest.fixture
def many_old_rows(db: TestDatabase) -> TestDatabase:
    """Thousands of rows finished two days ago and a few recent ones: a scan would show."""
    with db.engine.begin() as conn:
        for status in ("done", "failed"):
            conn.execute(
                text(
                    # A generated series, not information_schema: other tests'
                    # concurrent DDL makes reading that fail (error 1684).
                    "INSERT INTO tasks (url, due_at, status, attempts, fired_at, finished_at) "
                    "WITH RECURSIVE d (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < 99) "
                    "SELECT 'http://x', t, :status, 1, t, t FROM (SELECT UTC_TIMESTAMP(6) - "
                    "INTERVAL 2 DAY AS t FROM d AS a, d AS b LIMIT :n) AS many"
                ),
                {"status": status, "n": OLD_FINISHED_ROWS // 2},
            )
    for seconds_ago in (1, 2, 3):
        put(
            db,
            status="done",
            due_s=-seconds_ago - 0.01,
            attempts=1,
            fired_s=-seconds_ago,
            finished_s=-seconds_ago,
        )
        put(
            db,
            status="failed",
            due_s=-seconds_ago,
            attempts=1,
            fired_s=-seconds_ago,
            finished_s=-seconds_ago,
        )
        put(db, status="waiting", due_s=-seconds_ago)
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE TABLE tasks"))
    return db


OVERVIEW_PLANS = {
    "live_counts": ("ix_tasks_status_due_at", stats_statements.live_counts_statement()),
    "finished_counts": (
        "ix_tasks_status_finished_at",
        stats_statements.finished_counts_statement(),
    ),
    "backlog": ("ix_tasks_status_due_at", stats_statements.backlog_statement()),
    "oldest_due": ("ix_tasks_status_due_at", stats_statements.oldest_due_statement()),
    "fired": ("ix_tasks_fired_at", stats_statements.fired_statement()),
    "failures_per_minute": (
        "ix_tasks_status_finished_at",
        stats_statements.failures_per_minute_statement(),
    ),
    "retrying": ("ix_tasks_fired_at", stats_statements.retrying_statement()),
}


@pytest.mark.parametrize("name", sorted(OVERVIEW_PLANS))
def test_each_overview_statement_reads_a_short_index_range(
    many_old_rows: TestDatabase, name: str
) -> None:
    index, statement = OVERVIEW_PLANS[name]
    (step,) = _plan(many_old_rows, statement)
    assert step["key"] == index, step
    assert step["type"] == "range", step
    assert int(step["rows"]) < 100, step  # never the thousands of old finished rows
    if name not in ("oldest_due",):
        # Counted from the index alone: the rows themselves are never read.
        assert "Using index" in (step["Extra"] or ""), step


def test_recent_failures_walk_the_failed_prefix_backwards_without_sorting(
    many_old_rows: TestDatabase,
) -> None:
    (step,) = _plan(many_old_rows, stats_statements.recent_failures_statement(limit=50))
    assert step["key"] == "ix_tasks_status_finished_at", step
    assert "filesort" not in (step["Extra"] or "").lower(), step
