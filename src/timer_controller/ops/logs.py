"""Logging to stdout, one line per event: readable text, or JSON objects.

Call sites pass structured fields with ``extra={"event": ..., "task_id": ...}``;
the JSON format emits them as keys. Secrets and request bodies are never
passed, so they are never logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "pod"}


class _PodFilter(logging.Filter):
    def __init__(self, pod: str) -> None:
        super().__init__()
        self._pod = pod

    def filter(self, record: logging.LogRecord) -> bool:
        record.pod = self._pod
        return True


class _LibraryErrorsOnOneLine(logging.Filter):
    """A library's error logged with its traceback becomes one line: its message and the error.

    SQLAlchemy's pool logs "Exception during reset or similar" with a
    traceback when it cannot roll back a connection the database dropped, a
    fault the pod already handles and reports in its own words.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith("sqlalchemy"):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


class TextFormatter(logging.Formatter):
    """``logging.Formatter``'s lines, with each second's date and time formatted once.

    ``formatTime`` ran ``localtime`` and ``strftime`` for every line, at one
    line per timer; the milliseconds are still each line's own.
    """

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        # Called under the handler's lock, so the pair stays consistent.
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"  # default_msec_format


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", record.name),
            "message": record.getMessage(),
            "pod": getattr(record, "pod", None),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(*, level: str, fmt: str, pod: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_PodFilter(pod))
    handler.addFilter(_LibraryErrorsOnOneLine())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)-7s %(pod)s %(name)s: %(message)s")
        )
    _skip_unused_record_fields()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (connection pools, migrations) stays out of the event log.
    for noisy in ("sqlalchemy", "httpx", "httpcore", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _skip_unused_record_fields() -> None:
    """Stop filling LogRecord fields that neither format prints.

    The Logging HOWTO's "Optimization" section names these switches: the
    caller's frame (``_srcfile``), thread, process and multiprocessing names.
    Working them out took about a fifth of each line's cost on the loop's
    thread, at one line per timer (docs/benchmarks.md).
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
