"""Scheduling tasks as other systems do: a plain ``INSERT INTO tasks``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from tests.support.databases import TestDatabase

# Short poll, timeout, lease and backoff keep every e2e scenario to a few seconds.
FAST_ENV = {
    "POLL_INTERVAL": "0.1",
    "WEBHOOK_TIMEOUT": "2",
    "LEASE_TIME": "5",
    "RETRY_BACKOFF_BASE": "0.2",
    "RETRY_BACKOFF_MAX": "1",
}
OPTIONAL_COLUMNS = frozenset({"method", "headers", "body", "max_attempts"})


def insert_task(db: TestDatabase, url: str, *, in_s: float = 0.0, **columns: Any) -> int:
    """``INSERT INTO tasks`` due ``in_s`` seconds from the database's now."""
    unknown = set(columns) - OPTIONAL_COLUMNS
    assert not unknown, f"not a task column this helper writes: {unknown}"
    names = ["url", "due_at", *columns]
    values = [":url", "TIMESTAMPADD(MICROSECOND, :in_us, UTC_TIMESTAMP(6))"]
    values += [f":{name}" for name in columns]
    sql = f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join(values)})"
    with db.engine.begin() as conn:
        result = conn.execute(text(sql), {"url": url, "in_us": int(in_s * 1e6), **columns})
        return int(result.lastrowid)


def insert_due_now(engine: Engine, url: str, count: int) -> list[int]:
    """``count`` tasks due now, in one multi-row plain-SQL INSERT; their ids."""
    rows = ", ".join(["(:url, UTC_TIMESTAMP(6))"] * count)
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO tasks (url, due_at) VALUES {rows}"), {"url": url})
        ids = conn.execute(text("SELECT id FROM tasks WHERE url = :url"), {"url": url})
        return sorted(ids.scalars())


def count_by_status(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, COUNT(*) FROM tasks GROUP BY status")).all()
    return {status: int(n) for status, n in rows}
