"""The API's request and response bodies (pydantic), and so its OpenAPI schema.

Requests forbid unknown fields, so a misspelt ``dealy`` is a 422, not a
timer due now. Responses never carry a header value or the body: header
values often hold credentials, so a timer shows its header *names* and its
body's size only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from timer_controller.db.models import IDEMPOTENCY_KEY_MAX_CHARS
from timer_controller.db.timers import TimerRecord
from timer_controller.domain.durations import DURATION_PATTERN
from timer_controller.domain.task import Status

MAX_BATCH = 1000
MAX_PAGE = 1000
DEFAULT_PAGE = 100
#: The max_attempts a timer may ask for: MAX_ATTEMPTS's own bounds.
MAX_ATTEMPTS_RANGE = (1, 1000)

StatusName = Literal["waiting", "claimed", "done", "failed", "cancelled"]
assert set(StatusName.__args__) == {s.value for s in Status}  # type: ignore[attr-defined]

At = Annotated[
    str,
    Field(
        description="RFC 3339 time with an offset, e.g. 2026-12-01T10:00:00Z",
        json_schema_extra={"format": "date-time"},
        max_length=64,
    ),
]
DELAY_MAX_CHARS = 64


def _delay(value: object) -> float | str:
    # One check with one message, rather than one error per member of a union.
    if isinstance(value, str) and len(value) <= DELAY_MAX_CHARS:
        return value
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    raise ValueError('delay must be a number of seconds >= 0 or a duration such as "90s"')


Delay = Annotated[
    float | str,
    PlainValidator(_delay),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN, "maxLength": DELAY_MAX_CHARS},
            ],
            "description": 'seconds (a number >= 0) or a duration such as "90s", "5m", "2h"',
        }
    ),
]
_TIMES = ("at", "delay")


def _one_time(schema: dict[str, Any]) -> None:
    """Exactly one of ``at`` and ``delay``, neither of them null, as the model checks."""
    schema["oneOf"] = [{"required": [name]} for name in _TIMES]
    for name in _TIMES:
        prop = schema["properties"][name]
        (kind,) = [option for option in prop.pop("anyOf") if option != {"type": "null"}]
        prop.pop("default", None)
        prop.update(kind)


class When(BaseModel):
    """Exactly one of ``at`` and ``delay``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_time)

    at: At | None = None
    delay: Delay | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_null_times(cls, data: Any) -> Any:
        # null would read as "not given"; the schema says leave it out, so say so.
        if isinstance(data, dict):
            for name in _TIMES:
                if name in data and data[name] is None:
                    raise ValueError(f"{name} is null; leave it out instead")
        return data


class TimerSpec(When):
    url: str = Field(description="http:// or https:// URL to call")
    method: str | None = Field(
        default=None, max_length=16, description="POST (default), GET, PUT, PATCH or DELETE"
    )
    headers: dict[str, str] | None = Field(
        default=None, description="extra request headers; their values are never shown again"
    )
    body: str | None = Field(
        default=None, description="request body; default: JSON with id and due_at"
    )
    max_attempts: int | None = Field(
        default=None, ge=MAX_ATTEMPTS_RANGE[0], le=MAX_ATTEMPTS_RANGE[1]
    )


class BatchItem(TimerSpec):
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=IDEMPOTENCY_KEY_MAX_CHARS
    )


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timers: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class Reschedule(When):
    pass


class TimerOut(BaseModel):
    id: int
    url: str
    method: str
    status: StatusName
    due_at: datetime
    time_left_s: float = Field(ge=0, description="seconds until due; 0 when due or past")
    attempts: int
    max_attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    fired_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None
    header_names: list[str] | None = Field(
        description="names of the extra request headers (values are never shown)"
    )
    body_bytes: int | None = Field(description="size of the stored body; null: the default body")

    @classmethod
    def of(cls, record: TimerRecord, *, default_max_attempts: int) -> TimerOut:
        # Built from a stored row, whose types are known: no validation to pay for.
        return cls.model_construct(**timer_fields(record, default_max_attempts))


def utc(naive: datetime) -> datetime:
    """A stored naive-UTC time as an aware one, which serialises with a trailing Z."""
    return naive.replace(tzinfo=UTC)


def rfc3339(naive: datetime) -> str:
    """A stored naive-UTC time as the text ``utc``'s answer serialises to, made directly.

    For answers of a thousand timers: cheaper than an aware datetime made, then written.
    """
    return naive.isoformat() + "Z"


def timer_fields(
    record: TimerRecord,
    default_max_attempts: int,
    *,
    time: Callable[[datetime], datetime | str] = utc,
) -> dict[str, Any]:
    """TimerOut's fields for ``record``, in its order: what the answers serialise.

    The creates' answers are these dicts made JSON by pydantic-core, as a model
    would be, without building a model per timer (a batch has a thousand);
    for them ``time`` is ``rfc3339``, which writes a time as the model would.
    """
    return {
        "id": record.id,
        "url": record.url,
        "method": (record.method or "POST").strip().upper() or "POST",
        "status": record.status,
        "due_at": time(record.due_at),
        "time_left_s": record.time_left_s,
        "attempts": record.attempts,
        "max_attempts": record.max_attempts or default_max_attempts,
        "last_status_code": record.last_status_code,
        "last_error": record.last_error,
        "created_at": time(record.created_at),
        "fired_at": None if record.fired_at is None else time(record.fired_at),
        "finished_at": None if record.finished_at is None else time(record.finished_at),
        "idempotency_key": record.idempotency_key,
        "header_names": None if record.header_names is None else list(record.header_names),
        "body_bytes": record.body_bytes,
    }


class TimerList(BaseModel):
    timers: list[TimerOut]
    next: str | None = Field(description="pass as ?after= for the next page; null on the last")


class TimerBatch(BaseModel):
    timers: list[TimerOut] = Field(description="in request order")
