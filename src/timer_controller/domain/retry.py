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
from datetime import datetime, timedelta

from timer_controller.domain.task import (
    RETRYABLE_CLASSES,
    ClaimedTask,
    Outcome,
    OutcomeClass,
    Status,
    Transition,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: For rows whose own ``max_attempts`` is NULL.
    max_attempts: int
    base_s: float
    max_s: float


def backoff_s(attempt: int, *, base_s: float, max_s: float, rand: float) -> float:
    """Full-jitter delay before attempt ``attempt + 1``; ``rand`` is uniform in [0, 1)."""
    # Cap the exponent: 2**64 seconds is already far past any sane maximum.
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 64))
    return rand * ceiling


def decide(
    task: ClaimedTask,
    outcome: Outcome,
    *,
    policy: RetryPolicy,
    now: datetime,
    rand: Callable[[], float] = random.random,
) -> Transition:
    """What follows ``task``'s attempt that ended in ``outcome``; ``now`` is the database's."""
    status, next_due_at = Status.FAILED, None
    max_attempts = task.max_attempts or policy.max_attempts
    if outcome.klass is OutcomeClass.SUCCESS:
        status = Status.DONE
    elif outcome.klass in RETRYABLE_CLASSES and task.attempt < max_attempts:
        if outcome.retry_after_s is not None:
            delay_s = min(max(outcome.retry_after_s, 0.0), policy.max_s)
        else:
            delay_s = backoff_s(task.attempt, base_s=policy.base_s, max_s=policy.max_s, rand=rand())
        status, next_due_at = Status.WAITING, now + timedelta(seconds=delay_s)
    return Transition(
        task_id=task.id,
        attempt=task.attempt,
        status=status,
        fired_at=outcome.fired_at,
        status_code=outcome.status_code,
        error=outcome.error,
        next_due_at=next_due_at,
    )
