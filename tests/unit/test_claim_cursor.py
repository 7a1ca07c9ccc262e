"""ClaimCursor: when a claim may resume where the last one ended (pure, no database)."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from timer_controller.db import statements as sql
from timer_controller.db.prepared import RESUME_FOR_S, ClaimCursor

DUE = datetime(2026, 12, 1, 12, 0, 0, 123456)
NO_SKIP: tuple[str, ...] = ()


@pytest.fixture
def monotonic_now() -> float:
    return time.monotonic()


def _full_claim(
    cursor: ClaimCursor, *, at: float, last_id: int = 10, resumed: bool = False
) -> None:
    cursor.resume_after(NO_SKIP)
    cursor.ended((DUE, last_id), full=True, skip_prefixes=NO_SKIP, resumed=resumed, started=at)


def test_a_full_claim_lets_the_next_resume_after_its_last_row(monotonic_now: float) -> None:
    cursor = ClaimCursor()
    assert cursor.resume_after(NO_SKIP) is None  # the first claim starts from the oldest row
    _full_claim(cursor, at=monotonic_now)
    assert cursor.resume_after(NO_SKIP) == {sql.AFTER_DUE: DUE, sql.AFTER_ID: 10}


def test_a_short_claim_or_a_zero_date_makes_the_next_start_from_the_oldest(
    monotonic_now: float,
) -> None:
    cursor = ClaimCursor()
    _full_claim(cursor, at=monotonic_now)
    cursor.resume_after(NO_SKIP)
    cursor.ended((DUE, 12), full=False, skip_prefixes=NO_SKIP, resumed=True, started=0.0)
    assert cursor.resume_after(NO_SKIP) is None
    cursor.ended((None, 13), full=True, skip_prefixes=NO_SKIP, resumed=False, started=0.0)
    assert cursor.resume_after(NO_SKIP) is None


def test_other_skipped_destinations_make_the_next_start_from_the_oldest(
    monotonic_now: float,
) -> None:
    cursor = ClaimCursor()
    _full_claim(cursor, at=monotonic_now)
    assert cursor.resume_after(("http://full.test",)) is None


def test_claims_resume_for_at_most_resume_for_s_after_one_from_the_oldest(
    monotonic_now: float,
) -> None:
    cursor = ClaimCursor()
    _full_claim(cursor, at=monotonic_now - RESUME_FOR_S / 2)
    # A resumed claim keeps the time of the claim that started from the oldest row.
    _full_claim(cursor, at=monotonic_now, last_id=20, resumed=True)
    assert cursor.resume_after(NO_SKIP) == {sql.AFTER_DUE: DUE, sql.AFTER_ID: 20}
    _full_claim(cursor, at=monotonic_now - 2 * RESUME_FOR_S)
    assert cursor.resume_after(NO_SKIP) is None


def test_a_forget_while_a_claim_runs_is_not_lost(monotonic_now: float) -> None:
    cursor = ClaimCursor()
    cursor.resume_after(NO_SKIP)
    cursor.forget()  # rows handed back on another thread while the claim ran
    cursor.ended((DUE, 10), full=True, skip_prefixes=NO_SKIP, resumed=False, started=monotonic_now)
    assert cursor.resume_after(NO_SKIP) is None


def test_each_thread_resumes_from_its_own_claims(monotonic_now: float) -> None:
    cursor = ClaimCursor()
    _full_claim(cursor, at=monotonic_now)
    seen: list[object] = []
    other = threading.Thread(target=lambda: seen.append(cursor.resume_after(NO_SKIP)))
    other.start()
    other.join(timeout=10)
    assert seen == [None]
    assert cursor.resume_after(NO_SKIP) is not None
