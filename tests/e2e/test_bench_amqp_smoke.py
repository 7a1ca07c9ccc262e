"""``python -m bench.amqp_scaling`` on a tiny workload, so it never rots: correctness only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TASKS = 20

pytestmark = [
    pytest.mark.db,
    pytest.mark.skipif(not DATABASE_URL, reason="TEST_DATABASE_URL is not set"),
]


def test_every_setup_delivers_every_task_once(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "bench.amqp_scaling",
        "--db-url", DATABASE_URL,
        "-n", str(TASKS),
        "--workers", "1,2",
        "--concurrency", "20",
        "--fast-workers", "1",
        "--light-rate", "10",
        "--light-seconds", "1",
        "--timeout", "60",
        "--output", str(tmp_path / "amqp.md"),
        "--json", str(tmp_path / "amqp.json"),
        "--work-dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "amqp.json").read_text())
    setups = [(r["scenario"], r["setup"]) for r in rows]
    assert len(setups) == 8  # slow: 2 direct + 2 amqp; fast: 2; light: 2
    for row in rows:
        assert row["done"] == row["tasks"] > 0, row
        assert row["duplicates"] == 0, row
        assert row["unseen_done"] == 0, row
        assert row["exit_codes"], row
        assert set(row["exit_codes"]) == {0}, row
    assert "| slow | amqp, 1 controller + 2 worker(s) × 20 |" in (tmp_path / "amqp.md").read_text()
