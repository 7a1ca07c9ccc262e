"""A batch's answer written as JSON text directly, row by row, from what the store did.

A record, a ``Created`` and a 16-key dict per timer, then pydantic-core, cost
more than checking and inserting the thousand timers of a batch. A row just
inserted differs from its neighbours in a few values (id, URL, times); the
rest of its text (method, max_attempts, header names, body size) is written
once per kind of row. Replays (rows that were already there) are written as
every answer is (``timer_fields``). A property test holds the bytes to
``TimerOut.model_dump_json``'s, through ``timer_fields``.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any

from pydantic_core import to_json

from timer_controller.api.models import rfc3339, timer_fields
from timer_controller.db.timer_records import header_names
from timer_controller.db.timers import BatchCreated, NewTimer

#: A fresh row's TimerOut fields in order, its own values as %-fields.
_ROW = (
    '{"id":%s,"url":%s,"method":%s,"status":"waiting","due_at":"%sZ","time_left_s":%s,'
    '"attempts":0,"max_attempts":%s,"last_status_code":null,"last_error":null,'
    '"created_at":"%sZ","fired_at":null,"finished_at":null,"idempotency_key":%s,'
    '"header_names":%s,"body_bytes":%s}'
)


def _time(server_time: str) -> str:
    """A server's DATETIME(6) text as ``rfc3339`` writes the time (isoformat, then Z)."""
    text = server_time.replace(" ", "T")
    return text[:-7] if text.endswith(".000000") else text


def _seconds(value: float) -> str:
    """``value`` as pydantic-core writes a float (repr's, but for small or huge exponents)."""
    if value == 0 or 1e-4 <= value < 1e15:
        return repr(value)
    return to_json(value).decode()


def _escaped(value: Any) -> str:
    """``value`` as JSON text to put in a %-template as it is."""
    return to_json(value).decode().replace("%", "%%")


def _kind(timer: NewTimer, default_max_attempts: int) -> str:
    """_ROW with the values rows of one kind share filled in."""
    names = header_names(timer.headers)
    body_bytes = None if timer.body is None else len(timer.body.encode())
    method = (timer.method or "POST").strip().upper() or "POST"
    most = timer.max_attempts or default_max_attempts
    shared = [method, most, None if names is None else list(names), body_bytes]
    method_json, most_json, names_json, body_json = map(_escaped, shared)
    return _ROW % (
        "%d", "%s", method_json, "%s", "%s", most_json, "%s", "%s", names_json, body_json
    )  # fmt: skip


def batch_json(done: BatchCreated, *, default_max_attempts: int) -> bytes:
    """``{"timers": [...]}`` for ``done``, as ``to_json`` of ``timer_fields`` would write it."""
    kinds: dict[tuple[object, ...], str] = {}
    decided = iter(done.decided)
    replays = done.replayed
    rows: list[str] = []
    created, created_text = "", ""  # one INSERT's rows share their creation time
    for index, timer in enumerate(done.timers):
        if replays and index in replays:
            fields = timer_fields(replays[index], default_max_attempts, time=rfc3339)
            rows.append(to_json(fields).decode())
            continue
        timer_id, due_at, created_at, time_left_s = next(decided)
        kind_key = (timer.method, timer.max_attempts, timer.headers, timer.body)
        kind = kinds.get(kind_key)
        if kind is None:
            kind = kinds[kind_key] = _kind(timer, default_max_attempts)
        if created_at != created:
            created, created_text = created_at, _time(created_at)
        key = timer.idempotency_key
        # encode_basestring escapes what pydantic-core does (", \, controls), the same way.
        url, key_text = (
            encode_basestring(timer.url),
            "null" if key is None else encode_basestring(key),
        )
        rows.append(
            kind % (timer_id, url, _time(due_at), _seconds(time_left_s), created_text, key_text)
        )
    return ('{"timers":[' + ",".join(rows) + "]}").encode()
