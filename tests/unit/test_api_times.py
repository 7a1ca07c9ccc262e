"""When a timer created over the api is due: ``at`` and ``delay`` (pure)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from timer_controller.api.times import Due, TimeError, parse_at, parse_delay_s, resolve

NOW = datetime(2026, 12, 1, 10, 0, 0)
YEAR_S = 365 * 86400.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-12-01T10:00:00Z", datetime(2026, 12, 1, 10, 0, 0)),
        ("2026-12-01t10:00:00z", datetime(2026, 12, 1, 10, 0, 0)),
        ("2026-12-01 10:00:00Z", datetime(2026, 12, 1, 10, 0, 0)),
        ("2026-12-01T11:30:00+01:30", datetime(2026, 12, 1, 10, 0, 0)),
        ("2026-12-01T05:00:00-05:00", datetime(2026, 12, 1, 10, 0, 0)),
        ("2026-12-01T10:00:00.5Z", datetime(2026, 12, 1, 10, 0, 0, 500000)),
        ("2026-12-01T10:00:00.123456789Z", datetime(2026, 12, 1, 10, 0, 0, 123456)),
        ("2027-01-01T00:30:00+01:00", datetime(2026, 12, 31, 23, 30, 0)),
    ],
)
def test_at_is_rfc3339_with_an_offset_read_as_naive_utc(raw: str, expected: datetime) -> None:
    assert parse_at(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("2026-12-01T10:00:00", "not an RFC 3339 time with an offset"),
        ("2026-12-01", "not an RFC 3339 time with an offset"),
        ("1796119200", "not an RFC 3339 time with an offset"),
        ("tomorrow", "not an RFC 3339 time with an offset"),
        ("2026-12-01T10:00Z", "not an RFC 3339 time with an offset"),
        ("2026-13-01T10:00:00Z", "not a valid date and time"),
        ("2026-02-30T10:00:00Z", "not a valid date and time"),
        ("2026-12-01T24:00:00Z", "not a valid date and time"),
        ("2026-12-01T10:00:60Z", "not a valid date and time"),
        ("2026-12-01T10:00:00+24:00", "offset +24:00 is out of range"),
        ("0001-01-01T00:00:00+01:00", "not a valid date and time"),
        ("9999-12-31T23:59:59-01:00", "not a valid date and time"),
        ("1969-12-31T23:59:59Z", "before 1970-01-01"),
        ("２０２６-12-01T10:00:00Z", "not an RFC 3339 time"),
    ],
)
def test_a_bad_at_says_what_is_wrong(raw: str, reason: str) -> None:
    with pytest.raises(TimeError, match=re.escape(reason)):
        parse_at(raw)


@pytest.mark.parametrize(
    ("raw", "expected_s"),
    [
        (0, 0.0),
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("7d", 604800.0),
        ("30", 30.0),
    ],
)
def test_delay_is_seconds_or_a_duration(raw: float | str, expected_s: float) -> None:
    assert parse_delay_s(raw) == expected_s


@pytest.mark.parametrize("raw", [-1, -0.001, "-5m", "5 minutes", "5M", "", "h", "1e3s"])
def test_a_bad_delay_is_refused(raw: float | str) -> None:
    with pytest.raises(TimeError):
        parse_delay_s(raw)


@pytest.mark.parametrize("raw", [float("inf"), float("nan")])
def test_a_delay_must_be_finite(raw: float) -> None:
    with pytest.raises(TimeError):
        parse_delay_s(raw)


def test_resolve_a_delay_is_left_to_the_database_clock() -> None:
    assert resolve(at=None, delay="5m", now=NOW, max_horizon_s=YEAR_S) == Due(delay_s=300.0)


def test_resolve_an_at() -> None:
    due = resolve(at="2026-12-02T10:00:00Z", delay=None, now=NOW, max_horizon_s=YEAR_S)

    assert due == Due(due_at=datetime(2026, 12, 2, 10, 0, 0))


def test_a_past_at_is_accepted_and_fires_at_once() -> None:
    due = resolve(at="2026-01-01T00:00:00Z", delay=None, now=NOW, max_horizon_s=YEAR_S)

    assert due.due_at == datetime(2026, 1, 1)


@pytest.mark.parametrize(("at", "delay"), [(None, None), ("2026-12-01T10:00:00Z", 5)])
def test_exactly_one_of_at_and_delay(at: str | None, delay: float | None) -> None:
    with pytest.raises(TimeError, match="exactly one of at"):
        resolve(at=at, delay=delay, now=NOW, max_horizon_s=YEAR_S)


def test_the_horizon_itself_is_allowed() -> None:
    at = (NOW + timedelta(seconds=YEAR_S)).isoformat() + "Z"

    assert resolve(at=at, delay=None, now=NOW, max_horizon_s=YEAR_S).due_at is not None
    assert resolve(at=None, delay=YEAR_S, now=NOW, max_horizon_s=YEAR_S).delay_s == YEAR_S


@pytest.mark.parametrize(
    ("at", "delay"),
    [
        (None, YEAR_S + 0.001),
        (None, "366d"),
        (None, "53w"),
        (None, 1e300),
        ((NOW + timedelta(seconds=YEAR_S + 1)).isoformat() + "Z", None),
        ("9999-12-31T23:59:59Z", None),
    ],
)
def test_beyond_the_horizon_is_refused_not_clamped(at: str | None, delay: float | None) -> None:
    with pytest.raises(TimeError, match="beyond the maximum of 365 days"):
        resolve(at=at, delay=delay, now=NOW, max_horizon_s=YEAR_S)
