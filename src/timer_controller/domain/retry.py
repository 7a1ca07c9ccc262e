"""When to try again: one pure decision per finished attempt.

| outcome                              | decision                                  |
|--------------------------------------|-------------------------------------------|
| 2xx                                  | done                                      |
| connect error, timeout, 408, 429, 5xx| retry after backoff, until max attempts   |
| other 4xx (incl. 410), invalid target| failed at once                            |

The backoff is exponential with full jitter (AWS architecture blog,
"Exponential Backoff And Jitter"): uniform in [0, min(max, base * 2**(n-1))].
A ``Retry-After`` from the receiver wins, capped at the maximum.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from timer_controller.domain.task import RETRYABLE_CLASSES, OutcomeClass, Status


@dataclass(frozen=True, slots=True)
class Final:
    status: Status  # DONE or FAILED


@dataclass(frozen=True, slots=True)
class RetryAt:
    next_due_at: datetime
    delay_s: float


Decision = Final | RetryAt


def backoff_s(attempt: int, *, base_s: float, max_s: float, rand: float) -> float:
    """Full-jitter delay before attempt ``attempt + 1``; ``rand`` is uniform in [0, 1)."""
    # Cap the exponent: 2**64 seconds is already far past any sane maximum.
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 64))
    return rand * ceiling


def decide(
    *,
    attempt: int,
    max_attempts: int,
    outcome: OutcomeClass,
    retry_after_s: float | None,
    now: datetime,
    base_s: float,
    max_s: float,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What follows attempt number ``attempt`` (1-based) that ended in ``outcome``."""
    if outcome is OutcomeClass.SUCCESS:
        return Final(Status.DONE)
    if outcome not in RETRYABLE_CLASSES or attempt >= max_attempts:
        return Final(Status.FAILED)
    if retry_after_s is not None:
        delay = min(max(retry_after_s, 0.0), max_s)
    else:
        delay = backoff_s(attempt, base_s=base_s, max_s=max_s, rand=rand())
    return RetryAt(next_due_at=now + timedelta(seconds=delay), delay_s=delay)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP date).

    ``now`` is naive UTC. Unparseable values are ignored (None), as RFC 9110 allows.
    """
    if value is None:
        return None
    value = value.strip()
    # isascii: str.isdigit() also accepts "²", which float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
