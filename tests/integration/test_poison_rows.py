"""Rows the database holds but a pod cannot deliver: each fails alone, inside the claim.

A claim must never commit a row its pod then cannot handle, and a value
the database refuses is that row's fault, never "database lost".
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import RowMapping, text

from tests.support.databases import TestDatabase
from timer_controller.db.repository import TaskRepository
from timer_controller.domain.task import Status, Transition

LEASE_S = 60.0
MAX_BODY = 1000
INT_MAX = 2**31 - 1  # attempts is an INT


def insert(db: TestDatabase, *, due_at: str = "UTC_TIMESTAMP(6)", **columns: Any) -> int:
    """A row as another system could write it, zero dates allowed (MariaDB's default mode)."""
    names = ["url", "due_at", *columns]
    values = [":url", due_at, *(f":{name}" for name in columns)]
    with db.engine.begin() as conn:
        conn.execute(text("SET SESSION sql_mode = ''"))
        result = conn.execute(
            text(f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join(values)})"),
            {"url": f"http://127.0.0.1:9/{uuid.uuid4().hex}", **columns},
        )
        conn.execute(text("SET SESSION sql_mode = DEFAULT"))
        return int(result.lastrowid)


def fetch(db: TestDatabase, task_id: int) -> RowMapping:
    with db.engine.connect() as conn:
        return (
            conn.execute(
                text("SELECT status, attempts, last_error, owner FROM tasks WHERE id = :id"),
                {"id": task_id},
            )
            .mappings()
            .one()
        )


@pytest.fixture
def repo(db: TestDatabase) -> TaskRepository:
    return TaskRepository(db.engine, max_body_bytes=MAX_BODY)


def claim(repo: TaskRepository) -> list[int]:
    result = repo.claim_due(owner="pod-a", limit=100, lease_s=LEASE_S, lookahead_s=0)
    return [task.id for task in result.tasks]


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"due_at": "'0000-00-00 00:00:00'"}, "due_at is not a valid time"),
        ({"attempts": INT_MAX}, f"attempts is {INT_MAX}, the most its column holds"),
        ({"body": "x" * (MAX_BODY + 1)}, f"body is {MAX_BODY + 1} bytes, more than"),
    ],
    ids=["zero-due-at", "attempts-at-int-max", "body-over-the-limit"],
)
def test_a_poison_row_fails_inside_the_claim_and_the_rest_of_the_batch_is_claimed(
    db: TestDatabase, repo: TaskRepository, columns: dict[str, Any], reason: str
) -> None:
    before = insert(db, due_at="UTC_TIMESTAMP(6) - INTERVAL 2 SECOND")
    poison = insert(db, **columns)
    after = insert(db)

    assert claim(repo) == [before, after]

    row = fetch(db, poison)
    assert row["status"] == "failed"
    assert reason in row["last_error"], row["last_error"]
    assert row["owner"] is None
    for good in (before, after):
        assert fetch(db, good)["status"] == "claimed"
    assert claim(repo) == [], "the poison row came back"


def test_attempts_at_int_max_is_not_incremented_past_the_column(
    db: TestDatabase, repo: TaskRepository
) -> None:
    poison = insert(db, attempts=INT_MAX)
    claim(repo)
    assert fetch(db, poison)["attempts"] == INT_MAX


def test_a_body_at_the_limit_is_loaded_and_one_over_it_never_is(
    db: TestDatabase, repo: TaskRepository
) -> None:
    at_limit = insert(db, body="y" * MAX_BODY)
    over = insert(db, body="z" * (MAX_BODY * 50))

    result = repo.claim_due(owner="pod-a", limit=100, lease_s=LEASE_S, lookahead_s=0)

    assert [(t.id, t.body) for t in result.tasks] == [(at_limit, "y" * MAX_BODY)]
    assert fetch(db, over)["status"] == "failed"


def test_a_hand_inserted_claimed_row_without_a_lease_is_swept(
    db: TestDatabase, repo: TaskRepository
) -> None:
    task_id = insert(db, status="claimed")

    assert repo.sweep_expired_leases(default_max_attempts=3) == 1

    row = fetch(db, task_id)
    assert row["status"] == "waiting"
    assert "claimed with no lease" in row["last_error"]
    assert claim(repo) == [task_id]


def test_a_value_the_database_refuses_fails_that_outcome_alone(
    db: TestDatabase, repo: TaskRepository
) -> None:
    good, bad = insert(db), insert(db)
    claim(repo)
    with db.engine.connect() as conn:
        fired = conn.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
    # last_status_code is a SMALLINT: 99999 is out of its range (error 1264).
    transitions = [
        Transition(good, 1, Status.DONE, fired, status_code=200),
        Transition(bad, 1, Status.DONE, fired, status_code=99999),
    ]

    assert repo.record_outcomes(owner="pod-a", transitions=transitions) == 2

    assert fetch(db, good)["status"] == "done"
    refused = fetch(db, bad)
    assert refused["status"] == "failed"
    assert refused["last_error"].startswith("could not record the outcome: ")
