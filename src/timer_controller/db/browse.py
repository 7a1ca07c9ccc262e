"""The dashboard's timer reads beyond the api's: a URL-prefix or id filter, and the claim.

A page is the api's own keyset page (``timer_statements.select_page``: ``id
> after ORDER BY id LIMIT n``) with the dashboard's extra filters added, so a
deep page costs what the first does and a row reads the same in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, select

from timer_controller.db.errors import storage_operation
from timer_controller.db.models import Task
from timer_controller.db.timer_statements import select_page
from timer_controller.db.timers import TimerPage, to_record

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class TimerFilter:
    status: str | None = None
    timer_id: int | None = None
    idempotency_key: str | None = None
    url_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    owner: str | None
    lease_expires_at: datetime | None


def like_prefix(prefix: str) -> str:
    """A ``LIKE`` pattern matching exactly the strings that start with ``prefix``."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def page_statement(where: TimerFilter, *, after_id: int | None, limit: int) -> Select[Any]:
    """The api's page, narrowed to one id or to URLs starting with a prefix.

    The prefix is a ``LIKE 'p%'`` checked while walking the primary key (a
    2048-character URL has no index): a page stops after ``limit`` matches.
    """
    statement = select_page(
        status=where.status,
        idempotency_key=where.idempotency_key,
        after_id=after_id,
        limit=limit,
    )
    if where.timer_id is not None:
        statement = statement.where(Task.id == where.timer_id)
    if where.url_prefix:
        statement = statement.where(Task.url.like(like_prefix(where.url_prefix), escape="\\"))
    return statement


class TimerBrowser:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @storage_operation
    def page(self, where: TimerFilter, *, after_id: int | None, limit: int) -> TimerPage:
        """One page and the ``after_id`` of the next (None on the last page)."""
        limit = max(1, min(limit, MAX_PAGE))
        with self._engine.connect() as conn, conn.begin():
            # One row more than asked says whether another page exists.
            rows = conn.execute(page_statement(where, after_id=after_id, limit=limit + 1)).all()
        timers = [to_record(row) for row in rows[:limit]]
        return TimerPage(timers=timers, next_after_id=timers[-1].id if len(rows) > limit else None)

    @storage_operation
    def claim(self, timer_id: int) -> Claim | None:
        """Who holds a timer and until when: the part of its history the api leaves out."""
        statement = select(Task.owner, Task.lease_expires_at).where(Task.id == timer_id)
        with self._engine.connect() as conn, conn.begin():
            row = conn.execute(statement).first()
        return (
            None if row is None else Claim(owner=row.owner, lease_expires_at=row.lease_expires_at)
        )
