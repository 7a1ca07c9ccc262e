"""The claim's compiled SQL text (``db/prepared.py``): what each statement reads."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import mysql

from timer_controller.db.prepared import ClaimStatements


@pytest.fixture
def statements() -> ClaimStatements:
    return ClaimStatements(mysql.mysqldb.dialect(), max_body_bytes=1024)


def _columns(sql_text: str) -> str:
    return sql_text.split("FROM", 1)[0]


def test_a_plain_claim_reads_its_rows_whole_in_one_statement(statements: ClaimStatements) -> None:
    select = statements.select(limit=10, lookahead_s=0.5).sql
    assert "body" in _columns(select)
    assert select.rstrip().endswith("FOR UPDATE SKIP LOCKED")


def test_a_claim_that_skips_destinations_reads_ids_then_locks_only_those(
    statements: ClaimStatements,
) -> None:
    """Skipping may pass over a busy destination's every row: those must not be locked."""
    select = statements.select(limit=10, lookahead_s=0.5, skip_prefixes=("http://busy.test",)).sql
    assert _columns(select).split() == ["SELECT", "tasks.id,", "tasks.due_at"]
    assert "substring_index" in select
    assert "FOR UPDATE" not in select  # a locking scan locks every row it passes
    rows = statements.rows(lookahead_s=0.5).sql
    assert "body" in _columns(rows)
    assert "tasks.status = " in rows  # another pod may have claimed a candidate since
    assert rows.rstrip().endswith("FOR UPDATE SKIP LOCKED")
