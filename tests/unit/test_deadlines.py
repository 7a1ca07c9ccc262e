"""Deadlines that need no database: the driver's per-try timeouts, the readiness probe."""

from __future__ import annotations

import threading
import time

import pytest

from timer_controller.db.setup import driver_timeouts
from timer_controller.ops.probe import DeadlineCheck


@pytest.mark.parametrize(
    ("db_timeout_s", "read_tries", "per_try_s"),
    [
        pytest.param(10, 1, 10, id="connector-c-waits-once"),
        pytest.param(3, 1, 3, id="connector-c-minimum"),
        pytest.param(10, 3, 3, id="libmysqlclient-three-tries-stay-within"),
        pytest.param(3, 3, 1, id="libmysqlclient-minimum"),
        pytest.param(3600, 3, 1200, id="libmysqlclient-maximum"),
    ],
)
def test_read_and_write_tries_together_stay_within_db_timeout(
    db_timeout_s: int, read_tries: int, per_try_s: int
) -> None:
    timeouts = driver_timeouts(db_timeout_s, read_tries=read_tries)

    assert timeouts == {
        "connect_timeout": db_timeout_s,
        "read_timeout": per_try_s,
        "write_timeout": per_try_s,
    }
    assert per_try_s * read_tries <= db_timeout_s


def test_a_check_that_never_answers_is_not_ready_at_the_deadline() -> None:
    release = threading.Event()
    check = DeadlineCheck(lambda: release.wait(30), deadline_s=0.3)
    try:
        started = time.monotonic()
        assert check() is False
        assert time.monotonic() - started < 2
    finally:
        release.set()
        check.close()


def test_probes_during_a_blocked_check_share_it_instead_of_piling_up() -> None:
    release = threading.Event()
    calls: list[int] = []

    def blocked() -> bool:
        calls.append(1)
        return release.wait(30)

    check = DeadlineCheck(blocked, deadline_s=0.1)
    try:
        assert [check() for _ in range(5)] == [False] * 5
        assert len(calls) == 1
        release.set()
        deadline = time.monotonic() + 10
        while not check() and time.monotonic() < deadline:
            time.sleep(0.05)  # a poll interval: the blocked check ends on its own thread
        assert check() is True
    finally:
        release.set()
        check.close()


def test_a_check_that_raises_is_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("database said no")

    check = DeadlineCheck(broken, deadline_s=1)
    try:
        assert check() is False
    finally:
        check.close()


def test_a_check_that_answers_in_time_is_its_answer() -> None:
    check = DeadlineCheck(lambda: True, deadline_s=5)
    try:
        assert check() is True
    finally:
        check.close()
