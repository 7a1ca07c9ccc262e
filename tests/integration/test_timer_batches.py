"""TimerStore.create_batch on the real database: chunks taken lazily within one transaction.

On MariaDB each chunk's INSERT runs while the next chunk is taken (the api
checks it then); on MySQL 8's way (forced here) the chunks are all taken first.
Either way a chunk that raises, a key another request holds, a value the server
refuses or a lost connection leaves nothing inserted and the store usable.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import MySQLdb
import pytest
from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.stores import WAYS, engine_for
from timer_controller.db.timers import KeyConflict, NewTimer, TimerStore
from timer_controller.errors import BadData, StorageUnavailable


class ChunkProblem(Exception):
    """What a caller's check raises while a batch is being inserted."""


@pytest.fixture(params=WAYS)
def one_connection_store(request: pytest.FixtureRequest, db: TestDatabase) -> Iterator[TimerStore]:
    """A store with one pooled connection, so a batch's failure meets the next batch."""
    engine = engine_for(db.url, request.param, pool_size=1)
    engine.pool._max_overflow = 0  # type: ignore[attr-defined]
    try:
        yield TimerStore(engine)
    finally:
        engine.dispose()


def new(n: int, prefix: str, **fields: Any) -> list[NewTimer]:
    return [
        NewTimer(url=f"http://127.0.0.1:9/{prefix}/{i}", delay_s=60, **fields) for i in range(n)
    ]


def count(db: TestDatabase, prefix: str) -> int:
    with db.engine.connect() as conn:
        found = conn.execute(
            text("SELECT COUNT(*) FROM tasks WHERE url LIKE :p"),
            {"p": f"http://127.0.0.1:9/{prefix}/%"},
        )
        return int(found.scalar_one())


def connection_id(store: TimerStore) -> int:
    with store._engine.connect() as conn:  # the pool's one connection
        return int(conn.execute(text("SELECT CONNECTION_ID()")).scalar_one())


def lazily(
    chunks: Sequence[Sequence[NewTimer]], before: dict[int, Callable[[], None]]
) -> Iterator[Sequence[NewTimer]]:
    """``chunks``, running ``before[i]`` just before chunk i is handed over (once)."""
    for index, chunk in enumerate(chunks):
        if index in before:
            before.pop(index)()
        yield chunk


def test_chunks_are_one_batch_in_order(db: TestDatabase, one_connection_store: TimerStore) -> None:
    store = one_connection_store
    prefix = uuid.uuid4().hex
    held = store.create(
        timer=new(1, prefix, idempotency_key=f"{prefix}-k", idempotency_hash="h")[0]
    )
    chunks = [
        new(150, f"{prefix}/a"),
        new(1, f"{prefix}/held", idempotency_key=f"{prefix}-k", idempotency_hash="h"),
        new(90, f"{prefix}/b", method="PUT", body="é"),
    ]

    done = store.create_batch(chunks=iter(chunks), keys=[f"{prefix}-k"])

    created = done.created()
    urls = [t.url for chunk in chunks for t in chunk]
    urls[150] = held.timer.url  # a replay answers with the timer its key names
    assert [c.timer.url for c in created] == urls
    assert [c.created for c in created] == [True] * 150 + [False] + [True] * 90
    assert created[150].timer == dataclasses.replace(
        held.timer, time_left_s=created[150].timer.time_left_s
    )
    ids = [c.timer.id for c in created if c.created]
    assert ids == sorted(ids)
    for c in created:
        stored = store.get(timer_id=c.timer.id)
        assert stored == dataclasses.replace(c.timer, time_left_s=stored.time_left_s)  # type: ignore[union-attr]


