"""``db.setup.datetime_or_none`` reads DATETIME text exactly as MySQLdb's own reader does."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from MySQLdb.times import DateTime_or_None

from timer_controller.db.setup import datetime_or_none


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)))
def test_any_datetime_the_server_sends_reads_the_same(value: datetime) -> None:
    for text in (f"{value:%Y-%m-%d %H:%M:%S}", f"{value:%Y-%m-%d %H:%M:%S.%f}"):
        assert datetime_or_none(text) == DateTime_or_None(text), text


@pytest.mark.parametrize(
    "text",
    [
        "0000-00-00 00:00:00",  # a zero date: MariaDB's default sql_mode stores them
        "2026-02-30 00:00:00",  # no such day
        "2026-12-01",  # a date alone
        "2026-12-01 19:07:41.5",  # fewer fraction digits
        "2026-12-01 19:07:41.1234567",  # more than the driver takes
    ],
)
def test_odd_values_read_as_the_driver_reads_them(text: str) -> None:
    assert datetime_or_none(text) == DateTime_or_None(text)
