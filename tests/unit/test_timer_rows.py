"""A stored timer's row becomes a TimerRecord by position, and a record its answer's JSON."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import to_json
from sqlalchemy import select
from sqlalchemy.dialects.mysql import mysqldb

from timer_controller.api.models import TimerOut, rfc3339, timer_fields
from timer_controller.db.timer_inserts import row_tuple, row_values
from timer_controller.db.timer_statements import (
    INSERT_TIMER_RETURNING,
    ROW_VALUES,
    TIMER_COLUMNS,
    insert_rows_text,
)
from timer_controller.db.timers import NewTimer, TimerRecord, to_record


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


_TIMES = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))
_TEXT = st.none() | st.text(max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    record=st.builds(
        TimerRecord,
        id=st.integers(1, 2**63 - 1),
        url=st.text(max_size=20),
        method=st.none() | st.sampled_from(["put", " get ", "", "DELETE"]),
        status=st.sampled_from(["waiting", "claimed", "done", "failed", "cancelled"]),
        due_at=_TIMES,
        attempts=st.integers(0, 1000),
        max_attempts=st.none() | st.integers(1, 1000),
        last_status_code=st.none() | st.integers(100, 599),
        last_error=_TEXT,
        created_at=_TIMES,
        fired_at=st.none() | _TIMES,
        finished_at=st.none() | _TIMES,
        idempotency_key=_TEXT,
        idempotency_hash=_TEXT,
        header_names=st.none() | st.lists(st.text(max_size=5)).map(tuple),
        body_bytes=st.none() | st.integers(0, 2**24),
        time_left_s=st.floats(0, 1e9),
    )
)
def test_the_creates_answer_is_the_models_json(record: TimerRecord) -> None:
    fields = timer_fields(record, 3, time=rfc3339)

    assert to_json(fields) == TimerOut.of(record, default_max_attempts=3).model_dump_json().encode()


@pytest.mark.parametrize(
    "timer",
    [
        NewTimer(url="http://x/", delay_s=1.5),
        NewTimer(
            url="http://y/",
            due_at=datetime(2030, 1, 2),
            method="PUT",
            headers="{}",
            body="b",
            max_attempts=3,
            idempotency_key="k",
            idempotency_hash="h",
        ),
    ],
)
def test_a_rows_values_are_in_the_rendered_statements_order(timer: NewTimer) -> None:
    values = row_values(timer)

    assert row_tuple(timer) == tuple(values[name] for name in ROW_VALUES)


def test_a_rendered_insert_is_the_compiled_one_with_each_value_in_place() -> None:
    dialect = mysqldb.dialect(is_mariadb=True)
    row = ("http://x/%s'", 5, datetime(2030, 1, 2, 3, 4, 5), None, None, None, 7, None, None)

    sql = insert_rows_text([row, row], dialect, quote=lambda s: f"<{s}>", returning=True)

    one = (
        "(<http://x/%s'>, timestampadd(MICROSECOND, 5, coalesce('2030-01-02 03:04:05.000000', "
        "utc_timestamp(6))), 7)"
    )
    assert sql.startswith("INSERT INTO tasks (url, due_at, max_attempts) VALUES ")
    assert f" VALUES {one}, {one} RETURNING tasks.id, " in sql


def test_rows_alike_but_for_their_url_share_the_rest_and_others_keep_theirs() -> None:
    dialect = mysqldb.dialect(is_mariadb=True)
    a = ("http://x/a", 5, None, "PUT", None, "%s %d", 7, None, None)
    b = ("http://x/b", *a[1:])
    c = ("http://x/c", *a[1:6], 8, "k", "h")

    sql = insert_rows_text([a, b, c, a], dialect, quote=lambda s: f"<{s}>")

    # No row has headers or a time (at): that column is left out, and every row is due
    # its delay from now.
    columns = "(url, due_at, method, `body`, max_attempts, idempotency_key, idempotency_hash)"
    rest = ", timestampadd(MICROSECOND, 5, utc_timestamp(6)), <PUT>, <%s %d>"
    rows = [f"(<http://x/a>{rest}, 7, NULL, NULL)", f"(<http://x/b>{rest}, 7, NULL, NULL)"]
    rows += [f"(<http://x/c>{rest}, 8, <k>, <h>)", rows[0]]
    assert sql == f"INSERT INTO tasks {columns} VALUES " + ", ".join(rows)


def test_rows_dated_and_not_share_the_full_due_expression() -> None:
    dialect = mysqldb.dialect(is_mariadb=True)
    dated = ("http://x/a", 0, datetime(2030, 1, 2), None, None, None, None, None, None)
    later = ("http://x/b", 90, None, None, None, None, None, None, None)

    sql = insert_rows_text([dated, later], dialect, quote=lambda s: f"<{s}>")

    assert sql == (
        "INSERT INTO tasks (url, due_at) VALUES (<http://x/a>, timestampadd(MICROSECOND, 0, "
        "coalesce('2030-01-02 00:00:00.000000', utc_timestamp(6)))), (<http://x/b>, "
        "timestampadd(MICROSECOND, 90, coalesce(NULL, utc_timestamp(6))))"
    )
