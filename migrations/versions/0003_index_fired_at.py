"""Index the last attempt's time, for the dashboard's last-hour charts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Firing and lateness over the last hour read a range of this index from an
hour ago and nothing else: ``status``, ``attempts`` and ``due_at`` ride
along so the rows themselves are never visited.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tasks_fired_at", "tasks", ["fired_at", "status", "attempts", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_fired_at", table_name="tasks")
