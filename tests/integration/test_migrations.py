"""Alembic owns the schema: it builds it, it agrees with the models, and the
claim reads through the index."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import ClauseElement, inspect, text
from sqlalchemy.engine import URL

from tests.support.databases import TestDatabase, fresh_database
from timer_controller.db.models import Base
from timer_controller.db.setup import current_revision_is_head, upgrade_to_head
from timer_controller.db.statements import claim_select, sweep_update


def test_upgrade_head_on_an_empty_database_creates_the_contract(db_server: URL) -> None:
    with fresh_database(db_server, migrate=False) as empty:
        assert "tasks" not in inspect(empty.engine).get_table_names()
        upgrade_to_head(empty.engine)
        upgrade_to_head(empty.engine)  # a second pod finds nothing to do
        assert current_revision_is_head(empty.engine)
        with empty.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO tasks (url, due_at) VALUES ('http://x', UTC_TIMESTAMP(6))")
            )
            row = conn.execute(text("SELECT status, attempts, created_at FROM tasks")).one()
        assert row.status == "waiting"
        assert row.attempts == 0
        assert row.created_at is not None


def test_models_and_migrations_agree(db: TestDatabase) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _plan(db: TestDatabase, statement: ClauseElement) -> list[dict[str, Any]]:
    sql = str(statement.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text("EXPLAIN " + sql))]


def test_claim_and_sweep_read_a_prefix_of_the_status_index(db: TestDatabase) -> None:
    with db.engine.begin() as conn:
        # Many finished rows and a few waiting ones: a scan would be visible.
        conn.execute(
            text(
                "INSERT INTO tasks (url, due_at, status) "
                "SELECT 'http://x', UTC_TIMESTAMP(6), 'done' FROM "
                "(SELECT 1 FROM information_schema.columns LIMIT 2000) AS many"
            )
        )
        conn.execute(text("INSERT INTO tasks (url, due_at) VALUES ('http://x', UTC_TIMESTAMP(6))"))
        conn.execute(text("ANALYZE TABLE tasks"))
    claim = _plan(db, claim_select(limit=10, lookahead_s=0.5, max_body_bytes=1 << 20))
    sweep = _plan(db, sweep_update(default_max_attempts=3, limit=1000))
    for plan in (claim, sweep):
        (step,) = plan
        assert step["key"] == "ix_tasks_status_due_at", plan
        assert step["type"] == "range", plan
        assert "filesort" not in (step["Extra"] or "").lower(), plan
        assert int(step["rows"]) < 100, plan  # never the 2,000 finished rows
