"""Claims that resume where the last full claim ended (``db/prepared.py``, ``ClaimCursor``).

Against the real database: the resumed SELECT must take exactly the rows a
claim from the oldest row would, and a row that turns waiting behind the
resume point must not wait for the backlog to drain.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, bindparam, event, text

from tests.support.databases import TestDatabase
from tests.support.tasks import insert_due_now, insert_task
from timer_controller.db.prepared import RESUME_FOR_S
from timer_controller.db.repository import TaskRepository

URL = "http://127.0.0.1:9/resume"
LEASE_S = 60.0
DEADLINE_S = 60.0


def _claim(repo: TaskRepository, limit: int) -> list[int]:
    result = repo.claim_due(owner="pod-a", limit=limit, lease_s=LEASE_S, lookahead_s=0.0)
    return [task.id for task in result.tasks]


def _waiting_in_claim_order(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id FROM tasks WHERE status = 'waiting' ORDER BY due_at, id")
        )
        return list(rows.scalars())


@contextmanager
def _claim_selects(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "SKIP LOCKED" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_claims_that_resume_take_every_due_row_once_oldest_first(db: TestDatabase) -> None:
    repo = TaskRepository(db.engine)
    for in_s in (-30.0, -20.0, -20.0):
        insert_task(db, URL, in_s=in_s)
    insert_due_now(db.engine, URL, 25)  # one due_at for all: only the id orders them
    insert_task(db, URL, in_s=-1.0)
    expected = _waiting_in_claim_order(db.engine)

    with _claim_selects(db.engine) as selects:
        claimed = [_claim(repo, 10) for _ in range(4)]

    assert [len(c) for c in claimed] == [10, 10, 9, 0]
    assert [i for c in claimed for i in c] == expected
    # The first starts from the oldest row; those after a full claim resume after it.
    assert ["FORCE INDEX" in s for s in selects] == [False, True, True, False]


def test_a_claim_after_rows_were_handed_back_starts_from_the_oldest(db: TestDatabase) -> None:
    repo = TaskRepository(db.engine)
    insert_due_now(db.engine, URL, 30)
    in_order = _waiting_in_claim_order(db.engine)
    first = _claim(repo, 10)
    assert repo.release(owner="pod-a", task_ids=first[:3]) == 3

    second = _claim(repo, 10)

    assert first == in_order[:10]
    assert second == [*in_order[:3], *in_order[10:17]]


def test_a_row_that_turns_waiting_behind_the_resume_point_is_not_left_for_last(
    db: TestDatabase,
) -> None:
    """Inserted by another system, older than where claims resume: claimed within RESUME_FOR_S."""
    repo = TaskRepository(db.engine)
    insert_due_now(db.engine, URL, 10)
    assert len(_claim(repo, 10)) == 10  # full: the next claims resume after its last row
    old = insert_task(db, URL, in_s=-60.0)
    insert_due_now(db.engine, URL + "/newer", 1000)
    inserted_at = time.monotonic()

    deadline = inserted_at + DEADLINE_S
    while old not in _claim(repo, 1):
        assert time.monotonic() < deadline, "the older row was never claimed"
    claimed_after_s = time.monotonic() - inserted_at

    still_waiting = len(_waiting_in_claim_order(db.engine))
    assert still_waiting > 0, (
        f"the older row waited for all 1,000 newer ones ({claimed_after_s:.2f} s; "
        f"RESUME_FOR_S is {RESUME_FOR_S} s)"
    )


def _status(engine: Engine, ids: list[int]) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, status FROM tasks WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
        return {row.id: row.status for row in rows}


def test_a_claim_takes_every_due_row_and_only_ahead_limit_rows_ahead(db: TestDatabase) -> None:
    """One statement claims the due rows and the look-ahead, capped by ``ahead_limit``.

    The rows left over stay waiting, and the next claim (which resumes after
    the last row taken) takes them: none is skipped.
    """
    repo = TaskRepository(db.engine)
    due = [insert_task(db, URL, in_s=-5.0 + i * 0.1) for i in range(3)]
    ahead = [insert_task(db, URL, in_s=20.0 + i) for i in range(5)]

    first = repo.claim_due(
        owner="pod-a", limit=10, lease_s=LEASE_S, lookahead_s=60.0, ahead_limit=2
    )
    assert [t.id for t in first.tasks] == due + ahead[:2]
    assert [t.delay_s > 0 for t in first.tasks] == [False] * 3 + [True] * 2
    assert set(_status(db.engine, ahead[2:]).values()) == {"waiting"}

    second = repo.claim_due(
        owner="pod-a", limit=10, lease_s=LEASE_S, lookahead_s=60.0, ahead_limit=2
    )
    assert [t.id for t in second.tasks] == ahead[2:4]
    none_ahead = repo.claim_due(
        owner="pod-a", limit=10, lease_s=LEASE_S, lookahead_s=60.0, ahead_limit=0
    )
    assert none_ahead.tasks == []
    last = repo.claim_due(owner="pod-a", limit=10, lease_s=LEASE_S, lookahead_s=60.0)
    assert [t.id for t in last.tasks] == ahead[4:]
