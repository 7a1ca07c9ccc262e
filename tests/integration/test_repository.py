"""TaskRepository against the real database: claims, outcomes, leases, the CLI's queries.

Rows are inserted the way other systems schedule timers, with plain
``INSERT INTO tasks (url, due_at)``; every "now" is read from the database.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, RowMapping, event, text

from tests.support.databases import TestDatabase
from tests.support.tasks import insert_task as insert_row
from timer_controller.db.models import ERROR_MAX_CHARS
from timer_controller.db.repository import ClaimResult, TaskRepository
from timer_controller.db.setup import make_engine
from timer_controller.db.statements import LEASE_LOSSES_BEFORE_FAILING, UNSENT_LEASE_LOST
from timer_controller.domain.task import Status, Transition

LEASE_S = 60.0
# Far below innodb_lock_wait_timeout (50 s): a claim that waited on a lock would miss it.
NOT_BLOCKED_S = 20.0


# -- helpers -----------------------------------------------------------------


def insert_task(db: TestDatabase, *, due_in_s: float = -1.0, url: str | None = None) -> int:
    """Schedule a timer as another system would: url and due_at only."""
    with db.engine.begin() as conn:
        result = conn.execute(
            text(
                "INSERT INTO tasks (url, due_at) "
                "VALUES (:url, TIMESTAMPADD(MICROSECOND, :us, UTC_TIMESTAMP(6)))"
            ),
            {"url": url or f"http://127.0.0.1:9/{uuid.uuid4().hex}", "us": int(due_in_s * 1e6)},
        )
        return int(result.lastrowid)


def set_row(db: TestDatabase, task_id: int, assignments: str, **params: Any) -> None:
    """``UPDATE tasks SET <assignments> WHERE id = :id`` (what another pod would leave)."""
    with db.engine.begin() as conn:
        conn.execute(
            text(f"UPDATE tasks SET {assignments} WHERE id = :id"), {"id": task_id, **params}
        )


def fetch(db: TestDatabase, task_id: int) -> RowMapping:
    with db.engine.connect() as conn:
        return (
            conn.execute(text("SELECT * FROM tasks WHERE id = :id"), {"id": task_id})
            .mappings()
            .one()
        )


def sql_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        now: datetime = conn.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
        return now


def claim(
    repo: TaskRepository, owner: str, *, limit: int = 100, lookahead_s: float = 0.0
) -> ClaimResult:
    return repo.claim_due(owner=owner, limit=limit, lease_s=LEASE_S, lookahead_s=lookahead_s)


def claimed_ids(result: ClaimResult) -> list[int]:
    return [task.id for task in result.tasks]


@contextmanager
def counting_statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the engine sends while the block runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip().split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def repo(db: TestDatabase) -> TaskRepository:
    return TaskRepository(db.engine)


@contextmanager
def frozen_db_clock(db: TestDatabase, at: datetime) -> Iterator[Engine]:
    """An engine whose sessions see UTC_TIMESTAMP() frozen at ``at``: a skewed DB clock."""
    engine = make_engine(db.url, pool_size=1)
    epoch_us = (at - datetime(1970, 1, 1)) // timedelta(microseconds=1)

    def freeze(dbapi_conn: Any, record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"SET timestamp = {epoch_us // 10**6}.{epoch_us % 10**6:06d}")
        cursor.close()

    event.listen(engine, "connect", freeze)
    try:
        yield engine
    finally:
        engine.dispose()


# -- claiming --------------------------------------------------------------------


def test_two_concurrent_claimers_get_disjoint_rows_and_together_all_due_rows(
    db: TestDatabase,
) -> None:
    pods = [make_engine(db.url, pool_size=2), make_engine(db.url, pool_size=2)]
    repos = [TaskRepository(engine) for engine in pods]
    try:
        for round_no in range(6):
            due = {insert_task(db, due_in_s=-1.0 - i / 1000) for i in range(40)}
            later = insert_task(db, due_in_s=3600)
            barrier = threading.Barrier(2)

            def claimer(
                index: int, round_no: int = round_no, barrier: Any = barrier
            ) -> ClaimResult:
                barrier.wait(timeout=30)
                # Each asks for more than half: without SKIP LOCKED both
                # would take the same oldest rows.
                return claim(repos[index], f"pod-{index}-r{round_no}", limit=25)

            with ThreadPoolExecutor(2) as pool:
                first, second = pool.map(claimer, [0, 1])
            a, b = set(claimed_ids(first)), set(claimed_ids(second))
            assert a.isdisjoint(b), f"round {round_no}: both claimed {sorted(a & b)}"
            assert a | b == due, f"round {round_no}: unclaimed {sorted(due - (a | b))}"
            assert len(claimed_ids(first)) == len(a)
            assert len(claimed_ids(second)) == len(b)
            for index, ids in enumerate((a, b)):
                for task_id in ids:
                    row = fetch(db, task_id)
                    assert row["status"] == "claimed"
                    assert row["owner"] == f"pod-{index}-r{round_no}"
                    assert row["attempts"] == 1
            assert fetch(db, later)["status"] == "waiting"
    finally:
        for engine in pods:
            engine.dispose()


def test_claim_skips_rows_locked_by_another_transaction_instead_of_waiting(
    db: TestDatabase, repo: TaskRepository
) -> None:
    locked = insert_task(db, due_in_s=-10)
    free = [insert_task(db, due_in_s=-5), insert_task(db, due_in_s=-4)]
    with db.engine.connect() as other_pod:
        other_pod.execute(text("SELECT id FROM tasks WHERE id = :id FOR UPDATE"), {"id": locked})
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(claim, repo, "me").result(timeout=NOT_BLOCKED_S)
        other_pod.rollback()
    assert claimed_ids(result) == free
    assert fetch(db, locked)["status"] == "waiting"


def test_claim_takes_only_due_waiting_rows_oldest_first_up_to_the_limit(
    db: TestDatabase, repo: TaskRepository
) -> None:
    oldest, older, old, recent = (insert_task(db, due_in_s=s) for s in (-40, -30, -20, -5))
    # Same due_at as `old`: the id breaks the tie.
    twin = insert_task(db, due_in_s=0)
    set_row(
        db, twin, "due_at = (SELECT due_at FROM (SELECT due_at FROM tasks WHERE id = :o) t)", o=old
    )
    for status in ("done", "failed", "claimed", "cancelled"):
        set_row(db, insert_task(db, due_in_s=-100), "status = :s", s=status)
    future = insert_task(db, due_in_s=30)

    first = claim(repo, "me", limit=3)
    assert claimed_ids(first) == [oldest, older, old]
    second = claim(repo, "me", limit=10)
    assert claimed_ids(second) == [twin, recent]
    third = claim(repo, "me", limit=10)
    assert third.tasks == []
    assert third.db_now is None
    assert fetch(db, future)["status"] == "waiting"


def test_claim_writes_owner_lease_status_and_counts_the_attempt(
    db: TestDatabase, repo: TaskRepository
) -> None:
    task_id = insert_task(db, due_in_s=-2, url="http://127.0.0.1:9/hook")
    # A retried task (two attempts already) with a per-task request.
    set_row(
        db,
        task_id,
        "attempts = 2, max_attempts = 5, method = 'PUT', headers = :h, body = 'x'",
        h='{"K": "V"}',
    )
    before = sql_now(db.engine)
    result = repo.claim_due(owner="pod-a/1", limit=10, lease_s=45.0, lookahead_s=0.0)
    after = sql_now(db.engine)

    (task,) = result.tasks
    row = fetch(db, task_id)
    assert row["status"] == "claimed"
    assert row["owner"] == "pod-a/1"
    assert row["attempts"] == 3
    assert task.attempt == 3
    assert (
        before + timedelta(seconds=45) <= row["lease_expires_at"] <= after + timedelta(seconds=45)
    )
    assert result.db_now is not None
    assert result.db_now + timedelta(seconds=45) <= row["lease_expires_at"]
    assert (task.url, task.due_at, task.max_attempts) == (
        "http://127.0.0.1:9/hook",
        row["due_at"],
        5,
    )
    assert (task.method, task.headers, task.body) == ("PUT", '{"K": "V"}', "x")
    assert task.delay_s == 0.0  # already due


def test_a_task_due_beyond_the_lookahead_is_not_claimed(
    db: TestDatabase, repo: TaskRepository
) -> None:
    task_id = insert_task(db, due_in_s=10)
    assert claim(repo, "me", lookahead_s=0.5).tasks == []
    assert fetch(db, task_id)["status"] == "waiting"
    # The same task inside a wider window is claimed, with its wait ahead of it.
    (task,) = claim(repo, "me", lookahead_s=11).tasks
    assert task.id == task_id
    assert 9.0 < task.delay_s <= 10.0


def test_a_task_due_within_the_lookahead_is_claimed_with_its_delay_and_a_lease_covering_it(
    db: TestDatabase, repo: TaskRepository
) -> None:
    task_id = insert_task(db, due_in_s=0.2)
    result = repo.claim_due(owner="me", limit=10, lease_s=LEASE_S, lookahead_s=0.5)

    (task,) = result.tasks
    row = fetch(db, task_id)
    assert result.db_now is not None
    # created_at and due_at came from one statement's clock: due_at - created_at is 0.2 s.
    elapsed_s = (result.db_now - row["created_at"]).total_seconds()
    assert task.delay_s == pytest.approx(max(0.0, 0.2 - elapsed_s), abs=1e-6)
    assert 0.0 <= task.delay_s <= 0.2
    # From the claim, covering the wait: the holder renews it (runtime/leases.py).
    assert row["lease_expires_at"] >= result.db_now + timedelta(seconds=LEASE_S)
    assert row["lease_expires_at"] > row["due_at"]


def test_now_is_the_database_clock(db: TestDatabase, repo: TaskRepository) -> None:
    insert_task(db, due_in_s=-1)
    before = sql_now(db.engine)
    result = claim(repo, "me")
    after = sql_now(db.engine)
    assert result.db_now is not None
    assert before <= result.db_now <= after

    before = sql_now(db.engine)
    assert before <= repo.db_now() <= sql_now(db.engine)


def test_claims_follow_a_skewed_database_clock_not_the_pods(db: TestDatabase) -> None:
    in_half_an_hour = insert_task(db, due_in_s=1800)
    half_an_hour_ago = insert_task(db, due_in_s=-1800)
    real_now = sql_now(db.engine)

    # The database's clock two hours behind: nothing is due by it, whatever the pod thinks.
    with frozen_db_clock(db, real_now - timedelta(hours=2)) as behind:
        slow = TaskRepository(behind)
        assert slow.db_now() == real_now - timedelta(hours=2)
        assert claim(slow, "slow-db").tasks == []
        assert slow.count_backlog() == 0

    # Two hours ahead: both are due by the database, though one is not by the pod's clock.
    with frozen_db_clock(db, real_now + timedelta(hours=2)) as ahead:
        fast = TaskRepository(ahead)
        assert fast.count_backlog() == 2
        result = claim(fast, "fast-db")
        assert claimed_ids(result) == [half_an_hour_ago, in_half_an_hour]
        assert result.db_now == real_now + timedelta(hours=2)
        lease = fetch(db, in_half_an_hour)["lease_expires_at"]
        assert lease == real_now + timedelta(hours=2, seconds=LEASE_S)


# -- recording outcomes ---------------------------------------------------------


def test_record_outcomes_writes_every_kind_with_one_update_each_in_one_transaction(
    db: TestDatabase, repo: TaskRepository
) -> None:
    ids = [insert_task(db, due_in_s=-10 + i) for i in range(6)]
    claim(repo, "pod-a")
    done_a, done_b, gone, refused, retry_soon, retry_later = ids
    fired = [sql_now(db.engine) - timedelta(milliseconds=300 - i) for i in range(6)]
    fired[1] = fired[0]  # equal values take the single-literal path, distinct ones a CASE
    db_now = sql_now(db.engine)
    long_error = "connection refused: " + "x" * 2000
    outcomes = [
        Transition(done_a, 1, Status.DONE, fired[0], status_code=200),
        Transition(done_b, 1, Status.DONE, fired[1], status_code=200),
        Transition(gone, 1, Status.FAILED, fired[2], status_code=410, error="HTTP 410"),
        Transition(refused, 1, Status.FAILED, fired[3], error=long_error),
        Transition(
            retry_soon,
            1,
            Status.WAITING,
            fired[4],
            status_code=503,
            error="HTTP 503",
            next_due_at=db_now - timedelta(seconds=1),
        ),
        Transition(
            retry_later,
            1,
            Status.WAITING,
            fired[5],
            error="timeout after 10s",
            next_due_at=db_now + timedelta(hours=1, microseconds=123),
        ),
    ]
    commits: list[object] = []

    def on_commit(conn: object) -> None:
        commits.append(conn)

    event.listen(db.engine, "commit", on_commit)
    try:
        with counting_statements(db.engine) as statements:
            written = repo.record_outcomes(owner="pod-a", transitions=outcomes)
    finally:
        event.remove(db.engine, "commit", on_commit)
    after = sql_now(db.engine)

    assert written == 6
    assert statements.count("UPDATE") == 3, statements
    assert len(commits) == 1
    rows = {task_id: fetch(db, task_id) for task_id in ids}
    for i, task_id in enumerate(ids):
        row = rows[task_id]
        assert row["owner"] is None, row
        assert row["lease_expires_at"] is None, row
        assert row["fired_at"] == fired[i]
        assert row["attempts"] == 1
    for task_id in (done_a, done_b):
        assert rows[task_id]["status"] == "done"
        assert rows[task_id]["last_status_code"] == 200
        assert rows[task_id]["last_error"] is None
        assert db_now <= rows[task_id]["finished_at"] <= after
    assert rows[gone]["status"] == "failed"
    assert (rows[gone]["last_status_code"], rows[gone]["last_error"]) == (410, "HTTP 410")
    assert rows[refused]["status"] == "failed"
    assert rows[refused]["last_status_code"] is None
    assert rows[refused]["last_error"] == long_error[:ERROR_MAX_CHARS]
    assert len(rows[refused]["last_error"]) == ERROR_MAX_CHARS
    for task_id in (gone, refused):
        assert db_now <= rows[task_id]["finished_at"] <= after
    for task_id in (retry_soon, retry_later):
        assert rows[task_id]["status"] == "waiting"
        assert rows[task_id]["finished_at"] is None
    assert rows[retry_soon]["due_at"] == db_now - timedelta(seconds=1)
    assert (rows[retry_soon]["last_status_code"], rows[retry_soon]["last_error"]) == (
        503,
        "HTTP 503",
    )
    assert rows[retry_later]["due_at"] == db_now + timedelta(hours=1, microseconds=123)
    assert rows[retry_later]["last_error"] == "timeout after 10s"

    # The retry due now is claimable again, as attempt 2; the later one is not yet.
    (again,) = claim(repo, "pod-b").tasks
    assert (again.id, again.attempt) == (retry_soon, 2)


@pytest.mark.parametrize("shared", [False, True], ids=["per-row", "one-value"])
def test_error_texts_are_recorded_verbatim_whatever_they_hold(
    db: TestDatabase, repo: TaskRepository, shared: bool
) -> None:
    """Outcome writes are SQL text with the errors as parameters: quotes, percent
    signs, placeholders and backslashes in a receiver's words reach the row as sent."""
    texts = ["it's 100% %s done", 'a "quoted" \\ back\\slash; --', "%(name)s ünïcode 🎉", "%%"]
    if shared:
        texts = [texts[0]] * len(texts)
    ids = [insert_task(db, due_in_s=-10 + i) for i in range(len(texts))]
    claim(repo, "pod-a")
    fired = sql_now(db.engine)
    retry_at = fired + timedelta(minutes=5)
    outcomes = [
        Transition(task_id, 1, Status.WAITING, fired, error=error, next_due_at=retry_at)
        for task_id, error in zip(ids, texts, strict=True)
    ]

    assert repo.record_outcomes(owner="pod-a", transitions=outcomes) == len(ids)

    for task_id, error in zip(ids, texts, strict=True):
        row = fetch(db, task_id)
        assert (row["status"], row["last_error"], row["due_at"]) == ("waiting", error, retry_at)


