"""``python -m bench.amqp_scaling`` on a tiny workload, so it never rots: correctness only."""

from __future__ import annotations

from pathlib import Path

from tests.support.bench_runs import needs_database_server, run_bench

TASKS = 20

pytestmark = needs_database_server


def test_every_setup_delivers_every_task_once(tmp_path: Path) -> None:
    run = run_bench(
        "bench.amqp_scaling",
        "-n", str(TASKS),
        "--workers", "1,2",
        "--concurrency", "20",
        "--fast-workers", "1",
        "--light-rate", "10",
        "--light-seconds", "1",
        "--timeout", "60",
        out=tmp_path,
        timeout_s=300,
    )  # fmt: skip

    rows = run.results
    setups = [(r["scenario"], r["setup"]) for r in rows]
    assert len(setups) == 8  # slow: 2 direct + 2 amqp; fast: 2; light: 2
    for row in rows:
        assert row["done"] == row["tasks"] > 0, row
        assert row["duplicates"] == 0, row
        assert row["unseen_done"] == 0, row
        assert row["exit_codes"], row
        assert set(row["exit_codes"]) == {0}, row
    assert "| slow | amqp, 1 controller + 2 worker(s) × 20 |" in run.markdown
    assert "### Targets (issue 11)" in run.markdown
