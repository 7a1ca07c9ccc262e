"""Driver errors stop here: each becomes a ``StorageError`` with a short reason.

Nothing outside ``db`` sees a SQLAlchemy or mysqlclient exception.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from timer_controller.errors import BadData, SchemaMissing, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

NO_SUCH_TABLE = 1146  # ER_NO_SUCH_TABLE
# InnoDB may pick one of two transactions touching the same index pages as a
# deadlock victim (claims and outcome writes both move rows between status
# prefixes of one index). The victim's work was rolled back whole, so it is
# simply run again, at once, instead of being treated as a lost database.
RETRYABLE_LOCK_ERRORS = frozenset({1213, 1205})  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
LOCK_RETRIES = 5
# The server refused a value, not the connection: out of range, an incorrect
# datetime or string, too long, NULL where it cannot be. One row is at fault,
# never the database.
DATA_ERRORS = frozenset({1048, 1264, 1265, 1292, 1366, 1406, 1411, 1690})

# mysqlclient / MySQL client error codes worth a human explanation.
_REASONS = {
    1045: "access denied (check DB_USER and DB_PASSWORD)",
    1044: "access denied to the database (check the user's grants)",
    1049: "unknown database",
    2002: "connection refused (is the server running?)",
    2003: "connection refused or unreachable (is the server running and the port right?)",
    2005: "unknown host (check DB_HOST)",
    2006: "server has gone away",
    2013: "lost connection, or no answer within DB_TIMEOUT",
}


def error_code(exc: BaseException) -> int | None:
    """The MySQL/MariaDB error number behind a driver or SQLAlchemy error, if any."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    return args[0] if args and isinstance(args[0], int) else None


def is_data_error(exc: BaseException) -> bool:
    return error_code(exc) in DATA_ERRORS


def describe_error(exc: BaseException) -> str:
    """A short reason: refused, unknown host, denied… or the server's first line."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
    code = error_code(exc)
    if code in _REASONS:
        return _REASONS[code]
    detail = str(args[1] if len(args) > 1 else orig)
    return detail.splitlines()[0][:200] if detail else type(orig).__name__


def as_storage_error(exc: SQLAlchemyError) -> StorageError:
    code = error_code(exc)
    if code == NO_SUCH_TABLE:
        return SchemaMissing("the tasks table does not exist", code=code)
    if code in DATA_ERRORS:
        return BadData(describe_error(exc), code=code)
    if isinstance(exc, PoolTimeout):
        return StorageUnavailable("no database connection free in time")
    if isinstance(exc, OperationalError):
        return StorageUnavailable(describe_error(exc), code=code)
    return StorageError(describe_error(exc), code=code)


def storage_operation(work: Callable[P, R]) -> Callable[P, R]:
    """One repository operation: run again if InnoDB rolled it back as a lock
    victim; any other driver error leaves as a ``StorageError``."""

    @functools.wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, LOCK_RETRIES + 1):
            try:
                return work(*args, **kwargs)
            except SQLAlchemyError as exc:
                code = error_code(exc)
                if code in RETRYABLE_LOCK_ERRORS and attempt < LOCK_RETRIES:
                    log.info("%s: lock conflict (%s), running it again", work.__name__, code)
                    continue
                raise as_storage_error(exc) from exc
        raise AssertionError("unreachable")

    return run
