"""The ORM mapping of the public ``tasks`` table.

Alembic owns the schema (``migrations/``); a test proves this model and the
migrations agree.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from timer_controller.domain.task import MAX_URL_CHARS, Status

ERROR_MAX_CHARS = 500
OWNER_MAX_CHARS = 255
#: The largest value of an INT column (``attempts``, ``max_attempts``).
INT_MAX = 2**31 - 1
#: The most bytes a MEDIUMTEXT (``body``) holds.
MEDIUMTEXT_MAX_BYTES = 2**24 - 1
IDEMPOTENCY_KEY_MAX_CHARS = 255
IDEMPOTENCY_HASH_CHARS = 64  # SHA-256, hex
HEADERS_MAX_BYTES = 65_535  # TEXT

# DATETIME(6): microsecond precision, stored as naive UTC.
UtcDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
# UTC_TIMESTAMP, not CURRENT_TIMESTAMP: the writer's session time zone must not matter.
UTC_NOW_DEFAULT = text("(utc_timestamp(6))")


def ascii_bin(length: int) -> String:
    """ASCII compared byte for byte: ``K-1`` and ``k-1`` are two keys, and the
    index holds one byte per character instead of utf8mb4's four."""
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="ascii", collation="ascii_bin"), "mysql"
    )


STATUS_VALUES = ", ".join(f"'{s.value}'" for s in Status)


class Base(DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # The claim (status='waiting', ordered by due_at) and the lease sweep
        # (status='claimed') both read a prefix of this index, so neither ever
        # walks finished rows.
        Index("ix_tasks_status_due_at", "status", "due_at"),
        # Retention finds old finished rows without a scan.
        Index("ix_tasks_status_finished_at", "status", "finished_at"),
        # Many NULLs, one row per key (see README "Idempotency keys").
        Index("uq_tasks_idempotency_key", "idempotency_key", unique=True),
        # The dashboard's last hour of firing and lateness, read index-only (0003).
        Index("ix_tasks_fired_at", "fired_at", "status", "attempts", "due_at"),
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="ck_tasks_status"),
        {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"},
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(MAX_URL_CHARS), nullable=False)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default=Status.WAITING.value
    )
    # Per-task request; NULL means the default (POST, no extra headers, JSON body).
    # headers and method are free text on purpose: a bad value must reach the
    # controller and fail that one task with a clear reason, not break the INSERT.
    method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    headers: Mapped[str | None] = mapped_column(Text, nullable=True)
    body: Mapped[str | None] = mapped_column(
        Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=True
    )
    max_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Delivery bookkeeping.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    owner: Mapped[str | None] = mapped_column(String(OWNER_MAX_CHARS), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(ERROR_MAX_CHARS), nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, nullable=False, server_default=UTC_NOW_DEFAULT
    )
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Written by the api (and any SQL writer that wants one create per key);
    # the hash of the creating request's body tells a replay from a reuse.
    idempotency_key: Mapped[str | None] = mapped_column(
        ascii_bin(IDEMPOTENCY_KEY_MAX_CHARS), nullable=True
    )
    idempotency_hash: Mapped[str | None] = mapped_column(
        ascii_bin(IDEMPOTENCY_HASH_CHARS), nullable=True
    )
