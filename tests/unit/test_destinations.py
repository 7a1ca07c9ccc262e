"""The per-destination limit's bookkeeping, and what a destination is."""

from __future__ import annotations

from datetime import datetime

import pytest

from timer_controller.domain.destination import Destination, destination_of, url_prefix
from timer_controller.domain.task import ClaimedTask
from timer_controller.runtime.destinations import MAX_PREFIXES_PER_DESTINATION, DestinationSlots

DUE = datetime(2026, 12, 1, 10, 0, 0)


def task(task_id: int, url: str) -> ClaimedTask:
    return ClaimedTask(id=task_id, url=url, due_at=DUE, attempt=1, max_attempts=None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/a", Destination("http", "example.com", 80)),
        ("HTTP://Example.COM:80/b?x=1", Destination("http", "example.com", 80)),
        ("https://example.com", Destination("https", "example.com", 443)),
        ("https://example.com:8443/x", Destination("https", "example.com", 8443)),
        ("http://user:pw@example.com:81/", Destination("http", "example.com", 81)),
        ("http://[::1]:9000/x", Destination("http", "::1", 9000)),
        ("http://example.com:99999/", Destination("invalid", "http://example.com:99999/", 0)),
        ("ftp://example.com/f", Destination("ftp", "example.com", 0)),
    ],
)
def test_a_destination_is_scheme_host_and_port(url: str, expected: Destination) -> None:
    assert destination_of(url) == expected


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        ("http://example.com:81/a/b", "http://example.com:81"),
        ("http://example.com", "http://example.com"),
        ("http://example.com?x=/y", "http://example.com?x="),
        ("nonsense", "nonsense"),
    ],
)
def test_the_url_prefix_is_what_substring_index_3_gives(url: str, prefix: str) -> None:
    assert url_prefix(url) == prefix


def test_tasks_past_a_destinations_limit_are_deferred_in_order_and_others_are_not() -> None:
    slots = DestinationSlots(limit=2)
    claim = [task(i, "http://dead:1/x") for i in range(1, 5)] + [task(9, "http://ok:2/y")]

    kept, deferred = slots.admit(claim)

    assert [t.id for t in kept] == [1, 2, 9]
    assert [t.id for t in deferred] == [3, 4]
    assert slots.skip_prefixes() == ["http://dead:1"]
    assert (slots.busiest(), slots.at_limit()) == (2, 1)


def test_a_finished_task_makes_room_and_lifts_the_skip() -> None:
    slots = DestinationSlots(limit=1)
    held = task(1, "http://dead:1/x")
    slots.admit([held])
    assert slots.skip_prefixes() == ["http://dead:1"]

    slots.finished(held)
    slots.finished(held)  # twice, or for a task never held, changes nothing

    assert slots.skip_prefixes() == []
    assert (slots.busiest(), slots.at_limit()) == (0, 0)
    kept, deferred = slots.admit([task(2, "http://dead:1/y")])
    assert ([t.id for t in kept], deferred) == ([2], [])


def test_every_spelling_of_a_saturated_destination_is_skipped_up_to_a_bound() -> None:
    slots = DestinationSlots(limit=1)
    spellings = ["http://dead:80/a", "HTTP://DEAD/b", "http://dead:80/c"]
    spellings += [f"http://user{n}@dead/x" for n in range(MAX_PREFIXES_PER_DESTINATION + 5)]

    slots.admit([task(i, url) for i, url in enumerate(spellings)])

    skipped = slots.skip_prefixes()
    assert len(skipped) == MAX_PREFIXES_PER_DESTINATION
    assert {"http://dead:80", "HTTP://DEAD"} <= set(skipped)


def test_is_full_says_whether_a_held_tasks_destination_is_at_its_limit() -> None:
    slots = DestinationSlots(limit=2)
    first, second, other = task(1, "http://a:1/"), task(2, "http://a:1/"), task(3, "http://b:1/")
    slots.admit([first, other])
    assert not slots.is_full(first)

    slots.admit([second])
    assert slots.is_full(first)
    assert slots.is_full(second)
    assert not slots.is_full(other)
    slots.finished(second)
    assert not slots.is_full(first)
    assert not slots.is_full(second)  # no longer held


def test_tasks_claimed_ahead_take_their_destinations_room_only_when_due() -> None:
    slots = DestinationSlots(limit=1)
    ahead = ClaimedTask(
        id=1, url="http://a:1/", due_at=DUE, attempt=1, max_attempts=None, delay_s=20.0
    )
    due_now = task(2, "http://a:1/")

    kept, deferred = slots.admit([ahead, due_now])

    assert ([t.id for t in kept], deferred) == ([1, 2], [])  # the far one takes no room
    assert not slots.take(ahead)  # at its due time the due one holds the room
    slots.finished(due_now)
    assert slots.take(ahead)
