"""The database's clock, estimated locally between claims.

Pods' clocks may disagree; the database's is the one ``due_at`` means, so
times this process writes (``fired_at``, retry times) are converted to it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    """Naive UTC, as the DATETIME columns store it."""
    return datetime.now(UTC).replace(tzinfo=None)


class DbClock:
    def __init__(self) -> None:
        self._offset = timedelta(0)

    def observe(self, db_now: datetime) -> None:
        """Called right after a query that read ``UTC_TIMESTAMP(6)``."""
        self._offset = db_now - utc_now()

    def now(self) -> datetime:
        return utc_now() + self._offset
