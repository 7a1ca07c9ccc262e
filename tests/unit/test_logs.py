"""JSON logs: one object per line with the event's fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from timer_controller.ops.logs import JsonFormatter, TextFormatter, configure

LOGGER = "timer_controller.tests_unit_logs"


def _not_pytests(handler: logging.Handler) -> bool:
    return not type(handler).__module__.startswith("_pytest")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure() replaces the root handlers; put back what was there, keep pytest's own."""
    root = logging.getLogger()
    handlers, level = [h for h in root.handlers if _not_pytests(h)], root.level
    noisy = {
        name: logging.getLogger(name).level
        for name in ("sqlalchemy", "httpx", "httpcore", "aiohttp")
    }
    try:
        yield
    finally:
        root.handlers[:] = [h for h in root.handlers if not _not_pytests(h)] + handlers
        root.setLevel(level)
        for name, noisy_level in noisy.items():
            logging.getLogger(name).setLevel(noisy_level)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.usefixtures("restore_logging")
def test_json_log_lines_carry_event_fields_and_pod(capsys: pytest.CaptureFixture[str]) -> None:
    configure(level="INFO", fmt="json", pod="pod-7")
    log = logging.getLogger(LOGGER)
    before = datetime.now(UTC)

    log.info(
        "task %d done: %s",
        5,
        "HTTP 200",
        extra={"event": "done", "task_id": 5, "attempt": 1, "status_code": 200, "error": None},
    )
    log.warning("task 6 failed", extra={"event": "failed", "task_id": 6, "outcome": "timeout"})

    first, second = _json_lines(capsys.readouterr().out)
    assert first == {
        "time": first["time"],
        "level": "info",
        "event": "done",
        "message": "task 5 done: HTTP 200",
        "pod": "pod-7",
        "task_id": 5,
        "attempt": 1,
        "status_code": 200,
        "error": None,
    }
    logged_at = datetime.fromisoformat(first["time"])
    assert logged_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= logged_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert second["level"] == "warning"
    assert second["event"] == "failed"
    assert second["task_id"] == 6
    assert second["outcome"] == "timeout"
    assert second["pod"] == "pod-7"


@pytest.mark.usefixtures("restore_logging")
def test_one_line_per_event_even_with_newlines_and_tracebacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(level="INFO", fmt="json", pod="pod-7")
    log = logging.getLogger(LOGGER)

    log.info("line one\nline two", extra={"event": "multi"})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("task %d: unexpected error", 9, extra={"event": "error", "task_id": 9})

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2
    multi, error = (json.loads(line) for line in lines)
    assert multi["message"] == "line one\nline two"
    assert error["level"] == "error"
    assert error["task_id"] == 9
    assert error["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in error["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_event_defaults_to_the_logger_name_and_odd_values_become_strings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure(level="INFO", fmt="json", pod="pod-7")
    when = datetime(2025, 6, 1, 12, 0, 0, 250000)

    logging.getLogger(LOGGER).info("claimed", extra={"task_ids": [1, 2], "next_due_at": when})

    (entry,) = _json_lines(capsys.readouterr().out)
    assert entry["event"] == LOGGER
    assert entry["task_ids"] == [1, 2]
    assert entry["next_due_at"] == str(when)
    assert "exception" not in entry


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("DEBUG", ["debug", "info", "warning"]),
        ("INFO", ["info", "warning"]),
        ("WARNING", ["warning"]),
    ],
)
def test_log_level_filters(
    capsys: pytest.CaptureFixture[str], level: str, shown: list[str]
) -> None:
    configure(level=level, fmt="json", pod="p")
    log = logging.getLogger(LOGGER)

    log.debug("d")
    log.info("i")
    log.warning("w")

    assert [e["level"] for e in _json_lines(capsys.readouterr().out)] == shown


@pytest.mark.usefixtures("restore_logging")
def test_text_format_is_one_readable_line_with_the_pod(capsys: pytest.CaptureFixture[str]) -> None:
    configure(level="INFO", fmt="text", pod="pod-9")

    logging.getLogger(LOGGER).info("task %d done", 3, extra={"event": "done", "task_id": 3})

    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith(f"INFO    pod-9 {LOGGER}: task 3 done")


def test_formatter_without_a_pod_filter_writes_null_pod() -> None:
    record = logging.makeLogRecord(
        {"name": "x", "levelno": logging.INFO, "levelname": "INFO", "msg": "hi", "task_id": 4}
    )

    entry = json.loads(JsonFormatter().format(record))

    assert entry["pod"] is None
    assert entry["task_id"] == 4
    assert entry["event"] == "x"
    assert entry["message"] == "hi"


@pytest.mark.usefixtures("restore_logging")
def test_a_library_error_with_a_traceback_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """SQLAlchemy's pool, failing to roll back a connection the database dropped."""
    configure(level="INFO", fmt="text", pod="pod-9")

    try:
        raise ConnectionError("(2013, 'Lost connection to server during query')")
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool.impl.QueuePool").error(
            "Exception during reset or %s", "similar", exc_info=True
        )

    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith(
        "sqlalchemy.pool.impl.QueuePool: Exception during reset or similar: "
        "ConnectionError: (2013, 'Lost connection to server during query')"
    )


@pytest.mark.parametrize(
    "created",
    [
        # Within one second, across its end, across a minute, a day and back again.
        [1_780_000_000.0, 1_780_000_000.4567, 1_780_000_000.9999, 1_780_000_001.0001],
        [1_780_012_799.998, 1_780_012_800.002, 1_780_012_799.5],
        [1_779_926_399.999, 1_779_926_400.0, 1_779_926_400.001],
    ],
)
def test_text_lines_are_what_logging_formatter_writes(created: list[float]) -> None:
    fmt = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    ours, stock = TextFormatter(fmt), logging.Formatter(fmt)
    for moment in created:
        record = logging.makeLogRecord({"name": LOGGER, "msg": "task %d done", "args": (7,)})
        record.created, record.msecs = moment, int((moment - int(moment)) * 1000) + 0.0
        assert ours.format(record) == stock.format(record)
        assert ours.formatTime(record, "%H:%M") == stock.formatTime(record, "%H:%M")
