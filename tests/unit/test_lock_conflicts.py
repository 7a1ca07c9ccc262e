"""At the db boundary: a transaction InnoDB rolls back as a deadlock victim is run
again, at once; any other driver error leaves as a StorageError with its reason
(the loop's reconnect rule owns it)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from timer_controller.db import errors
from timer_controller.db.errors import storage_operation
from timer_controller.errors import SchemaMissing, StorageError, StorageUnavailable


def _error(code: int) -> OperationalError:
    return OperationalError("UPDATE tasks …", {}, Exception(code, "from the server"))


def _flaky(failures: list[int]) -> tuple[list[int], Callable[[int], int]]:
    calls: list[int] = []

    @storage_operation
    def work(value: int) -> int:
        calls.append(value)
        if len(calls) <= len(failures):
            raise _error(failures[len(calls) - 1])
        return value * 2

    return calls, work


@pytest.mark.parametrize("code", [1213, 1205])
def test_a_deadlock_victim_runs_again_and_succeeds(code: int) -> None:
    calls, work = _flaky([code, code])
    assert work(21) == 42
    assert calls == [21, 21, 21]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (2006, "server has gone away"),
        (2013, "lost connection, or no answer within DB_TIMEOUT"),
        (1064, "from the server"),
    ],
)
def test_other_errors_leave_as_a_storage_error_with_a_reason(code: int, reason: str) -> None:
    calls, work = _flaky([code])
    with pytest.raises(StorageError) as raised:
        work(1)
    assert calls == [1]
    assert (raised.value.reason, raised.value.code) == (reason, code)
    assert isinstance(raised.value.__cause__, OperationalError)


def test_a_missing_table_is_named_as_such() -> None:
    _, work = _flaky([1146])
    with pytest.raises(SchemaMissing):
        work(1)


def test_a_pool_timeout_is_a_storage_error_too() -> None:
    @storage_operation
    def work() -> None:
        raise PoolTimeout("QueuePool limit of size 5 overflow 5 reached")

    with pytest.raises(StorageUnavailable, match="no database connection free in time"):
        work()


def test_it_gives_up_after_a_bounded_number_of_tries() -> None:
    calls, work = _flaky([1213] * 50)
    with pytest.raises(StorageError):
        work(1)
    assert len(calls) == errors.LOCK_RETRIES