def test_an_outcome_is_recorded_against_the_attempt_that_was_sent(
    db: TestDatabase, repo: TaskRepository
) -> None:
    """Without an owner (any controller may record, as in amqp mode), the attempt
    number alone keeps a superseded attempt's late outcome off the newer claim."""
    task_id = insert_task(db, due_in_s=-5)
    claim(repo, "pod-a")
    set_row(db, task_id, "lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
    assert repo.sweep_expired_leases(default_max_attempts=3) == 1
    (again,) = claim(repo, "pod-b").tasks
    assert again.attempt == 2
    fired = sql_now(db.engine)

    stale = Transition(task_id, 1, Status.FAILED, fired, status_code=500, error="HTTP 500")
    assert repo.record_outcomes(owner=None, transitions=[stale]) == 0
    assert fetch(db, task_id)["status"] == "claimed"

    current = Transition(task_id, 2, Status.DONE, fired, status_code=200)
    assert repo.record_outcomes(owner=None, transitions=[current]) == 1
    assert (fetch(db, task_id)["status"], fetch(db, task_id)["last_status_code"]) == ("done", 200)


def test_record_outcomes_never_overwrites_a_task_whose_lease_went_to_another_pod(
    db: TestDatabase, repo: TaskRepository
) -> None:
    taken_over, swept_back, finished_elsewhere, still_mine = (
        insert_task(db, due_in_s=-10 + i) for i in range(4)
    )
    claim(repo, "pod-a")
    # pod-a's lease ran out; the sweep returned these, pod-b claimed one and finished another.
    for task_id in (taken_over, swept_back, finished_elsewhere):
        set_row(db, task_id, "lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")
    assert repo.sweep_expired_leases(default_max_attempts=3) == 3
    set_row(db, swept_back, "due_at = UTC_TIMESTAMP(6) + INTERVAL 1 HOUR")
    assert set(claimed_ids(claim(repo, "pod-b"))) == {taken_over, finished_elsewhere}
    fired = sql_now(db.engine)
    assert (
        repo.record_outcomes(
            owner="pod-b",
            transitions=[Transition(finished_elsewhere, 2, Status.DONE, fired, status_code=201)],
        )
        == 1
    )

    late = [
        Transition(task_id, 1, Status.FAILED, fired, status_code=500, error="HTTP 500")
        for task_id in (taken_over, swept_back, finished_elsewhere)
    ] + [Transition(still_mine, 1, Status.DONE, fired, status_code=200)]
    assert repo.record_outcomes(owner="pod-a", transitions=late) == 1

    assert fetch(db, taken_over)["status"] == "claimed"
    assert fetch(db, taken_over)["owner"] == "pod-b"
    for task_id in (taken_over, swept_back):
        assert fetch(db, task_id)["last_status_code"] is None
        assert "lease" in fetch(db, task_id)["last_error"]  # the sweep's note, not pod-a's
    assert fetch(db, swept_back)["status"] == "waiting"
    assert fetch(db, finished_elsewhere)["status"] == "done"
    assert fetch(db, finished_elsewhere)["last_status_code"] == 201
    assert fetch(db, still_mine)["status"] == "done"


# -- releasing and sweeping -----------------------------------------------------


def test_release_returns_unfired_claims_to_waiting_for_their_owner_only(
    db: TestDatabase, repo: TaskRepository
) -> None:
    first, second, kept = (insert_task(db, due_in_s=-5 + i) for i in range(3))
    set_row(db, second, "attempts = 4")  # an earlier attempt failed and was retried
    claim(repo, "pod-a")
    assert fetch(db, second)["attempts"] == 5

    assert repo.release(owner="pod-b", task_ids=[first, second]) == 0
    assert fetch(db, first)["owner"] == "pod-a"
    assert repo.release(owner="pod-a", task_ids=[]) == 0
    assert repo.release(owner="pod-a", task_ids=[first, second]) == 2

    for task_id, attempts in ((first, 0), (second, 4)):
        row = fetch(db, task_id)
        assert row["status"] == "waiting"
        assert row["owner"] is None
        assert row["lease_expires_at"] is None
        assert row["attempts"] == attempts
    assert fetch(db, kept)["status"] == "claimed"
    # Handed back: the next claim takes them at once, oldest first.
    assert claimed_ids(claim(repo, "pod-b")) == [first, second]


def test_release_never_takes_attempts_below_zero_nor_touches_finished_rows(
    db: TestDatabase, repo: TaskRepository
) -> None:
    odd = insert_task(db)
    set_row(db, odd, "status = 'claimed', owner = 'pod-a', attempts = 0")
    finished = insert_task(db)
    set_row(db, finished, "status = 'done', owner = 'pod-a', attempts = 1")

    assert repo.release(owner="pod-a", task_ids=[odd, finished]) == 1
    assert fetch(db, odd)["attempts"] == 0
    assert fetch(db, odd)["status"] == "waiting"
    assert fetch(db, finished)["status"] == "done"
    assert fetch(db, finished)["attempts"] == 1


def test_sweep_returns_expired_claims_to_waiting_and_leaves_live_ones(
    db: TestDatabase, repo: TaskRepository
) -> None:
    expired, live = insert_task(db, due_in_s=-3), insert_task(db, due_in_s=-2)
    claim(repo, "dead-pod")
    set_row(db, expired, "lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")

    assert repo.sweep_expired_leases(default_max_attempts=3) == 1

    row = fetch(db, expired)
    assert row["status"] == "waiting"
    assert row["owner"] is None
    assert row["lease_expires_at"] is None
    assert "lease" in row["last_error"]
    assert row["finished_at"] is None
    assert fetch(db, live)["status"] == "claimed"
    assert fetch(db, live)["owner"] == "dead-pod"
    # Any pod now fires it again: delivery is at least once.
    (again,) = claim(repo, "other-pod").tasks
    assert (again.id, again.attempt) == (expired, 2)


def test_sweep_fails_a_task_that_keeps_losing_its_pods(
    db: TestDatabase, repo: TaskRepository
) -> None:
    default = 3
    hopeless = default + LEASE_LOSSES_BEFORE_FAILING
    cases = {
        # (attempts, per-task max_attempts) -> expected status after the sweep
        (hopeless, None): "failed",
        (hopeless - 1, None): "waiting",
        (1 + LEASE_LOSSES_BEFORE_FAILING, 1): "failed",
        (hopeless, 10): "waiting",
        (10 + LEASE_LOSSES_BEFORE_FAILING, 10): "failed",
    }
    ids = {}
    for (attempts, max_attempts), _ in cases.items():
        task_id = insert_task(db)
        set_row(
            db,
            task_id,
            "status = 'claimed', owner = 'crashing-pod', attempts = :a, max_attempts = :m, "
            "lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND",
            a=attempts,
            m=max_attempts,
        )
        ids[(attempts, max_attempts)] = task_id
    before = sql_now(db.engine)

    assert repo.sweep_expired_leases(default_max_attempts=default) == len(cases)

    for key, expected in cases.items():
        row = fetch(db, ids[key])
        assert row["status"] == expected, (key, row)
        assert row["owner"] is None
        assert row["lease_expires_at"] is None
        assert row["attempts"] == key[0]
        assert "lease" in row["last_error"]
        if expected == "failed":
            assert row["finished_at"] >= before
        else:
            assert row["finished_at"] is None


def test_sweep_respects_its_limit(db: TestDatabase, repo: TaskRepository) -> None:
    for _ in range(3):
        task_id = insert_task(db)
        set_row(
            db,
            task_id,
            "status = 'claimed', owner = 'x', "
            "lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND",
        )
    assert repo.sweep_expired_leases(default_max_attempts=3, limit=2) == 2
    assert repo.sweep_expired_leases(default_max_attempts=3, limit=2) == 1
    assert repo.sweep_expired_leases(default_max_attempts=3, limit=2) == 0


# -- the operator's queries -----------------------------------------------------


def test_cancel_stops_a_waiting_task_for_good(db: TestDatabase, repo: TaskRepository) -> None:
    task_id = insert_task(db, due_in_s=-1)
    before = sql_now(db.engine)
    assert repo.cancel(task_id) is True
    row = fetch(db, task_id)
    assert row["status"] == "cancelled"
    assert row["finished_at"] >= before
    assert claim(repo, "me").tasks == []
    assert repo.count_backlog() == 0
    assert repo.cancel(task_id) is False
    assert fetch(db, task_id)["status"] == "cancelled"


@pytest.mark.parametrize("status", ["done", "failed", "claimed"])
def test_cancel_refuses_a_task_that_is_not_waiting(
    db: TestDatabase, repo: TaskRepository, status: str
) -> None:
    task_id = insert_task(db)
    set_row(db, task_id, "status = :s", s=status)
    assert repo.cancel(task_id) is False
    assert fetch(db, task_id)["status"] == status


def test_cancel_of_a_missing_task_is_false(repo: TaskRepository) -> None:
    assert repo.cancel(987654321) is False


def test_schedule_with_a_delay_counts_from_the_database_clock(
    db: TestDatabase, repo: TaskRepository
) -> None:
    before = sql_now(db.engine)
    task_id = repo.schedule(url="http://127.0.0.1:9/in-30s", delay_s=30)
    after = sql_now(db.engine)

    row = fetch(db, task_id)
    assert before + timedelta(seconds=30) <= row["due_at"] <= after + timedelta(seconds=30)
    assert row["due_at"] == row["created_at"] + timedelta(seconds=30)
    assert (row["status"], row["attempts"], row["url"]) == (
        "waiting",
        0,
        "http://127.0.0.1:9/in-30s",
    )
    assert (row["method"], row["headers"], row["body"], row["max_attempts"]) == (None,) * 4


def test_schedule_at_an_explicit_time_stores_the_request(
    db: TestDatabase, repo: TaskRepository
) -> None:
    due = datetime(2030, 1, 1, 12, 30, 0, 123456)
    task_id = repo.schedule(
        url="http://127.0.0.1:9/at",
        due_at=due,
        method="PATCH",
        headers='{"A": "B"}',
        body="payload",
        max_attempts=7,
    )
    row = fetch(db, task_id)
    assert row["due_at"] == due
    assert (row["method"], row["headers"], row["body"], row["max_attempts"]) == (
        "PATCH",
        '{"A": "B"}',
        "payload",
        7,
    )
    assert claim(repo, "me").tasks == []


def test_get_returns_a_view_of_the_row_or_none(db: TestDatabase, repo: TaskRepository) -> None:
    task_id = insert_task(db, due_in_s=-1, url="http://127.0.0.1:9/view")
    claim(repo, "pod-a")
    fired = sql_now(db.engine)
    repo.record_outcomes(
        owner="pod-a",
        transitions=[
            Transition(task_id, 1, Status.FAILED, fired, status_code=404, error="HTTP 404")
        ],
    )
    view = repo.get(task_id)
    row = fetch(db, task_id)
    assert view is not None
    assert (view.id, view.url, view.method, view.status) == (task_id, row["url"], None, "failed")
    assert (view.attempts, view.max_attempts, view.owner) == (1, None, None)
    assert (view.last_status_code, view.last_error) == (404, "HTTP 404")
    assert (view.due_at, view.created_at, view.fired_at, view.finished_at) == (
        row["due_at"],
        row["created_at"],
        fired,
        row["finished_at"],
    )
    assert repo.get(task_id + 1000) is None


def test_stats_counts_by_status_with_the_oldest_due_and_recent_throughput(
    db: TestDatabase, repo: TaskRepository
) -> None:
    oldest = insert_task(db, due_in_s=-120)
    insert_task(db, due_in_s=-60)
    insert_task(db, due_in_s=600)
    set_row(db, insert_task(db, due_in_s=-300), "status = 'claimed', owner = 'x'")
    recent = "finished_at = UTC_TIMESTAMP(6) - INTERVAL 5 SECOND"
    for status in ("done", "done", "failed"):
        set_row(db, insert_task(db, due_in_s=-30), f"status = '{status}', {recent}")
    set_row(db, insert_task(db, due_in_s=-30), f"status = 'cancelled', {recent}")
    set_row(
        db,
        insert_task(db, due_in_s=-900),
        "status = 'done', finished_at = UTC_TIMESTAMP(6) - INTERVAL 2 MINUTE",
    )
    before = sql_now(db.engine)
    stats = repo.stats()
    after = sql_now(db.engine)

    assert stats.by_status == {"waiting": 3, "claimed": 1, "done": 3, "failed": 1, "cancelled": 1}
    assert stats.oldest_due_waiting == fetch(db, oldest)["due_at"]
    assert stats.finished_last_minute == 3  # done and failed within the minute
    assert before <= stats.db_now <= after


def test_stats_of_an_empty_table(repo: TaskRepository) -> None:
    stats = repo.stats()
    assert stats.by_status == {}
    assert stats.oldest_due_waiting is None
    assert stats.finished_last_minute == 0


def test_count_backlog_counts_only_due_unclaimed_tasks(
    db: TestDatabase, repo: TaskRepository
) -> None:
    assert repo.count_backlog() == 0
    for _ in range(3):
        insert_task(db, due_in_s=-5)
    insert_task(db, due_in_s=600)
    for status in ("claimed", "done", "failed", "cancelled"):
        set_row(db, insert_task(db, due_in_s=-5), "status = :s", s=status)
    assert repo.count_backlog() == 3
    claim(repo, "me", limit=1)
    assert repo.count_backlog() == 2


def test_a_lease_that_ended_before_the_due_time_returns_without_spending_the_attempt(
    db: TestDatabase, repo: TaskRepository
) -> None:
    # Claimed ahead, its pod gone before the due time: certainly never sent.
    unsent = insert_task(db, due_in_s=30)
    maybe_sent = insert_task(db, due_in_s=-30)
    for task_id in (unsent, maybe_sent):
        set_row(
            db,
            task_id,
            "status = 'claimed', owner = 'gone', attempts = 2, "
            "lease_expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND",
        )

    assert repo.sweep_expired_leases(default_max_attempts=3) == 2

    first, second = fetch(db, unsent), fetch(db, maybe_sent)
    assert (first["status"], first["attempts"], first["owner"]) == ("waiting", 1, None)
    assert first["last_error"] == UNSENT_LEASE_LOST
    assert (second["status"], second["attempts"]) == ("waiting", 2)
    assert second["last_error"] == "lease expired: the pod holding it stopped; retrying"


def test_renewing_extends_only_this_holders_claims(db: TestDatabase, repo: TaskRepository) -> None:
    mine, theirs, done = (insert_task(db, due_in_s=-1) for _ in range(3))
    claim(repo, "me")  # all three
    set_row(db, theirs, "owner = 'other'")
    set_row(db, done, "status = 'done', owner = NULL, lease_expires_at = NULL")
    before = sql_now(db.engine)

    assert repo.renew_leases(owner="me", task_ids=[mine, theirs, done], lease_s=600) == 1

    assert fetch(db, mine)["lease_expires_at"] >= before + timedelta(seconds=600)
    assert fetch(db, theirs)["lease_expires_at"] < before + timedelta(seconds=600)
    assert fetch(db, done)["lease_expires_at"] is None


def test_a_claim_skips_the_destinations_it_is_told_to(
    db: TestDatabase, repo: TaskRepository
) -> None:
    """Through the compiled claim text, for several sets of prefixes in a row."""
    full = {insert_task(db, url=f"http://full.test:81/t/{n}") for n in range(3)}
    other = {insert_task(db, url=f"http://other.test/t/{n}") for n in range(3)}
    healthy = {insert_task(db, url=f"https://ok.test/t/{n}") for n in range(3)}

    def take(limit: int, *prefixes: str) -> set[int]:
        result = repo.claim_due(
            owner="pod-a", limit=limit, lease_s=LEASE_S, lookahead_s=0.0, skip_prefixes=prefixes
        )
        return set(claimed_ids(result))

    first = take(2, "http://full.test:81", "http://other.test")
    second = take(3, "http://full.test:81")
    third = take(100, "http://full.test:81", "http://other.test")
    last = take(100)

    assert len(first) == 2
    assert first <= healthy
    assert len(second) == 3
    assert second <= other | healthy
    assert third <= healthy
    # The skipped destination waited, and was claimed as soon as it was not skipped.
    assert last == full | (other | healthy) - (first | second | third)


def test_a_claim_that_skips_destinations_reads_the_claimed_rows_whole(db: TestDatabase) -> None:
    """It reads ids past the busy destination's rows, then locks and reads only those."""
    repo = TaskRepository(db.engine, max_body_bytes=100)
    for n in range(5):  # the busy destination's rows, bodies that would cost to read
        insert_row(db, f"http://busy.test/t/{n}", body="x" * 1000)
    whole = insert_row(
        db, "https://ok.test/a", method="PUT", headers='{"X-A": "1"}', body="hello", max_attempts=4
    )
    oversized = insert_row(db, "https://ok.test/b", body="y" * 101)

    result = repo.claim_due(
        owner="pod-a",
        limit=10,
        lease_s=LEASE_S,
        lookahead_s=0.0,
        skip_prefixes=["http://busy.test"],
    )

    (task,) = result.tasks
    assert (task.id, task.url, task.method, task.headers, task.body) == (
        whole, "https://ok.test/a", "PUT", '{"X-A": "1"}', "hello"
    )  # fmt: skip
    assert (task.attempt, task.max_attempts) == (1, 4)
    assert fetch(db, whole)["status"] == "claimed"
    # A body over the limit fails its row in the same claim, as without skipping.
    assert fetch(db, oversized)["status"] == "failed"
    with db.engine.connect() as conn:
        busy = conn.execute(
            text("SELECT COUNT(*) FROM tasks WHERE url LIKE 'http://busy.test/%' AND status = :s"),
            {"s": "waiting"},
        )
        assert busy.scalar_one() == 5
