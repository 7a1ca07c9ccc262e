"""The retry decision as a table: (attempt, outcome, Retry-After, now) → final or next time."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import NamedTuple

import pytest

from timer_controller.delivery.dispatch import classify_status, parse_retry_after
from timer_controller.domain.retry import RetryPolicy, backoff_s, decide
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass, Status

NOW = datetime(2025, 1, 1, 12, 0, 0)  # a Wednesday; naive UTC like the DATETIME columns
BASE_S = 1.0
MAX_S = 3600.0
ALMOST_ONE = 0.9999999999


class Decided(NamedTuple):
    status: Status
    next_due_at: datetime | None

    @property
    def delay_s(self) -> float:
        assert self.next_due_at is not None
        return (self.next_due_at - NOW).total_seconds()


def final(status: Status) -> Decided:
    return Decided(status, None)


def retry_at(when: datetime) -> Decided:
    return Decided(Status.WAITING, when)


def _decide(
    attempt: int,
    max_attempts: int,
    outcome: OutcomeClass,
    retry_after_s: float | None = None,
    *,
    rand: float | Callable[[], float] = 0.5,
    base_s: float = BASE_S,
    max_s: float = MAX_S,
) -> Decided:
    task = ClaimedTask(id=7, url="http://r.test/", due_at=NOW, attempt=attempt, max_attempts=None)
    transition = decide(
        task,
        Outcome(7, outcome, retry_after_s=retry_after_s, fired_at=NOW),
        policy=RetryPolicy(max_attempts=max_attempts, base_s=base_s, max_s=max_s),
        now=NOW,
        rand=rand if callable(rand) else lambda: rand,
    )
    assert (transition.task_id, transition.attempt, transition.fired_at) == (7, attempt, NOW)
    return Decided(transition.status, transition.next_due_at)


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "outcome", "retry_after_s", "expected"),
    [
        # Success is final whatever the attempt number.
        (1, 3, OutcomeClass.SUCCESS, None, Status.DONE),
        (3, 3, OutcomeClass.SUCCESS, None, Status.DONE),
        (7, 3, OutcomeClass.SUCCESS, None, Status.DONE),
        (1, 3, OutcomeClass.SUCCESS, 30.0, Status.DONE),
        # Other 4xx (incl. 410) and invalid targets fail at once, even on attempt 1.
        (1, 3, OutcomeClass.FINAL_STATUS, None, Status.FAILED),
        (1, 10, OutcomeClass.FINAL_STATUS, 30.0, Status.FAILED),
        (1, 3, OutcomeClass.INVALID, None, Status.FAILED),
        (1, 1000, OutcomeClass.INVALID, None, Status.FAILED),
        # Retryable outcomes on the last attempt (or beyond it) fail.
        (1, 1, OutcomeClass.CONNECT_ERROR, None, Status.FAILED),
        (3, 3, OutcomeClass.TIMEOUT, None, Status.FAILED),
        (3, 3, OutcomeClass.RETRYABLE_STATUS, None, Status.FAILED),
        (3, 3, OutcomeClass.RETRYABLE_STATUS, 5.0, Status.FAILED),
        (4, 3, OutcomeClass.CONNECT_ERROR, None, Status.FAILED),
        (10, 10, OutcomeClass.TIMEOUT, 0.0, Status.FAILED),
    ],
)
def test_final_decisions(
    attempt: int,
    max_attempts: int,
    outcome: OutcomeClass,
    retry_after_s: float | None,
    expected: Status,
) -> None:
    assert _decide(attempt, max_attempts, outcome, retry_after_s) == final(expected)


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "outcome", "retry_after_s", "rand", "expected_delay_s"),
    [
        # Full jitter: rand * min(max, base * 2**(attempt-1)).
        (1, 3, OutcomeClass.CONNECT_ERROR, None, 0.5, 0.5),
        (2, 3, OutcomeClass.TIMEOUT, None, 0.5, 1.0),
        (2, 3, OutcomeClass.RETRYABLE_STATUS, None, 0.25, 0.5),
        (5, 10, OutcomeClass.RETRYABLE_STATUS, None, 0.5, 8.0),
        (1, 3, OutcomeClass.TIMEOUT, None, 0.0, 0.0),
        (20, 30, OutcomeClass.CONNECT_ERROR, None, 0.5, 1800.0),  # capped at max before jitter
        # Retry-After wins over the backoff, whatever rand says.
        (1, 3, OutcomeClass.RETRYABLE_STATUS, 30.0, 0.5, 30.0),
        (2, 3, OutcomeClass.RETRYABLE_STATUS, 0.0, 0.9, 0.0),
        (1, 3, OutcomeClass.RETRYABLE_STATUS, 3600.0, 0.0, 3600.0),
        # ... capped at the maximum.
        (1, 3, OutcomeClass.RETRYABLE_STATUS, 7200.0, 0.5, 3600.0),
        (1, 3, OutcomeClass.RETRYABLE_STATUS, 1e23, 0.5, 3600.0),
        # A negative one (never parsed, but decide must not go back in time) is 0.
        (1, 3, OutcomeClass.RETRYABLE_STATUS, -5.0, 0.5, 0.0),
    ],
)
def test_retry_decisions(
    attempt: int,
    max_attempts: int,
    outcome: OutcomeClass,
    retry_after_s: float | None,
    rand: float,
    expected_delay_s: float,
) -> None:
    decision = _decide(attempt, max_attempts, outcome, retry_after_s, rand=rand)

    assert decision == retry_at(NOW + timedelta(seconds=expected_delay_s))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (200, final(Status.DONE)),
        (201, final(Status.DONE)),
        (204, final(Status.DONE)),
        (408, retry_at(NOW + timedelta(seconds=0.5))),
        (429, retry_at(NOW + timedelta(seconds=0.5))),
        (500, retry_at(NOW + timedelta(seconds=0.5))),
        (502, retry_at(NOW + timedelta(seconds=0.5))),
        (503, retry_at(NOW + timedelta(seconds=0.5))),
        (599, retry_at(NOW + timedelta(seconds=0.5))),
        (301, final(Status.FAILED)),  # redirects are not followed by default
        (400, final(Status.FAILED)),
        (401, final(Status.FAILED)),
        (403, final(Status.FAILED)),
        (404, final(Status.FAILED)),
        (409, final(Status.FAILED)),
        (410, final(Status.FAILED)),
        (422, final(Status.FAILED)),
    ],
)
def test_status_code_to_decision_on_first_of_three_attempts(code: int, expected: Decided) -> None:
    assert _decide(1, 3, classify_status(code)) == expected


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 13, 40, 1000])
@pytest.mark.parametrize("outcome", [OutcomeClass.CONNECT_ERROR, OutcomeClass.TIMEOUT])
def test_full_jitter_bounds(attempt: int, outcome: OutcomeClass) -> None:
    ceiling_s = min(MAX_S, BASE_S * 2 ** min(attempt - 1, 64))

    lowest = _decide(attempt, attempt + 1, outcome, rand=0.0)
    highest = _decide(attempt, attempt + 1, outcome, rand=ALMOST_ONE)

    assert lowest == retry_at(NOW)
    assert highest.status is Status.WAITING
    # Rounded to the microsecond the DATETIME(6) column keeps.
    assert ceiling_s * 0.999 < highest.delay_s <= ceiling_s
    assert highest.next_due_at == NOW + timedelta(seconds=highest.delay_s)
    # timedelta rounds to the microsecond the DATETIME(6) column keeps.
    assert highest.next_due_at <= NOW + timedelta(seconds=ceiling_s)


@pytest.mark.parametrize("attempt", [1, 3, 6])
def test_default_rand_stays_within_full_jitter_bounds(attempt: int) -> None:
    ceiling_s = min(MAX_S, BASE_S * 2 ** (attempt - 1))
    delays: list[float] = []
    for _ in range(300):
        decision = _decide(attempt, attempt + 1, OutcomeClass.TIMEOUT, rand=random.random)
        assert decision.status is Status.WAITING
        delays.append(decision.delay_s)

    assert all(0.0 <= d <= ceiling_s for d in delays)
    assert len(set(delays)) > 1, "full jitter must actually vary the delay"


def test_rand_is_not_drawn_when_retry_after_is_given() -> None:
    def no_rand() -> float:
        raise AssertionError("rand called although Retry-After decides the delay")

    decision = _decide(1, 3, OutcomeClass.RETRYABLE_STATUS, 12.0, rand=no_rand)

    assert decision == retry_at(NOW + timedelta(seconds=12))


@pytest.mark.parametrize(
    ("attempt", "base_s", "max_s", "expected_ceiling_s"),
    [
        (1, 1.0, 3600.0, 1.0),
        (2, 1.0, 3600.0, 2.0),
        (3, 1.0, 3600.0, 4.0),
        (10, 1.0, 3600.0, 512.0),
        (12, 1.0, 3600.0, 2048.0),
        (13, 1.0, 3600.0, 3600.0),
        (100, 1.0, 3600.0, 3600.0),
        (1, 0.5, 10.0, 0.5),
        (4, 0.5, 10.0, 4.0),
        (5, 0.5, 10.0, 8.0),
        (6, 0.5, 10.0, 10.0),
        (1, 30.0, 20.0, 20.0),  # the max caps even the first delay
    ],
)
def test_backoff_ceiling(
    attempt: int, base_s: float, max_s: float, expected_ceiling_s: float
) -> None:
    assert backoff_s(attempt, base_s=base_s, max_s=max_s, rand=1.0) == expected_ceiling_s
    assert backoff_s(attempt, base_s=base_s, max_s=max_s, rand=0.5) == expected_ceiling_s / 2
    assert backoff_s(attempt, base_s=base_s, max_s=max_s, rand=0.0) == 0.0


def test_backoff_doubles_until_the_cap() -> None:
    ceilings = [backoff_s(n, base_s=1.0, max_s=3600.0, rand=1.0) for n in range(1, 20)]

    growing = [c for c in ceilings if c < 3600.0]
    assert growing == [2.0**i for i in range(len(growing))]
    assert ceilings[len(growing) :] == [3600.0] * (len(ceilings) - len(growing))
    assert ceilings == sorted(ceilings)


@pytest.mark.parametrize("attempt", [64, 65, 1024, 10**6, 10**18, 2**63 + 1])
def test_huge_attempts_do_not_overflow(attempt: int) -> None:
    assert backoff_s(attempt, base_s=1.0, max_s=3600.0, rand=ALMOST_ONE) < 3600.0
    unbounded = backoff_s(attempt, base_s=1.0, max_s=math.inf, rand=1.0)
    assert math.isfinite(unbounded)
    assert unbounded == 2.0 ** min(attempt - 1, 64)
    decision = _decide(attempt, attempt + 1, OutcomeClass.CONNECT_ERROR, rand=ALMOST_ONE)
    assert decision.status is Status.WAITING
    assert decision.delay_s <= MAX_S


@pytest.mark.parametrize(
    ("value", "expected_s"),
    [
        (None, None),
        ("120", 120.0),
        ("0", 0.0),
        (" 5 ", 5.0),
        ("86400", 86400.0),
        ("99999999999999999999999", 1e23),
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
        ("Wed, 01 Jan 2025 12:00:30 -0000", 30.0),
        ("Wed, 01 Jan 2025 13:00:30 +0100", 30.0),
        ("Thu, 02 Jan 2025 12:00:00 GMT", 86400.0),
        ("Wed, 01 Jan 2025 12:00:00 GMT", 0.0),
        # A date in the past means "now", never a negative delay.
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        # Garbage is ignored, as RFC 9110 allows.
        ("", None),
        ("   ", None),
        ("abc", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("5s", None),
        ("Mon, 01 Jan 99999 00:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected_s: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected_s


@pytest.mark.parametrize("value", ["²", "1²", "⑤"])
def test_parse_retry_after_ignores_non_decimal_digits(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_survives_a_date_at_the_end_of_the_calendar() -> None:
    seconds = parse_retry_after("Fri, 31 Dec 9999 23:59:59 -1200", now=NOW)

    assert seconds is None or seconds > 0
