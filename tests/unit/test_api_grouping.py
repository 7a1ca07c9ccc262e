"""Group commit: creates that arrive while a write is in flight are written together.

The store here is a recorder on a real worker thread, held at a gate so
that creates pile up behind the first write, as they do under load.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import datetime

import pytest

from timer_controller.api.grouping import CreateGroups
from timer_controller.db.timers import Created, KeyConflict, NewTimer, Outcome, TimerRecord
from timer_controller.errors import BadData, StorageUnavailable

NOW = datetime(2026, 12, 1, 10, 0, 0)
TIMEOUT_S = 10


def record(timer_id: int, url: str) -> TimerRecord:
    return TimerRecord(
        timer_id, url, None, "waiting", NOW, 0, None, None, None, NOW, None, None, None, None,
        (), None, 0.0,
    )  # fmt: skip


class GatedStore:
    """create_each that answers from the URLs, after the test opens the gate."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail_with: BaseException | None = None

    def create_each(self, *, timers: Sequence[NewTimer]) -> list[Outcome]:
        self.entered.set()
        assert self.gate.wait(TIMEOUT_S), "the test never opened the gate"
        self.groups.append([t.url for t in timers])
        if self.fail_with is not None:
            raise self.fail_with
        answers: list[Outcome] = []
        for number, timer in enumerate(timers):
            if timer.url.endswith("/reused"):
                answers.append(KeyConflict({0: record(1, timer.url)}))
            elif timer.url.endswith("/refused"):
                answers.append(BadData("out of range"))
            else:
                answers.append(Created(record(len(self.groups) * 1000 + number, timer.url), True))
        return answers


async def creates(groups: CreateGroups, store: GatedStore, urls: list[str]) -> list[object]:
    """The first URL's create, then the others once it is in flight; each one's outcome."""
    store.entered.clear()
    first = asyncio.ensure_future(groups.create(NewTimer(url=urls[0], delay_s=1)))
    # The first write is in flight (held at the gate) before the others arrive.
    assert await asyncio.to_thread(store.entered.wait, TIMEOUT_S)
    others = [asyncio.ensure_future(groups.create(NewTimer(url=u, delay_s=1))) for u in urls[1:]]
    await asyncio.sleep(0)  # they queue
    store.gate.set()
    done = await asyncio.wait_for(asyncio.gather(first, *others, return_exceptions=True), TIMEOUT_S)
    return list(done)


def test_creates_that_arrive_during_a_write_go_together_each_with_its_answer() -> None:
    store = GatedStore()
    groups = CreateGroups(store.create_each)
    urls = ["http://a/first", "http://a/1", "http://a/reused", "http://a/refused", "http://a/2"]

    results = asyncio.run(creates(groups, store, urls))

    assert store.groups == [urls[:1], urls[1:]]
    first, one, reused, refused, two = results
    assert isinstance(first, Created)
    assert first.timer.url == urls[0]
    assert isinstance(one, Created)
    assert one.timer.url == urls[1]
    assert isinstance(two, Created)
    assert two.timer.url == urls[4]
    assert isinstance(reused, KeyConflict)
    assert isinstance(refused, BadData)


def test_a_group_is_no_larger_than_max_group() -> None:
    store = GatedStore()
    groups = CreateGroups(store.create_each, max_group=2)
    urls = [f"http://a/{i}" for i in range(6)]

    results = asyncio.run(creates(groups, store, urls))

    assert [len(g) for g in store.groups] == [1, 2, 2, 1]
    assert [r.timer.url for r in results if isinstance(r, Created)] == urls


def test_a_failed_write_fails_every_create_in_it_and_the_next_group_still_runs() -> None:
    store = GatedStore()
    store.fail_with = StorageUnavailable("connection refused")
    groups = CreateGroups(store.create_each)

    results = asyncio.run(creates(groups, store, ["http://a/0", "http://a/1", "http://a/2"]))

    assert all(isinstance(r, StorageUnavailable) for r in results), results
    store.fail_with = None
    again = asyncio.run(creates(groups, store, ["http://a/3", "http://a/4"]))
    assert all(isinstance(r, Created) for r in again), again


def test_a_caller_that_goes_away_does_not_stop_its_groups_write() -> None:
    store = GatedStore()
    groups = CreateGroups(store.create_each)

    async def scenario() -> object:
        first = asyncio.ensure_future(groups.create(NewTimer(url="http://a/0", delay_s=1)))
        assert await asyncio.to_thread(store.entered.wait, TIMEOUT_S)
        gone = asyncio.ensure_future(groups.create(NewTimer(url="http://a/gone", delay_s=1)))
        stays = asyncio.ensure_future(groups.create(NewTimer(url="http://a/stays", delay_s=1)))
        await asyncio.sleep(0)
        gone.cancel()
        store.gate.set()
        await asyncio.wait_for(first, TIMEOUT_S)
        return await asyncio.wait_for(stays, TIMEOUT_S)

    stays = asyncio.run(scenario())

    assert isinstance(stays, Created)
    assert ["http://a/gone", "http://a/stays"] in store.groups


@pytest.mark.parametrize("size", [1, 3])
def test_a_lone_create_is_written_at_once(size: int) -> None:
    store = GatedStore()
    store.gate.set()
    groups = CreateGroups(store.create_each)

    async def one_after_another() -> None:
        for i in range(size):
            await asyncio.wait_for(groups.create(NewTimer(url=f"http://a/{i}", delay_s=1)), 5)

    asyncio.run(one_after_another())

    assert store.groups == [[f"http://a/{i}"] for i in range(size)]
