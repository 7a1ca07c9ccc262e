"""The task's life cycle and delivery outcomes, in plain Python.

Nothing here knows about SQL or HTTP libraries: the repository maps these
values to rows, the dispatcher maps HTTP results to outcomes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

#: The longest URL a task may have: the column's width, and the check before sending.
MAX_URL_CHARS = 2048


class Status(enum.StrEnum):
    """States of a task row; the string values are the public schema contract."""

    #: Scheduled; fires when ``due_at`` has passed (also after a retryable failure).
    WAITING = "waiting"
    #: Held by one controller process until ``lease_expires_at``.
    CLAIMED = "claimed"
    #: The receiver answered 2xx.
    DONE = "done"
    #: Gave up: a final outcome, or the last attempt failed.
    FAILED = "failed"
    #: Cancelled by an operator before it fired; never fires.
    CANCELLED = "cancelled"


FINISHED_STATUSES = (Status.DONE, Status.FAILED, Status.CANCELLED)


class OutcomeClass(enum.StrEnum):
    """How one delivery attempt ended; used as a metrics label and by retry."""

    #: 2xx.
    SUCCESS = "success"
    #: 408, 429 and 5xx: the receiver may accept a later attempt.
    RETRYABLE_STATUS = "retryable_status"
    #: Any other non-2xx status, including 410 "gone".
    FINAL_STATUS = "final_status"
    #: No answer within WEBHOOK_TIMEOUT.
    TIMEOUT = "timeout"
    #: Refused, reset, DNS failure, TLS failure: nothing reached the receiver.
    CONNECT_ERROR = "connect_error"
    #: The row itself cannot be sent (bad URL, method, headers, body) or the
    #: target is not allowed; retrying cannot help.
    INVALID = "invalid"


RETRYABLE_CLASSES = frozenset(
    {OutcomeClass.RETRYABLE_STATUS, OutcomeClass.TIMEOUT, OutcomeClass.CONNECT_ERROR}
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt at one task."""

    task_id: int
    klass: OutcomeClass
    status_code: int | None = None
    #: Short human-readable reason; ``None`` on success.
    error: str | None = None
    #: Seconds the receiver asked us to wait (``Retry-After``), if any.
    retry_after_s: float | None = None
    #: When the request was sent, by the database's clock (naive UTC).
    fired_at: datetime | None = None
    #: Seconds from sending the request to its end.
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task this process holds a lease on, with everything needed to fire it."""

    id: int
    url: str
    due_at: datetime
    #: Attempt number of this delivery, starting at 1.
    attempt: int
    max_attempts: int | None
    method: str | None = None
    headers: str | None = None
    body: str | None = None
    #: Seconds from claim time until ``due_at`` by the database clock (>= 0).
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ClaimBatch:
    """Tasks one claim took, and when its SELECT returned (``time.monotonic()``).

    Each task's ``delay_s`` was measured against the database clock before
    the SELECT returned, so firing ``delay_s`` after ``selected_at`` is
    never early by that clock.
    """

    tasks: list[ClaimedTask]
    selected_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """What one finished attempt does to its row: the one type from outcome to UPDATE.

    ``status`` is DONE, FAILED, or WAITING for a retry at ``next_due_at``.
    The write applies only while the row is still claimed for ``attempt``,
    so the outcome of a superseded attempt is never recorded over a newer one.
    """

    task_id: int
    attempt: int
    status: Status
    #: When the request was sent (database clock); None if nothing was sent.
    fired_at: datetime | None
    status_code: int | None = None
    error: str | None = None
    #: For a retry: when to try next (database clock).
    next_due_at: datetime | None = None
