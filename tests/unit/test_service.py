"""The loop's pure decisions: how many tasks to claim, and the transition an outcome makes."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta

import pytest

from timer_controller.domain.retry import RetryPolicy, decide
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass, Status, Transition
from timer_controller.runtime.controller import claim_size

NOW = datetime(2025, 6, 1, 12, 0, 0)
FIRED_AT = datetime(2025, 6, 1, 11, 59, 59, 500000)


@pytest.mark.parametrize(
    ("free_slots", "batch_size", "max_in_flight", "expected"),
    [
        (100, 10, 100, 10),  # idle pod: a full batch
        (10, 10, 100, 10),
        (9, 10, 100, 9),  # never more than the free slots
        (5, 10, 100, 5),  # half a batch free: claim it
        (4, 10, 100, 0),  # fewer than half a batch: wait
        (1, 10, 100, 0),
        (0, 10, 100, 0),
        (-3, 10, 100, 0),  # over-committed (cannot happen, but must not claim)
        (1, 1, 1, 1),
        (0, 1, 1, 0),
        (1, 1, 100, 1),
        (1, 2, 100, 1),
        (50, 1000, 50, 50),  # the batch is capped by MAX_IN_FLIGHT
        (25, 1000, 50, 25),
        (24, 1000, 50, 0),
        (7, 10, 7, 7),
        (3, 10, 7, 3),
        (2, 10, 7, 0),
        (1000, 100, 1000, 100),
        (600, 100, 1000, 100),
        (50, 100, 1000, 50),
        (49, 100, 1000, 0),
    ],
)
def test_claim_size(free_slots: int, batch_size: int, max_in_flight: int, expected: int) -> None:
    assert claim_size(
        free_slots=free_slots, batch_size=batch_size, max_in_flight=max_in_flight
    ) == (expected)


def test_claim_size_never_exceeds_free_slots_batch_or_max_in_flight() -> None:
    for free, batch, cap in itertools.product(range(-2, 40), range(1, 25), range(1, 25)):
        size = claim_size(free_slots=free, batch_size=batch, max_in_flight=cap)
        assert 0 <= size <= max(free, 0), (free, batch, cap)
        assert size <= min(batch, cap), (free, batch, cap)
        if free >= min(batch, cap):
            assert size == min(batch, cap), (free, batch, cap)


def _policy(*, max_attempts: int = 3, backoff_max_s: float = 3600.0) -> RetryPolicy:
    return RetryPolicy(max_attempts=max_attempts, base_s=1.0, max_s=backoff_max_s)


def _task(*, attempt: int = 1, max_attempts: int | None = None) -> ClaimedTask:
    return ClaimedTask(
        id=77,
        url="http://hooks.example.com/",
        due_at=datetime(2025, 6, 1, 11, 59, 59),
        attempt=attempt,
        max_attempts=max_attempts,
    )


def _outcome(
    klass: OutcomeClass,
    *,
    code: int | None = None,
    error: str | None = None,
    retry_after_s: float | None = None,
) -> Outcome:
    return Outcome(
        77, klass, status_code=code, error=error, retry_after_s=retry_after_s, fired_at=FIRED_AT
    )


@pytest.mark.parametrize(
    ("task", "outcome", "expected"),
    [
        (
            _task(),
            _outcome(OutcomeClass.SUCCESS, code=200),
            Transition(77, 1, Status.DONE, FIRED_AT, status_code=200),
        ),
        (
            _task(attempt=3),
            _outcome(OutcomeClass.SUCCESS, code=204),
            Transition(77, 1, Status.DONE, FIRED_AT, status_code=204),
        ),
        (
            _task(),
            _outcome(OutcomeClass.FINAL_STATUS, code=410, error="HTTP 410"),
            Transition(77, 1, Status.FAILED, FIRED_AT, status_code=410, error="HTTP 410"),
        ),
        (
            _task(),
            _outcome(OutcomeClass.INVALID, error="empty URL"),
            Transition(77, 1, Status.FAILED, FIRED_AT, error="empty URL"),
        ),
        (
            _task(),
            _outcome(OutcomeClass.RETRYABLE_STATUS, code=503, error="HTTP 503", retry_after_s=30),
            Transition(
                77,
                1,
                Status.WAITING,
                FIRED_AT,
                status_code=503,
                error="HTTP 503",
                next_due_at=NOW + timedelta(seconds=30),
            ),
        ),
        (
            _task(attempt=2),
            _outcome(OutcomeClass.RETRYABLE_STATUS, code=429, error="HTTP 429", retry_after_s=0),
            Transition(
                77, 1, Status.WAITING, FIRED_AT, status_code=429, error="HTTP 429", next_due_at=NOW
            ),
        ),
        # The last attempt of the configured MAX_ATTEMPTS fails.
        (
            _task(attempt=3),
            _outcome(OutcomeClass.TIMEOUT, error="timed out after 10s"),
            Transition(77, 1, Status.FAILED, FIRED_AT, error="timed out after 10s"),
        ),
        (
            _task(attempt=3),
            _outcome(OutcomeClass.RETRYABLE_STATUS, code=500, error="HTTP 500", retry_after_s=5),
            Transition(77, 1, Status.FAILED, FIRED_AT, status_code=500, error="HTTP 500"),
        ),
        # A per-task max_attempts overrides the configured one, both ways.
        (
            _task(attempt=3, max_attempts=5),
            _outcome(OutcomeClass.CONNECT_ERROR, error="connection refused", retry_after_s=None),
            None,  # a retry; next_due_at checked by bounds below
        ),
        (
            _task(attempt=1, max_attempts=1),
            _outcome(OutcomeClass.CONNECT_ERROR, error="connection refused"),
            Transition(77, 1, Status.FAILED, FIRED_AT, error="connection refused"),
        ),
        (
            _task(attempt=5, max_attempts=5),
            _outcome(OutcomeClass.RETRYABLE_STATUS, code=502, error="HTTP 502", retry_after_s=1),
            Transition(77, 1, Status.FAILED, FIRED_AT, status_code=502, error="HTTP 502"),
        ),
    ],
)
def test_decide(task: ClaimedTask, outcome: Outcome, expected: Transition | None) -> None:
    record = decide(task, outcome, policy=_policy(max_attempts=3), now=NOW)

    if expected is not None:
        assert record == dataclasses.replace(expected, attempt=task.attempt)
    else:
        assert record.status is Status.WAITING
        assert record.error == outcome.error
        assert record.next_due_at is not None
        # Attempt 3: full jitter in [0, base * 2**2].
        assert NOW <= record.next_due_at <= NOW + timedelta(seconds=4)


@pytest.mark.parametrize("attempt", [1, 2, 4, 9])
def test_transition_retry_time_is_within_the_backoff_window(attempt: int) -> None:
    task = _task(attempt=attempt, max_attempts=10)
    outcome = _outcome(OutcomeClass.TIMEOUT, error="timed out after 10s")

    records = [decide(task, outcome, policy=_policy(), now=NOW) for _ in range(50)]

    ceiling = timedelta(seconds=min(3600.0, 2.0 ** (attempt - 1)))
    for record in records:
        assert record.status is Status.WAITING
        assert record.next_due_at is not None
        assert NOW <= record.next_due_at <= NOW + ceiling


def test_transition_caps_retry_after_at_the_configured_maximum() -> None:
    outcome = _outcome(OutcomeClass.RETRYABLE_STATUS, code=503, retry_after_s=86400)

    record = decide(_task(), outcome, policy=_policy(backoff_max_s=60.0), now=NOW)

    assert record.next_due_at == NOW + timedelta(seconds=60)


def test_transition_falls_back_to_the_configured_max_attempts() -> None:
    outcome = _outcome(OutcomeClass.TIMEOUT, error="timed out after 10s")

    retried = decide(
        _task(attempt=4, max_attempts=None), outcome, policy=_policy(max_attempts=5), now=NOW
    )
    failed = decide(
        _task(attempt=5, max_attempts=None), outcome, policy=_policy(max_attempts=5), now=NOW
    )

    assert retried.status is Status.WAITING
    assert failed.status is Status.FAILED


@pytest.mark.parametrize(
    ("free_slots", "batch_size", "max_in_flight", "expected"),
    [
        (500, 500, 500, 500),
        (499, 500, 500, 0),  # half a batch is not enough: a hand-off frees a message at a time
        (300, 500, 500, 0),
        (10, 10, 100, 10),
        (9, 10, 100, 0),
        (50, 1000, 50, 50),  # the batch is still capped by MAX_IN_FLIGHT
        (1, 1, 1, 1),
    ],
)
def test_claim_size_for_whole_batches(
    free_slots: int, batch_size: int, max_in_flight: int, expected: int
) -> None:
    assert claim_size(
        free_slots=free_slots,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        whole_batches=True,
    ) == (expected)
