"""The messages controllers and workers exchange through the broker (pure).

A *hand-off* carries everything a worker needs to fire one attempt of a
task; an *outcome* carries how it ended, plus the hand-off fields the
recording controller needs (attempt, max_attempts, due time), so any
controller can record any task's outcome without asking who published it.

Both travel in batches: one message (version 2) holds up to ``MAX_BATCH``
hand-offs (``{"v": 2, "tasks": [...]}``) or outcomes (``{"v": 2,
"outcomes": [...]}``); a lone one (version 1) is still read, and a hand-off
of one task is still written as version 1. Every message is a JSON object
with a version ``v``. Decoding is strict: anything else on the wire raises
``MalformedMessage`` with a reason, so a poison message is dead-lettered
instead of crashing or stalling a consumer. A batch of outcomes is dead-lettered whole; in a batch
of hand-offs one bad task fails alone (``BadHandOff``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

VERSION = 1
#: A batch of outcomes: ``{"v": 2, "outcomes": [...]}``.
OUTCOMES_VERSION = 2
#: A batch of hand-offs: ``{"v": 2, "tasks": [...]}``.
HANDOFFS_VERSION = 2
#: Most outcomes (or hand-offs) one message may carry.
MAX_BATCH = 1000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_T = TypeVar("_T")


class MalformedMessage(ValueError):
    """A message body is not a valid hand-off or outcome; the text says why."""


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """An outcome as it travels back: the attempt it belongs to and its result."""

    task_id: int
    attempt: int
    max_attempts: int | None
    due_at: datetime
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class BadHandOff:
    """A task in a batch of hand-offs that cannot be fired, and why.

    ``task`` holds what its outcome needs (id, attempt, max attempts, due
    time; no URL) when those fields were readable, else None.
    """

    task: ClaimedTask | None
    reason: str


def encode_handoff(task: ClaimedTask) -> bytes:
    """One task on its own (version 1)."""
    return pack_handoffs([handoff_part(task)])


def handoff_part(task: ClaimedTask) -> bytes:
    """``task``'s entry in a hand-off message, for ``pack_handoffs``."""
    return _dump(
        {
            "id": task.id,
            "attempt": task.attempt,
            "max_attempts": task.max_attempts,
            "url": task.url,
            "method": task.method,
            "headers": task.headers,
            "body": task.body,
            "due_at": _time(task.due_at),
        }
    )


#: The most ``pack_handoffs`` adds around the entries of a batch, in bytes
#: (``finish_within_s`` written in at most 12 characters).
BATCH_OVERHEAD_BYTES = len(b'{"v":2,"finish_within_s":,"tasks":[]}') + 12


@dataclass(frozen=True, slots=True)
class HandOffMessage:
    """What one hand-off message carries."""

    tasks: list[ClaimedTask | BadHandOff]
    #: A task's request must end within this many seconds of the message's
    #: delivery (LEASE_TIME): a worker that cannot start it in time, less its
    #: WEBHOOK_TIMEOUT, leaves it unfired and its lease returns it. None: no
    #: limit (a message from before batches, whose task started at once).
    finish_within_s: float | None = None


def pack_handoffs(parts: Sequence[bytes], *, finish_within_s: float | None = None) -> bytes:
    """The message carrying ``parts`` (from ``handoff_part``): version 1 for one.

    Joined as bytes, so each task is encoded once and a batch's size is
    known before it is built: at most the sum of its parts, the commas
    between them and BATCH_OVERHEAD_BYTES.
    """
    head = b"" if finish_within_s is None else b'"finish_within_s":%.3f,' % finish_within_s
    if len(parts) == 1:
        return b'{"v":1,' + head + parts[0][1:]
    if not 1 <= len(parts) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} hand-offs, not {len(parts)}")
    return b'{"v":2,' + head + b'"tasks":[' + b",".join(parts) + b"]}"


def decode_handoff(raw: bytes) -> ClaimedTask:
    """The task a version-1 hand-off describes; raises MalformedMessage."""
    return _task(_load(raw, "hand-off"))


def decode_handoffs(raw: bytes) -> list[ClaimedTask | BadHandOff]:
    """Every task a hand-off message carries (``decode_handoff_message``)."""
    return decode_handoff_message(raw).tasks


def decode_handoff_message(raw: bytes) -> HandOffMessage:
    """A hand-off message, a batch or a lone task.

    A message that is not a hand-off at all (or a lone task with a bad
    field) raises MalformedMessage; in a batch, a bad task is a BadHandOff
    in its place and the others are read as usual.
    """
    data = _load(raw, "hand-off", versions=(VERSION, HANDOFFS_VERSION))
    finish_within_s = (
        _field(data, "finish_within_s", _seconds) if "finish_within_s" in data else None
    )
    if data["v"] == VERSION:
        return HandOffMessage([_task(data)], finish_within_s)
    items = data.get("tasks")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise MalformedMessage(f"field 'tasks' is not a list of 1 to {MAX_BATCH} hand-offs")
    tasks = [_batched_task(index, item) for index, item in enumerate(items)]
    return HandOffMessage(tasks, finish_within_s)


