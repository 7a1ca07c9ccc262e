"""The database clock estimated locally: an observed offset shifts now()."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from timer_controller.db import clock
from timer_controller.db.clock import DbClock, utc_now

LOCAL = datetime(2025, 6, 1, 12, 0, 0)


@pytest.fixture
def set_local(monkeypatch: pytest.MonkeyPatch) -> Callable[[datetime], None]:
    """Pin the pod's clock (clock.utc_now) to a chosen instant."""
    current = [LOCAL]
    monkeypatch.setattr(clock, "utc_now", lambda: current[0])

    def set_to(moment: datetime) -> None:
        current[0] = moment

    return set_to


def test_without_an_observation_now_is_the_local_clock(
    set_local: Callable[[datetime], None],
) -> None:
    assert DbClock().now() == LOCAL


@pytest.mark.parametrize(
    "offset",
    [
        timedelta(seconds=90),
        timedelta(seconds=-90),
        timedelta(microseconds=1),
        timedelta(hours=-5, microseconds=123456),
        timedelta(0),
    ],
)
def test_observed_offset_shifts_now(
    set_local: Callable[[datetime], None], offset: timedelta
) -> None:
    db_clock = DbClock()
    db_clock.observe(LOCAL + offset, local_before=LOCAL, uncertainty_s=0.001)

    set_local(LOCAL + timedelta(seconds=7))

    assert db_clock.now() == LOCAL + timedelta(seconds=7) + offset


def test_a_tighter_observation_replaces_a_looser_one(
    set_local: Callable[[datetime], None],
) -> None:
    db_clock = DbClock()
    db_clock.observe(LOCAL + timedelta(seconds=30), local_before=LOCAL, uncertainty_s=0.5)
    db_clock.observe(LOCAL - timedelta(seconds=2), local_before=LOCAL, uncertainty_s=0.001)

    set_local(LOCAL + timedelta(seconds=10))

    assert db_clock.now() == LOCAL + timedelta(seconds=8)


def test_a_looser_observation_does_not_replace_a_fresh_tight_one(
    set_local: Callable[[datetime], None],
) -> None:
    db_clock = DbClock()
    db_clock.observe(LOCAL, local_before=LOCAL, uncertainty_s=0.001)
    # A slow claim: the database read its clock late in a 0.8 s SELECT.
    db_clock.observe(LOCAL + timedelta(seconds=0.8), local_before=LOCAL, uncertainty_s=0.8)

    assert db_clock.now() == LOCAL


def test_a_stale_tight_observation_gives_way(set_local: Callable[[datetime], None]) -> None:
    ticks = [1000.0]
    db_clock = DbClock(monotonic=lambda: ticks[0])
    db_clock.observe(LOCAL, local_before=LOCAL, uncertainty_s=0.001)
    ticks[0] += clock.KEEP_TIGHT_SAMPLE_S + 1
    db_clock.observe(LOCAL + timedelta(seconds=3), local_before=LOCAL, uncertainty_s=0.01)

    assert db_clock.now() == LOCAL + timedelta(seconds=3)


@pytest.mark.parametrize("read_after_s", [0.0, 0.004, 0.01])
def test_the_estimate_is_never_behind_the_database(
    set_local: Callable[[datetime], None], read_after_s: float
) -> None:
    """Pairing db_now with the time *before* the query can only run ahead.

    The database's clock runs 7 s ahead of the pod's; it is read somewhere
    inside a 10 ms query, and the estimate is asked for later.
    """
    skew = timedelta(seconds=7)
    db_now = LOCAL + timedelta(seconds=read_after_s) + skew
    db_clock = DbClock()
    db_clock.observe(db_now, local_before=LOCAL, uncertainty_s=0.01)

    later = LOCAL + timedelta(seconds=5)
    set_local(later)
    assert db_clock.now() >= later + skew
    assert db_clock.now() - (later + skew) <= timedelta(seconds=0.01)


def test_utc_now_is_naive_utc() -> None:
    before = datetime.now(UTC).replace(tzinfo=None)
    now = utc_now()
    after = datetime.now(UTC).replace(tzinfo=None)

    assert now.tzinfo is None
    assert before <= now <= after


def test_utc_now_is_naive_utc_between_two_readings_of_the_system_clock() -> None:
    for _ in range(1000):
        before = datetime.now(UTC).replace(tzinfo=None)
        now = utc_now()
        after = datetime.now(UTC).replace(tzinfo=None)
        assert now.tzinfo is None
        # datetime.now rounds to the microsecond, utc_now truncates: at most 1 us apart.
        assert before - timedelta(microseconds=1) <= now <= after