def test_a_chunk_that_raises_inserts_nothing(
    db: TestDatabase, one_connection_store: TimerStore
) -> None:
    prefix = uuid.uuid4().hex
    before = connection_id(one_connection_store)

    def problem() -> None:
        raise ChunkProblem  # the second chunk's INSERT is in flight now (MariaDB)

    chunks = lazily([new(200, prefix), new(200, prefix), new(5, prefix)], {2: problem})
    with pytest.raises(ChunkProblem):
        one_connection_store.create_batch(chunks=chunks, keys=[])

    assert count(db, prefix) == 0
    assert connection_id(one_connection_store) == before  # rolled back, not thrown away
    assert len(one_connection_store.create_many(timers=new(3, prefix))) == 3
    assert count(db, prefix) == 3


def test_a_key_held_by_another_request_in_a_late_chunk_inserts_nothing(
    db: TestDatabase, one_connection_store: TimerStore
) -> None:
    store = one_connection_store
    prefix = uuid.uuid4().hex
    k = f"{prefix}-k"
    held = store.create(
        timer=NewTimer(
            url="http://127.0.0.1:9/held", delay_s=5, idempotency_key=k, idempotency_hash="1"
        )
    )
    chunks = [
        new(200, prefix),
        new(1, prefix, idempotency_key=k, idempotency_hash="2"),
        new(50, prefix),
    ]

    with pytest.raises(KeyConflict) as conflict:
        store.create_batch(chunks=iter(chunks), keys=[k])

    assert {index: t.id for index, t in conflict.value.existing.items()} == {200: held.timer.id}
    assert count(db, prefix) == 0


def test_a_value_the_server_refuses_in_a_late_chunk_inserts_nothing(
    db: TestDatabase, one_connection_store: TimerStore
) -> None:
    prefix = uuid.uuid4().hex
    chunks = [new(200, prefix), new(2, prefix, max_attempts=2**40), new(50, prefix)]

    with pytest.raises(BadData):
        one_connection_store.create_batch(chunks=iter(chunks), keys=[])

    assert count(db, prefix) == 0
    assert len(one_connection_store.create_many(timers=new(3, prefix))) == 3


def test_a_key_that_races_in_mid_batch_is_read_and_replayed(
    db: TestDatabase, one_connection_store: TimerStore
) -> None:
    """The key is free when the batch starts and taken before its chunk goes in: the
    batch goes again, from every chunk taken so far, and answers with the winner."""
    store = one_connection_store
    prefix = uuid.uuid4().hex
    k = f"{prefix}-k"
    winner: list[int] = []

    def race() -> None:
        other = TimerStore(db.engine)
        timer = NewTimer(
            url=f"http://127.0.0.1:9/{prefix}/won",
            delay_s=5,
            idempotency_key=k,
            idempotency_hash="h",
        )
        winner.append(other.create(timer=timer).timer.id)

    chunks = lazily(
        [
            new(200, prefix),
            new(1, prefix, idempotency_key=k, idempotency_hash="h"),
            new(30, prefix),
        ],
        {1: race},
    )
    done = store.create_batch(chunks=chunks, keys=[k])

    created = done.created()
    assert len(created) == 231
    assert not created[200].created
    assert created[200].timer.id == winner[0]
    assert count(db, prefix) == 231  # 230 of the batch and the winner


def test_a_connection_lost_mid_batch_is_unavailable_and_the_next_batch_works(
    db: TestDatabase, one_connection_store: TimerStore
) -> None:
    store = one_connection_store
    prefix = uuid.uuid4().hex
    victim = connection_id(store)

    def kill() -> None:
        url = db.url
        admin = MySQLdb.connect(
            host=url.host, port=url.port or 3306, user=url.username, password=url.password or ""
        )
        try:
            admin.cursor().execute(f"KILL {victim}")
        finally:
            admin.close()

    chunks = lazily([new(200, prefix), new(200, prefix), new(1, prefix)], {1: kill})
    with pytest.raises(StorageUnavailable):
        store.create_batch(chunks=chunks, keys=[])

    assert count(db, prefix) == 0
    assert len(store.create_many(timers=new(3, prefix))) == 3
