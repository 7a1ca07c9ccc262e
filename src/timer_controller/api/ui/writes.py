"""The only changes the dashboard makes, and how a form's reschedule time is read.

Both go through the api's own ``TimerStore`` operations, and a form's time
through the api's own rules (``api/times.py``), so a button does exactly
what ``DELETE`` or ``PATCH /v1/timers/{id}`` does.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime

from timer_controller.api.times import Due, TimeError, resolve
from timer_controller.db.timers import TimerStore, Transition

# What <input type="datetime-local"> sends: no offset, seconds optional.
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?", re.ASCII)


class Result(enum.StrEnum):
    DONE = "done"
    NOT_FOUND = "not_found"
    #: The timer is no longer waiting (claimed, finished or cancelled).
    CONFLICT = "conflict"


class FormError(ValueError):
    """A form value a person typed wrong; the message says what to fix."""


def parse_due(delay: str, at: str, *, now: datetime, max_horizon_s: float) -> Due:
    """A reschedule form's due time: ``delay`` (``90s``, ``5m``) or ``at``.

    ``at`` without an offset, as a browser's date-time field sends it, is UTC.
    """
    delay, at = delay.strip(), at.strip()
    if bool(delay) == bool(at):
        raise FormError("Give either a delay (such as 90s or 5m) or a time, not both or neither.")
    if _LOCAL_TIME.fullmatch(at):
        at = at + (":00" if at.count(":") == 1 else "") + "Z"
    try:
        return resolve(at=at or None, delay=delay or None, now=now, max_horizon_s=max_horizon_s)
    except TimeError as exc:
        raise FormError(f"{'Delay' if delay else 'Time'}: {exc}.") from None


class StoreWrites:
    """Cancel and reschedule through the api's ``TimerStore``."""

    def __init__(self, store: TimerStore) -> None:
        self._store = store

    def cancel(self, timer_id: int) -> Result:
        return _result(self._store.cancel(timer_id=timer_id))

    def reschedule(self, timer_id: int, due: Due) -> Result:
        return _result(
            self._store.reschedule(timer_id=timer_id, due_at=due.due_at, delay_s=due.delay_s)
        )


def _result(transition: Transition) -> Result:
    if transition.timer is None:
        return Result.NOT_FOUND
    return Result.DONE if transition.applied else Result.CONFLICT
