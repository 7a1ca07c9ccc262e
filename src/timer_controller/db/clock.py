"""The database's clock, estimated locally between claims.

Pods' clocks may disagree; the database's is the one ``due_at`` means, so
times this process writes (``fired_at``, retry times) are converted to it.
The database read its clock at some moment during the claim's SELECT, so
pairing it with the local time just *before* the SELECT can only put the
estimate ahead, never behind: a retry is never scheduled early and a
``fired_at`` is never recorded before the request was really due.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta

# A tighter sample wins; a looser one replaces it only once it is this old,
# so the estimate still follows a database clock that is stepped.
KEEP_TIGHT_SAMPLE_S = 30.0


_EPOCH = datetime(1970, 1, 1)


def utc_now() -> datetime:
    """Naive UTC, as the DATETIME columns store it (whole microseconds, truncated).

    Counted from the epoch rather than ``datetime.now(UTC).replace(tzinfo=None)``,
    whose ``replace`` made it 1.3-1.8 us against 0.8 us (Python 3.11); a timer
    reads the clock three or four times. ``datetime.utcnow`` is deprecated.
    """
    return _EPOCH + timedelta(microseconds=time.time_ns() // 1000)


class DbClock:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._offset = timedelta(0)
        self._uncertainty_s = math.inf
        self._observed_at = -math.inf

    def observe(self, db_now: datetime, *, local_before: datetime, uncertainty_s: float) -> None:
        """``db_now`` was read by a query that started at ``local_before``
        and took ``uncertainty_s``."""
        observed_at = self._monotonic()
        stale = observed_at - self._observed_at > KEEP_TIGHT_SAMPLE_S
        if uncertainty_s <= self._uncertainty_s or stale:
            self._offset = db_now - local_before
            self._uncertainty_s = uncertainty_s
            self._observed_at = observed_at

    def now(self) -> datetime:
        return utc_now() + self._offset
