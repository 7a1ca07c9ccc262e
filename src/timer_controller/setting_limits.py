"""The bounds of the settings, and the relations between them (pure).

Every duration is finite and at most its maximum here (the README's settings
table lists them). Each maximum is far above any sane value and far below
what breaks: asyncio and aiohttp timeouts, and MySQL DATETIME arithmetic,
which ends at year 9999 and turns an overflow into a silent NULL.
"""

from __future__ import annotations

from typing import Any

from timer_controller.domain.durations import DAY_S, format_duration

MAX_RECONNECT_WAIT_S = 300.0
MAX_POLL_INTERVAL_S = 60.0
MAX_LOOKAHEAD_S = 3600.0
MAX_LEASE_S = DAY_S
MAX_SHUTDOWN_GRACE_S = 3600.0
MAX_FLUSH_INTERVAL_S = 10.0
MAX_WEBHOOK_TIMEOUT_S = 3600.0
MAX_BACKOFF_S = 365 * DAY_S
MAX_RETENTION_S = 3650 * DAY_S
MAX_RETRY_NUMBER = 1000
# MEDIUMTEXT holds at most 16 MiB - 1 bytes: no stored body is larger.
MAX_REQUEST_BODY_BYTES = 16 * 1024 * 1024 - 1
# A *_FILE holds one value; reading a huge file by mistake must not fill memory.
MAX_FILE_BYTES = 64 * 1024
# An error message longer than this is cut (the echoed value is cut first).
MAX_MESSAGE_CHARS = 300


def relation_problem(
    *,
    lease_s: float,
    webhook_timeout_s: float,
    flush_interval_s: float,
    poll_interval_s: float,
    lookahead_s: float | None,
    backoff_base_s: float,
    backoff_max_s: float,
) -> str | None:
    """Why the controller's settings cannot go together, or None.

    Each relation is one that broke delivery when it did not hold.
    """
    lease, timeout, flush = lease_s, webhook_timeout_s, flush_interval_s
    if lease <= timeout:
        return (
            f"LEASE_TIME ({lease:g}s) must be greater than WEBHOOK_TIMEOUT ({timeout:g}s), "
            "or a slow request would outlive its claim and fire twice"
        )
    if lease <= timeout + flush:
        # The outcome write only lands while the claim is held; after the
        # lease, the task goes back to waiting and fires again.
        return (
            f"LEASE_TIME ({lease:g}s) must be greater than WEBHOOK_TIMEOUT + FLUSH_INTERVAL "
            f"({timeout + flush:g}s), or outcomes would be written after their claim expired "
            "and the task would fire again"
        )
    # LOOKAHEAD may exceed LEASE_TIME: a claim's lease runs from the claim and
    # its pod renews it (runtime/leases.py), so a pod that dies strands its
    # claims for one LEASE_TIME, however far ahead they were taken.
    if 3 * poll_interval_s >= lease:
        # /healthz calls the loop stalled after 3 poll intervals without a tick.
        return (
            f"LEASE_TIME ({lease:g}s) must be greater than 3 x POLL_INTERVAL "
            f"({3 * poll_interval_s:g}s), or a stalled pod would still look healthy "
            "after its claims expired and fired elsewhere"
        )
    if backoff_max_s < backoff_base_s:
        return "RETRY_BACKOFF_MAX must be at least RETRY_BACKOFF_BASE"
    return None


def friendly(kind: str, ctx: dict[str, Any], *, is_duration: bool, message: str) -> str:
    """Pydantic's wording for a bound, in the settings' units."""
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "less_than_equal" and is_duration:
        most_s = float(ctx["le"])
        return f"must be at most {format_duration(most_s)} ({most_s:g} seconds)"
    return message
