"""A transaction InnoDB rolls back as a deadlock victim is run again, at once;
any other database error is not retried here (the loop's reconnect rule owns it)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from timer_controller.db import repository
from timer_controller.db.repository import _retry_lock_conflicts


def _error(code: int) -> OperationalError:
    return OperationalError("UPDATE tasks …", {}, Exception(code, "from the server"))


def _flaky(failures: list[int]) -> tuple[list[int], object]:
    calls: list[int] = []

    @_retry_lock_conflicts
    def work(value: int) -> int:
        calls.append(value)
        if len(calls) <= len(failures):
            raise _error(failures[len(calls) - 1])
        return value * 2

    return calls, work


@pytest.mark.parametrize("code", [1213, 1205])
def test_a_deadlock_victim_runs_again_and_succeeds(code: int) -> None:
    calls, work = _flaky([code, code])
    assert work(21) == 42  # type: ignore[operator]
    assert calls == [21, 21, 21]


@pytest.mark.parametrize("code", [2006, 2013, 1146])
def test_other_errors_are_not_retried(code: int) -> None:
    calls, work = _flaky([code])
    with pytest.raises(OperationalError):
        work(1)  # type: ignore[operator]
    assert calls == [1]


def test_it_gives_up_after_a_bounded_number_of_tries() -> None:
    calls, work = _flaky([1213] * 50)
    with pytest.raises(OperationalError):
        work(1)  # type: ignore[operator]
    assert len(calls) == repository._LOCK_RETRIES
