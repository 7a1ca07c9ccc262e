"""What the dashboard's pages say: reschedule form times, a timer's history, durations."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from timer_controller.api.ui.views import detail_fields, duration, history
from timer_controller.api.ui.writes import FormError, parse_due
from timer_controller.db.browse import Claim, like_prefix
from timer_controller.db.timers import TimerRecord

NOW = datetime(2026, 12, 1, 10, 0, 0)
DAY_S = 86400.0


def due(delay: str = "", at: str = "") -> Any:
    return parse_due(delay, at, now=NOW, max_horizon_s=365 * DAY_S)


@pytest.mark.parametrize(
    ("delay", "at", "expected_at", "expected_delay_s"),
    [
        ("90s", "", None, 90.0),
        ("5m", "", None, 300.0),
        (" 2h ", "", None, 7200.0),
        ("", "2026-12-02T08:30", datetime(2026, 12, 2, 8, 30), None),  # a browser's field: UTC
        ("", "2026-12-02T08:30:15", datetime(2026, 12, 2, 8, 30, 15), None),
        ("", "2026-12-02T09:30:00+01:00", datetime(2026, 12, 2, 8, 30), None),
    ],
)
def test_a_reschedule_form_reads_a_delay_or_a_time(
    delay: str, at: str, expected_at: datetime | None, expected_delay_s: float | None
) -> None:
    result = due(delay, at)
    assert (result.due_at, result.delay_s) == (expected_at, expected_delay_s)


@pytest.mark.parametrize(
    ("delay", "at", "says"),
    [
        ("", "", "either"),
        ("5m", "2026-12-02T08:30", "either"),
        ("soon", "", "Delay"),
        ("-5s", "", "Delay"),
        ("400d", "", "maximum"),
        ("", "2028-01-01T00:00", "maximum"),
        ("", "tomorrow", "Time"),
    ],
)
def test_a_reschedule_form_says_what_is_wrong(delay: str, at: str, says: str) -> None:
    with pytest.raises(FormError, match=says):
        due(delay, at)


def record(**overrides: Any) -> TimerRecord:
    values: dict[str, Any] = {
        "id": 7,
        "url": "https://example.com/hook",
        "method": None,
        "status": "waiting",
        "due_at": NOW + timedelta(minutes=5),
        "attempts": 0,
        "max_attempts": None,
        "last_status_code": None,
        "last_error": None,
        "created_at": NOW - timedelta(minutes=1),
        "fired_at": None,
        "finished_at": None,
        "idempotency_key": None,
        "idempotency_hash": None,
        "header_names": ("x-api-key",),
        "body_bytes": None,
        "time_left_s": 300.0,
    }
    return TimerRecord(**{**values, **overrides})


def test_a_retried_timer_shows_its_last_attempt_then_the_next_due() -> None:
    t = record(attempts=1, fired_at=NOW - timedelta(seconds=10), last_status_code=503)
    events = [what for _, what in history(t, Claim(owner=None, lease_expires_at=None))]
    assert events == ["created", "attempt 1 sent, answered 503", "next attempt due"]


def test_a_claimed_timer_has_not_sent_the_attempt_it_counts() -> None:
    t = record(status="claimed", attempts=2, fired_at=NOW - timedelta(seconds=30))
    claim = Claim(owner="pod-a", lease_expires_at=NOW + timedelta(seconds=60))
    events = [what for _, what in history(t, claim)]
    assert events == ["created", "attempt 1 sent", "claimed by pod-a; the lease ends"]


def test_a_finished_timer_ends_with_its_outcome_in_time_order() -> None:
    t = record(
        status="failed",
        attempts=3,
        fired_at=NOW,
        finished_at=NOW + timedelta(milliseconds=5),
        last_error="HTTP 410",
        last_status_code=410,
    )
    moments = history(t, None)
    assert [what for _, what in moments][-1] == "finished: failed"
    assert moments == sorted(moments, key=lambda m: m[0])


def test_detail_fields_name_headers_but_never_show_their_values_or_the_body() -> None:
    fields = dict(detail_fields(record(body_bytes=42), None, default_max_attempts=3))
    assert fields["header names"] == "x-api-key"
    assert fields["body"] == "42 bytes (not shown)"
    assert fields["attempts"] == "0 of 3 (MAX_ATTEMPTS)"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250 ms"), (4.5, "4.5 s"), (42, "42 s"), (185, "3 min 5 s"), (7800, "2 h 10 min")],
)
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_url_prefix_matches_literally() -> None:
    assert like_prefix("https://x/a_b%c\\") == "https://x/a\\_b\\%c\\\\%"
