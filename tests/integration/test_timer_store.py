"""TimerStore against the real database: creates, keys and their races, batches, pages, changes."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, text

from tests.support.databases import TestDatabase
from tests.support.stores import WAYS, engine_for
from timer_controller.db.setup import make_engine
from timer_controller.db.timers import Created, KeyConflict, NewTimer, TimerStore
from timer_controller.errors import BadData, StorageUnavailable

T = TypeVar("T")
RACE_ROUNDS = 15


@pytest.fixture
def store(db: TestDatabase) -> TimerStore:
    return TimerStore(db.engine)


def url() -> str:
    return f"http://127.0.0.1:9/{uuid.uuid4().hex}"


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


def db_now(db: TestDatabase) -> datetime:
    with db.engine.connect() as conn:
        now: datetime = conn.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
    return now


def count(db: TestDatabase, where: str = "1", **params: Any) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(text(f"SELECT COUNT(*) FROM tasks WHERE {where}"), params).scalar_one()
        )


def sql(db: TestDatabase, statement: str, **params: Any) -> Any:
    with db.engine.begin() as conn:
        return conn.execute(text(statement), params)


# -- single creates ----------------------------------------------------------------


def test_a_delay_is_counted_from_the_database_clock(db: TestDatabase, store: TimerStore) -> None:
    before = db_now(db)

    created = store.create(timer=NewTimer(url=url(), delay_s=90))

    timer = created.timer
    assert created.created
    assert before + timedelta(seconds=90) <= timer.due_at <= db_now(db) + timedelta(seconds=90)
    assert 89 < timer.time_left_s <= 90
    assert (timer.status, timer.attempts, timer.method, timer.max_attempts) == (
        "waiting",
        0,
        None,
        None,
    )
    assert timer.created_at <= db_now(db)


def test_every_column_is_written_and_read_back(store: TimerStore) -> None:
    due = datetime(2030, 1, 2, 3, 4, 5, 678901)
    timer = NewTimer(
        url=url(),
        due_at=due,
        method="PUT",
        headers='{"X-Trace":"1","Authorization":"Bearer s3cret"}',
        body="héllo",
        max_attempts=7,
        idempotency_key=key(),
        idempotency_hash="a" * 64,
    )

    record = store.create(timer=timer).timer

    again = store.get(timer_id=record.id)
    assert again is not None
    assert dataclasses.replace(again, time_left_s=0) == dataclasses.replace(record, time_left_s=0)
    assert (record.url, record.due_at, record.method) == (timer.url, due, "PUT")
    assert record.header_names == ("X-Trace", "Authorization")
    assert record.body_bytes == len("héllo".encode())
    assert (record.max_attempts, record.idempotency_key) == (7, timer.idempotency_key)
    assert record.idempotency_hash == "a" * 64


def test_a_row_written_by_plain_sql_reads_as_a_timer(db: TestDatabase, store: TimerStore) -> None:
    sql(db, "INSERT INTO tasks (url, due_at) VALUES ('http://x.example/', UTC_TIMESTAMP(6))")
    (task_id,) = sql(db, "SELECT MAX(id) FROM tasks").one()
    sql(db, "INSERT INTO tasks (url, due_at, headers) VALUES ('http://y/', UTC_TIMESTAMP(), '[1')")

    record = store.get(timer_id=task_id)

    assert record is not None
    assert (record.header_names, record.body_bytes, record.idempotency_key) == ((), None, None)
    assert record.time_left_s == 0.0
    assert store.get(timer_id=task_id + 1).header_names is None  # type: ignore[union-attr]


def test_get_of_a_missing_timer_is_none(store: TimerStore) -> None:
    assert store.get(timer_id=10**12) is None


def test_the_same_key_and_hash_is_a_replay(db: TestDatabase, store: TimerStore) -> None:
    timer = NewTimer(url=url(), delay_s=60, idempotency_key=key(), idempotency_hash="1" * 64)

    first = store.create(timer=timer)
    second = store.create(timer=dataclasses.replace(timer))

    assert first.created
    assert not second.created
    assert second.timer.id == first.timer.id
    assert count(db, "idempotency_key = :k", k=timer.idempotency_key) == 1


def test_the_same_key_with_another_hash_is_a_conflict(db: TestDatabase, store: TimerStore) -> None:
    k = key()
    first = store.create(
        timer=NewTimer(url=url(), delay_s=60, idempotency_key=k, idempotency_hash="1" * 64)
    )

    with pytest.raises(KeyConflict) as caught:
        store.create(
            timer=NewTimer(url=url(), delay_s=60, idempotency_key=k, idempotency_hash="2" * 64)
        )

    assert caught.value.existing[0].id == first.timer.id
    assert count(db, "idempotency_key = :k", k=k) == 1


def test_keys_are_case_sensitive(store: TimerStore) -> None:
    k = key()
    lower = store.create(
        timer=NewTimer(url=url(), delay_s=1, idempotency_key=k.lower(), idempotency_hash="1" * 64)
    )
    upper = store.create(
        timer=NewTimer(url=url(), delay_s=1, idempotency_key=k.upper(), idempotency_hash="1" * 64)
    )

    assert lower.created
    assert upper.created
    assert lower.timer.id != upper.timer.id


def test_sql_writers_get_one_row_per_key(db: TestDatabase, store: TimerStore) -> None:
    k = key()
    for _ in range(2):
        sql(
            db,
            "INSERT INTO tasks (url, due_at, idempotency_key) "
            "VALUES ('http://a/', UTC_TIMESTAMP(6), :k) ON DUPLICATE KEY UPDATE id = id",
            k=k,
        )
        sql(
            db,
            "INSERT IGNORE INTO tasks (url, due_at, idempotency_key) "
            "VALUES ('http://b/', UTC_TIMESTAMP(6), :k)",
            k=k,
        )

    assert count(db, "idempotency_key = :k", k=k) == 1
    # Written without a request hash: an api create with that key is not its replay.
    with pytest.raises(KeyConflict):
        store.create(
            timer=NewTimer(url=url(), delay_s=1, idempotency_key=k, idempotency_hash="1" * 64)
        )


def test_many_timers_may_have_no_key(db: TestDatabase, store: TimerStore) -> None:
    for _ in range(3):
        store.create(timer=NewTimer(url=url(), delay_s=1))

    assert count(db, "idempotency_key IS NULL") == 3


# -- concurrent creates with one key ---------------------------------------------------


def at_once(work: Callable[[], T], *, threads: int = 2) -> list[T | BaseException]:
    """Run ``work`` on ``threads`` threads released together; results or exceptions."""
    start = threading.Barrier(threads)

    def run() -> T | BaseException:
        start.wait(timeout=10)
        try:
            return work()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: run(), range(threads)))


def test_two_concurrent_creates_with_one_key_make_one_timer(
    db: TestDatabase, store: TimerStore
) -> None:
    for _ in range(RACE_ROUNDS):
        timer = NewTimer(url=url(), delay_s=60, idempotency_key=key(), idempotency_hash="1" * 64)

        results = at_once(lambda: store.create(timer=timer))  # noqa: B023

        assert all(isinstance(r, Created) for r in results), results
        created = [r for r in results if isinstance(r, Created)]
        assert sorted(c.created for c in created) == [False, True]
        assert len({c.timer.id for c in created}) == 1
        assert count(db, "idempotency_key = :k", k=timer.idempotency_key) == 1


def test_concurrent_creates_of_different_requests_with_one_key_make_one_timer(
    db: TestDatabase, store: TimerStore
) -> None:
    for _ in range(RACE_ROUNDS):
        k = key()
        hashes = iter(["1" * 64, "2" * 64])
        lock = threading.Lock()

        def create(
            k: str = k, hashes: Iterator[str] = hashes, lock: threading.Lock = lock
        ) -> Created:
            with lock:
                fingerprint = next(hashes)
            return store.create(
                timer=NewTimer(
                    url=url(), delay_s=60, idempotency_key=k, idempotency_hash=fingerprint
                )
            )

        results = at_once(create)

        assert sorted(type(r).__name__ for r in results) == ["Created", "KeyConflict"]
        assert count(db, "idempotency_key = :k", k=k) == 1


def test_concurrent_batches_sharing_a_key_make_one_timer_for_it(
    db: TestDatabase, store: TimerStore
) -> None:
    for _ in range(5):
        shared = NewTimer(url=url(), delay_s=60, idempotency_key=key(), idempotency_hash="1" * 64)

        def batch(shared: NewTimer = shared) -> list[Created]:
            return store.create_many(timers=[NewTimer(url=url(), delay_s=1), shared])

        results = at_once(batch)

        assert all(isinstance(r, list) for r in results), results
        ids = {r[1].timer.id for r in results if isinstance(r, list)}
        assert len(ids) == 1
        assert count(db, "idempotency_key = :k", k=shared.idempotency_key) == 1


# -- batches ------------------------------------------------------------------------


def test_a_batch_of_1000_keeps_request_order(db: TestDatabase, store: TimerStore) -> None:
    timers = [NewTimer(url=f"http://127.0.0.1:9/{i}", delay_s=i) for i in range(1000)]

    created = store.create_many(timers=timers)

    assert [c.timer.url for c in created] == [t.url for t in timers]
    ids = [c.timer.id for c in created]
    assert ids == sorted(ids)
    assert len(set(ids)) == 1000
    assert all(c.created for c in created)
    assert count(db) == 1000
    for c, t in zip(created, timers, strict=True):
        assert store.get(timer_id=c.timer.id).url == t.url  # type: ignore[union-attr]


def test_a_batch_bigger_than_one_statement_is_split_and_still_in_order(
    db: TestDatabase, store: TimerStore
) -> None:
    body = "x" * 200_000  # 30 of them: three multi-row INSERTs
    timers = [NewTimer(url=f"http://127.0.0.1:9/{i}", delay_s=1, body=body) for i in range(30)]

    created = store.create_many(timers=timers)

    assert [c.timer.url for c in created] == [t.url for t in timers]
    assert all(c.timer.body_bytes == len(body) for c in created)
    assert count(db) == 30


def test_ids_follow_the_servers_auto_increment_step(db: TestDatabase) -> None:
    engine = make_engine(db.url, pool_size=1)
    try:

        @event.listens_for(engine, "connect")
        def step(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION auto_increment_increment = 3")
            cursor.close()

        timers = [NewTimer(url=f"http://127.0.0.1:9/{i}", delay_s=1) for i in range(10)]
        created = TimerStore(engine).create_many(timers=timers)
    finally:
        engine.dispose()

    ids = [c.timer.id for c in created]
    assert [c.timer.url for c in created] == [t.url for t in timers]
    assert [b - a for a, b in itertools.pairwise(ids)] == [3] * 9


def test_a_batch_replays_taken_keys_and_inserts_the_rest(
    db: TestDatabase, store: TimerStore
) -> None:
    earlier = store.create(
        timer=NewTimer(url=url(), delay_s=5, idempotency_key="b-1", idempotency_hash="1" * 64)
    )
    timers = [
        NewTimer(url=url(), delay_s=5, idempotency_key="b-0", idempotency_hash="0" * 64),
        NewTimer(url=url(), delay_s=5, idempotency_key="b-1", idempotency_hash="1" * 64),
        NewTimer(url=url(), delay_s=5),
    ]

    created = store.create_many(timers=timers)

    assert [c.created for c in created] == [True, False, True]
    assert created[1].timer.id == earlier.timer.id
    assert count(db) == 3
    again = store.create_many(timers=timers[:2])
    assert [c.timer.id for c in again] == [c.timer.id for c in created[:2]]
    assert not any(c.created for c in again)


def test_a_batch_with_a_reused_key_inserts_nothing(db: TestDatabase, store: TimerStore) -> None:
    earlier = store.create(
        timer=NewTimer(url=url(), delay_s=5, idempotency_key="c-1", idempotency_hash="1" * 64)
    )
    timers = [
        NewTimer(url=url(), delay_s=5),
        NewTimer(url=url(), delay_s=5, idempotency_key="c-1", idempotency_hash="9" * 64),
        NewTimer(url=url(), delay_s=5, idempotency_key="c-2", idempotency_hash="2" * 64),
    ]

    with pytest.raises(KeyConflict) as caught:
        store.create_many(timers=timers)

    assert {i: t.id for i, t in caught.value.existing.items()} == {1: earlier.timer.id}
    assert count(db) == 1


def test_a_key_twice_in_one_batch_is_refused(store: TimerStore) -> None:
    twice = NewTimer(url=url(), delay_s=5, idempotency_key="d", idempotency_hash="1" * 64)

    with pytest.raises(ValueError, match="twice"):
        store.create_many(timers=[twice, twice])


# -- groups of independent creates (the api's single creates, written together) -------


@pytest.fixture(params=WAYS)
def any_store(request: pytest.FixtureRequest, db: TestDatabase) -> Iterator[TimerStore]:
    """A store on MariaDB's INSERT … RETURNING, and one on MySQL 8's way (no RETURNING)."""
    engine = engine_for(db.url, request.param)
    try:
        yield TimerStore(engine)
    finally:
        engine.dispose()


def keyed(k: str, fingerprint: str = "1" * 64) -> NewTimer:
    return NewTimer(url=url(), delay_s=60, idempotency_key=k, idempotency_hash=fingerprint)


def test_a_group_answers_each_create_as_create_would(
    db: TestDatabase, any_store: TimerStore
) -> None:
    held = any_store.create(timer=keyed("g-held")).timer
    at = datetime(2031, 5, 6, 7, 8, 9, 123456)
    timers = [
        NewTimer(url=url() + "?q=%20'\\\"", delay_s=30, body="b\x00'\\é", headers='{"A":"1"}'),
        keyed("g-new"),
        keyed("g-new"),  # the same request twice in one group: a replay of the first
        keyed("g-new", "2" * 64),  # another request with that key: refused
        keyed("g-held"),  # a replay of a timer created earlier
        keyed("g-held", "3" * 64),
        NewTimer(url=url(), due_at=at, method="PUT", max_attempts=4),
    ]

    results = any_store.create_each(timers=timers)

    plain, new, replay, reused, held_again, held_reused, dated = results
    assert isinstance(plain, Created)
    assert plain.created
    assert isinstance(new, Created)
    assert new.created
    assert isinstance(replay, Created)
    assert not replay.created
    assert replay.timer.id == new.timer.id
    assert isinstance(reused, KeyConflict)
    assert reused.existing[0].id == new.timer.id
    assert isinstance(held_again, Created)
    assert not held_again.created
    assert held_again.timer.id == held.id
    assert isinstance(held_reused, KeyConflict)
    assert held_reused.existing[0].id == held.id
    assert isinstance(dated, Created)
    assert dated.timer.due_at == at
    assert count(db) == 4
    for result, timer in [(plain, timers[0]), (new, timers[1]), (dated, timers[6])]:
        assert isinstance(result, Created)
        stored = any_store.get(timer_id=result.timer.id)
        assert stored is not None
        assert stored.url == timer.url
        same = dataclasses.replace(result.timer, time_left_s=stored.time_left_s)
        assert same == stored
    assert plain.timer.body_bytes == len("b\x00'\\é".encode())


def test_one_create_the_server_refuses_does_not_fail_its_group(
    db: TestDatabase, any_store: TimerStore
) -> None:
    timers = [
        NewTimer(url=url(), delay_s=5),
        NewTimer(url=url(), delay_s=5, max_attempts=2**40),  # out of the column's range
        NewTimer(url=url(), delay_s=5),
    ]

    first, refused, last = any_store.create_each(timers=timers)

    assert isinstance(refused, BadData)
    assert isinstance(first, Created)
    assert first.created
    assert isinstance(last, Created)
    assert last.created
    assert count(db) == 2


def test_concurrent_groups_sharing_keys_make_one_timer_per_key(
    db: TestDatabase, store: TimerStore
) -> None:
    for _ in range(RACE_ROUNDS):
        shared = [keyed(key()) for _ in range(3)]

        def group(shared: list[NewTimer] = shared) -> list[Any]:
            return store.create_each(timers=[NewTimer(url=url(), delay_s=1), *shared])

        results = at_once(group)

        assert all(isinstance(r, list) for r in results), results
        groups = [r for r in results if isinstance(r, list)]
        for index, timer in enumerate(shared, start=1):
            answers = [g[index] for g in groups]
            assert all(isinstance(a, Created) for a in answers), answers
            assert sorted(a.created for a in answers) == [False, True]
            assert len({a.timer.id for a in answers}) == 1
            assert count(db, "idempotency_key = :k", k=timer.idempotency_key) == 1


# -- pages ------------------------------------------------------------------------------


def test_keyset_pages_walk_every_timer_once(store: TimerStore) -> None:
    ids = [c.timer.id for c in store.create_many(timers=[NewTimer(url=url(), delay_s=1)] * 25)]

    seen: list[int] = []
    after: int | None = None
    pages = 0
    while True:
        page = store.list_page(after_id=after, limit=10)
        pages += 1
        seen += [t.id for t in page.timers]
        if page.next_after_id is None:
            break
        after = page.next_after_id

    assert seen == ids
    assert pages == 3


def test_a_full_last_page_says_there_is_no_next(store: TimerStore) -> None:
    store.create_many(timers=[NewTimer(url=url(), delay_s=1)] * 10)

    assert store.list_page(limit=10).next_after_id is None
    assert store.list_page(limit=9).next_after_id is not None


def test_pages_filter_by_status_and_key(store: TimerStore) -> None:
    created = store.create_many(
        timers=[
            NewTimer(url=url(), delay_s=60),
            NewTimer(url=url(), delay_s=60, idempotency_key="e-1", idempotency_hash="1" * 64),
            NewTimer(url=url(), delay_s=60),
        ]
    )
    store.cancel(timer_id=created[2].timer.id)

    cancelled = store.list_page(status="cancelled")
    keyed = store.list_page(idempotency_key="e-1")

    assert [t.id for t in cancelled.timers] == [created[2].timer.id]
    assert [t.id for t in keyed.timers] == [created[1].timer.id]
    assert store.list_page(status="done").timers == []


# -- cancel and reschedule -----------------------------------------------------------------


def test_cancel_a_waiting_timer(store: TimerStore) -> None:
    timer_id = store.create(timer=NewTimer(url=url(), delay_s=60)).timer.id

    result = store.cancel(timer_id=timer_id)

    assert result.applied
    assert result.timer is not None
    assert result.timer.status == "cancelled"
    assert result.timer.finished_at is not None


@pytest.mark.parametrize("status", ["claimed", "done", "failed", "cancelled"])
def test_only_a_waiting_timer_changes(db: TestDatabase, store: TimerStore, status: str) -> None:
    timer_id = store.create(timer=NewTimer(url=url(), delay_s=60)).timer.id
    sql(db, "UPDATE tasks SET status = :s WHERE id = :id", s=status, id=timer_id)
    due = store.get(timer_id=timer_id).due_at  # type: ignore[union-attr]

    cancel = store.cancel(timer_id=timer_id)
    move = store.reschedule(timer_id=timer_id, delay_s=5)

    for result in (cancel, move):
        assert not result.applied
        assert result.timer is not None
        assert result.timer.status == status
    assert store.get(timer_id=timer_id).due_at == due  # type: ignore[union-attr]


def test_changes_to_a_missing_timer_say_so(store: TimerStore) -> None:
    for result in (store.cancel(timer_id=10**12), store.reschedule(timer_id=10**12, delay_s=1)):
        assert (result.timer, result.applied) == (None, False)


def test_reschedule_moves_the_due_time(db: TestDatabase, store: TimerStore) -> None:
    timer_id = store.create(timer=NewTimer(url=url(), delay_s=3600)).timer.id
    at = datetime(2031, 5, 6, 7, 8, 9)

    by_delay = store.reschedule(timer_id=timer_id, delay_s=10)
    by_time = store.reschedule(timer_id=timer_id, due_at=at)
    same_time = store.reschedule(timer_id=timer_id, due_at=at)

    assert by_delay.applied
    assert by_delay.timer is not None
    assert 9 < by_delay.timer.time_left_s <= 10
    assert by_time.applied
    assert by_time.timer is not None
    assert by_time.timer.due_at == at
    assert same_time.applied  # matched, though nothing changed


# -- an unreachable database -----------------------------------------------------------


def test_an_unreachable_database_is_storage_unavailable() -> None:
    store = TimerStore(make_engine("mysql+mysqldb://nobody@127.0.0.1:9/none", pool_size=1))

    for operation in (
        lambda: store.get(timer_id=1),
        lambda: store.list_page(),
        lambda: store.create(timer=NewTimer(url=url(), delay_s=1)),
        # A group's creates are unavailable together, not tried one by one.
        lambda: store.create_each(timers=[NewTimer(url=url(), delay_s=1)] * 2),
        lambda: store.cancel(timer_id=1),
    ):
        with pytest.raises(StorageUnavailable, match="refused"):
            operation()
