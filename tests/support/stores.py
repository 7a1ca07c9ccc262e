"""Engines for the timer store's two ways of inserting, on the one MariaDB the tests have."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, Engine

from timer_controller.db.setup import make_engine

#: MariaDB's INSERT … RETURNING, and MySQL 8's way (no RETURNING: insert, then select).
WAYS = ["returning", "insert-then-select"]


def engine_for(url: URL, way: str, **options: Any) -> Engine:
    """An engine (``make_engine(url, **options)``) that inserts the ``way`` named."""
    engine = make_engine(url, **options)
    if way == "insert-then-select":
        with engine.connect():
            pass  # the first connection sets insert_returning from the server's version
        engine.dialect.insert_returning = False
    return engine