def _batched_task(index: int, item: Any) -> ClaimedTask | BadHandOff:
    if not isinstance(item, dict):
        return BadHandOff(None, f"task {index} is not a JSON object")
    try:
        return _task(item)
    except MalformedMessage as exc:
        reason = f"task {index}: {exc}"
    try:
        stub = ClaimedTask(
            id=_field(item, "id", _positive_int),
            url="",
            due_at=_field(item, "due_at", _datetime),
            attempt=_field(item, "attempt", _positive_int),
            max_attempts=_field(item, "max_attempts", _optional(_positive_int)),
        )
    except MalformedMessage:
        return BadHandOff(None, reason)
    return BadHandOff(stub, reason)


def _task(data: dict[str, Any]) -> ClaimedTask:
    return ClaimedTask(
        id=_field(data, "id", _positive_int),
        url=_field(data, "url", _str),
        due_at=_field(data, "due_at", _datetime),
        attempt=_field(data, "attempt", _positive_int),
        max_attempts=_field(data, "max_attempts", _optional(_positive_int)),
        method=_field(data, "method", _optional(_str)),
        headers=_field(data, "headers", _optional(_str)),
        body=_field(data, "body", _optional(_str)),
    )


def encode_outcome(task: ClaimedTask, outcome: Outcome) -> bytes:
    """One outcome on its own (version 1), as workers sent them before batches."""
    return _dump({"v": VERSION, **_outcome_fields(task, outcome)})


def encode_outcomes(reports: Sequence[tuple[ClaimedTask, Outcome]]) -> bytes:
    """Several outcomes in one message (version 2); at most MAX_BATCH of them."""
    if not 1 <= len(reports) <= MAX_BATCH:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH} outcomes, not {len(reports)}")
    return _dump({"v": OUTCOMES_VERSION, "outcomes": [_outcome_fields(t, o) for t, o in reports]})


def _outcome_fields(task: ClaimedTask, outcome: Outcome) -> dict[str, Any]:
    return {
        "id": task.id,
        "attempt": task.attempt,
        "max_attempts": task.max_attempts,
        "due_at": _time(task.due_at),
        "class": outcome.klass.value,
        "status_code": outcome.status_code,
        "error": outcome.error,
        "retry_after_s": outcome.retry_after_s,
        "fired_at": None if outcome.fired_at is None else _time(outcome.fired_at),
        "duration_s": outcome.duration_s,
    }


def decode_outcome(raw: bytes) -> TaskOutcome:
    """The outcome a version-1 message reports; raises MalformedMessage."""
    return _task_outcome(_load(raw, "outcome"))


def decode_outcomes(raw: bytes) -> list[TaskOutcome]:
    """Every outcome a message reports, a batch or a lone one; raises MalformedMessage.

    One malformed outcome makes the whole message malformed.
    """
    data = _load(raw, "outcome", versions=(VERSION, OUTCOMES_VERSION))
    if data["v"] == VERSION:
        return [_task_outcome(data)]
    items = data.get("outcomes")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise MalformedMessage(f"field 'outcomes' is not a list of 1 to {MAX_BATCH} outcomes")
    decoded = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedMessage(f"outcome {index} is not a JSON object")
        try:
            decoded.append(_task_outcome(item))
        except MalformedMessage as exc:
            raise MalformedMessage(f"outcome {index}: {exc}") from None
    return decoded


def _task_outcome(data: dict[str, Any]) -> TaskOutcome:
    task_id = _field(data, "id", _positive_int)
    return TaskOutcome(
        task_id=task_id,
        attempt=_field(data, "attempt", _positive_int),
        max_attempts=_field(data, "max_attempts", _optional(_positive_int)),
        due_at=_field(data, "due_at", _datetime),
        outcome=Outcome(
            task_id,
            _field(data, "class", _outcome_class),
            status_code=_field(data, "status_code", _optional(_status_code)),
            error=_field(data, "error", _optional(_str)),
            retry_after_s=_field(data, "retry_after_s", _optional(_seconds)),
            fired_at=_field(data, "fired_at", _optional(_datetime)),
            duration_s=_field(data, "duration_s", _seconds),
        ),
    )


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _load(raw: bytes, kind: str, *, versions: tuple[int, ...] = (VERSION,)) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"{kind} is {len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedMessage(f"{kind} is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"{kind} is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"{kind} is not a JSON object")
    version = data.get("v")
    if isinstance(version, bool) or version not in versions:
        expected = " or ".join(map(str, versions))
        raise MalformedMessage(f"{kind} has version {version!r}, expected {expected}")
    return data


def _field(data: dict[str, Any], name: str, parse: Callable[[Any], _T]) -> _T:
    if name not in data:
        raise MalformedMessage(f"field {name!r} is missing")
    try:
        return parse(data[name])
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"field {name!r} is invalid: {exc}") from None


def _optional(parse: Callable[[Any], _T]) -> Callable[[Any], _T | None]:
    def parse_optional(value: Any) -> _T | None:
        return None if value is None else parse(value)

    return parse_optional


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a whole number of at least 1")
    return value


def _status_code(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 999:
        raise ValueError(f"{value!r} is not an HTTP status code")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is not a number")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative number")
    return float(value)


def _datetime(value: Any) -> datetime:
    moment = datetime.fromisoformat(_str(value))
    if moment.tzinfo is not None:
        raise ValueError(f"{value!r} must be naive UTC, as the database stores it")
    return moment


def _outcome_class(value: Any) -> OutcomeClass:
    return OutcomeClass(_str(value))
