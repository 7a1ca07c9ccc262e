"""When a timer is due: ``at`` (RFC 3339 with an offset) or ``delay`` (pure).

A time beyond the maximum horizon is refused, never clamped. A past ``at``
is accepted (the timer fires at once), as a plain INSERT would be.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from timer_controller.domain.durations import parse_duration_s

# RFC 3339 section 5.6 date-time: the offset is required ("Z" or ±hh:mm).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?P<fraction>\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
#: Nothing is due before this: older times are typos, and DATETIME stops at year 1000.
EARLIEST = datetime(1970, 1, 1)


class TimeError(ValueError):
    """The due time is invalid; the message says how, for a person."""


@dataclass(frozen=True, slots=True)
class Due:
    """Exactly one of: a naive-UTC instant, or seconds from the database's now."""

    due_at: datetime | None = None
    delay_s: float | None = None


def parse_at(raw: str) -> datetime:
    """``raw`` as naive UTC; raises TimeError."""
    match = _RFC3339.fullmatch(raw.strip())
    if match is None:
        raise TimeError(
            f"{raw[:64]!r} is not an RFC 3339 time with an offset, "
            "such as 2026-12-01T10:00:00Z or 2026-12-01T11:00:00+01:00"
        )
    text = raw.strip()
    fraction = match.group("fraction") or ""
    # Python reads at most microseconds; RFC 3339 allows any number of digits.
    text = text.replace(fraction, fraction[:7], 1) if fraction else text
    text = text[: -len(match.group("offset"))] + _offset(match.group("offset"))
    try:
        moment = datetime.fromisoformat(text.replace("t", "T").replace(" ", "T"))
        utc = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise TimeError(f"{raw[:64]!r} is not a valid date and time") from None
    if utc < EARLIEST:
        raise TimeError(f"{raw[:64]!r} is before 1970-01-01T00:00:00Z")
    return utc


def _offset(raw: str) -> str:
    if raw in ("Z", "z"):
        return "+00:00"
    hours, minutes = int(raw[1:3]), int(raw[4:6])
    if hours > 23 or minutes > 59:
        raise TimeError(f"offset {raw} is out of range")
    return raw


def parse_delay_s(raw: float | str) -> float:
    """Seconds in ``raw``: a number >= 0 or a duration such as ``90s``; raises TimeError."""
    if isinstance(raw, str) and not raw.isascii():
        # Python's \d also reads other scripts' digits; the schema's pattern does not.
        raise TimeError(f"{raw!r} is not a duration; use ASCII digits, e.g. 90s, 5m or 2h")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise TimeError(f"{raw!r} is not a finite number of seconds")
    try:
        # Unbounded here: resolve() refuses what passes the api's own horizon.
        seconds = parse_duration_s(raw, max_s=math.inf)
    except ValueError as exc:
        raise TimeError(str(exc)) from None
    if not math.isfinite(seconds):
        raise TimeError(f"{raw!r} is not a finite number of seconds")
    return seconds


def resolve(
    *, at: str | None, delay: float | str | None, now: datetime, max_horizon_s: float
) -> Due:
    """The due time named by exactly one of ``at`` and ``delay``; raises TimeError.

    ``now`` is naive UTC. Both are checked against ``max_horizon_s``.
    """
    if (at is None) == (delay is None):
        raise TimeError("give exactly one of at (an RFC 3339 time) and delay (seconds or 5m)")
    if delay is not None:
        delay_s = parse_delay_s(delay)
        if delay_s > max_horizon_s:
            raise TimeError(f"delay {delay!r} is beyond the maximum of {_span(max_horizon_s)}")
        return Due(delay_s=delay_s)
    assert at is not None
    due_at = parse_at(at)
    if due_at > now + timedelta(seconds=max_horizon_s):
        raise TimeError(f"at {at!r} is beyond the maximum of {_span(max_horizon_s)} from now")
    return Due(due_at=due_at)


def _span(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} days" if days >= 1 else f"{seconds:g} seconds"
