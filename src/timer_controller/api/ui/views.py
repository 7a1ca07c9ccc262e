"""What a page says about a timer: formatting, its fields and its history (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from timer_controller.db.browse import Claim
from timer_controller.db.timers import TimerRecord


def iso(moment: datetime | None) -> str:
    """RFC 3339 in UTC with ``Z``, for ``<time datetime>``."""
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def stamp(moment: datetime | None) -> str:
    """``2026-12-01 10:00:00.123``: UTC, readable, to the millisecond."""
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(sep=" ", timespec="milliseconds")


def clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``850 ms``, ``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def ago(now: datetime, then: datetime) -> str:
    return duration((now - then).total_seconds())


def detail_fields(
    t: TimerRecord, claim: Claim | None, *, default_max_attempts: int
) -> list[tuple[str, object]]:
    """Every column of the row, as the page labels it (header values and body withheld)."""
    if t.header_names is None:
        headers: str | None = "(not a JSON object: the controller fails this timer)"
    else:
        headers = ", ".join(t.header_names) or None
    return [
        ("id", t.id),
        ("status", t.status),
        ("url", t.url),
        ("method", t.method or "POST (default)"),
        ("due at (UTC)", stamp(t.due_at)),
        ("time left", duration(t.time_left_s) if t.status == "waiting" else None),
        (
            "attempts",
            f"{t.attempts} of {t.max_attempts}"
            if t.max_attempts
            else f"{t.attempts} of {default_max_attempts} (MAX_ATTEMPTS)",
        ),
        ("last status code", t.last_status_code),
        ("last error", t.last_error),
        ("created at (UTC)", stamp(t.created_at)),
        ("last fired at (UTC)", stamp(t.fired_at) if t.fired_at else None),
        ("finished at (UTC)", stamp(t.finished_at) if t.finished_at else None),
        ("idempotency key", t.idempotency_key),
        ("header names", headers),
        ("body", f"{t.body_bytes} bytes (not shown)" if t.body_bytes else "the default JSON body"),
        ("claimed by", claim.owner if claim else None),
        (
            "lease until (UTC)",
            stamp(claim.lease_expires_at) if claim and claim.lease_expires_at else None,
        ),
    ]


def history(t: TimerRecord, claim: Claim | None) -> list[tuple[datetime, str]]:
    """The events the row still records, in time order."""
    events: list[tuple[datetime, str]] = [(t.created_at, "created")]
    if t.fired_at is not None:
        code = f", answered {t.last_status_code}" if t.last_status_code is not None else ""
        error = f" ({t.last_error})" if t.last_error else ""
        # A claimed row has counted the attempt it is making, not yet sent.
        number = t.attempts - 1 if t.status == "claimed" else t.attempts
        events.append((t.fired_at, f"attempt {number} sent{code}{error}"))
    if t.status == "claimed" and claim is not None and claim.lease_expires_at is not None:
        events.append((claim.lease_expires_at, f"claimed by {claim.owner}; the lease ends"))
    if t.finished_at is not None:
        events.append((t.finished_at, f"finished: {t.status}"))
    elif t.status == "waiting":
        events.append((t.due_at, "next attempt due" if t.attempts else "due"))
    return sorted(events, key=lambda event: event[0])
