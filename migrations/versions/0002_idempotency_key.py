"""Idempotency keys: one timer per key, for the api and for SQL writers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ascii_bin(length: int) -> mysql.VARCHAR:
    return mysql.VARCHAR(length, charset="ascii", collation="ascii_bin")


def upgrade() -> None:
    # Nullable with no default: the plain INSERT INTO tasks (url, due_at) is unchanged,
    # and a unique index admits any number of NULLs.
    op.add_column("tasks", sa.Column("idempotency_key", _ascii_bin(255), nullable=True))
    op.add_column("tasks", sa.Column("idempotency_hash", _ascii_bin(64), nullable=True))
    op.create_index("uq_tasks_idempotency_key", "tasks", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_tasks_idempotency_key", table_name="tasks")
    op.drop_column("tasks", "idempotency_hash")
    op.drop_column("tasks", "idempotency_key")
