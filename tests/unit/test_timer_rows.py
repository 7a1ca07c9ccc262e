"""A stored timer's row becomes a TimerRecord by position: the orders must agree."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from sqlalchemy import select

from timer_controller.db.timer_statements import INSERT_TIMER_RETURNING, TIMER_COLUMNS
from timer_controller.db.timers import TimerRecord, to_record


def test_the_selected_columns_are_the_records_fields_in_order() -> None:
    names = list(select(*TIMER_COLUMNS).selected_columns.keys())
    fields = [f.name for f in dataclasses.fields(TimerRecord)]
    stored = len(fields) - 3
    assert names[:stored] == fields[:stored]
    assert names[stored:] == ["headers", "body_bytes", "db_now"]
    assert list(INSERT_TIMER_RETURNING.exported_columns.keys()) == names


def test_a_row_becomes_its_record() -> None:
    due, now = datetime(2026, 12, 1, 10, 0, 30), datetime(2026, 12, 1, 10, 0, 0)
    row: tuple[object, ...] = (7, "http://x/", None, "waiting", due, 0, None, None, None, now)
    row += (None, None, "k", "h", '{"A": "1", "B": "2"}', 12, now)
    record = to_record(row)
    assert (record.id, record.url, record.status, record.idempotency_hash) == (
        7,
        "http://x/",
        "waiting",
        "h",
    )
    assert record.header_names == ("A", "B")
    assert record.body_bytes == 12
    assert record.time_left_s == 30.0
    assert to_record((*row[:4], now, *row[5:16], due)).time_left_s == 0.0
