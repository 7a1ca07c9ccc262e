"""The api benchmark on a tiny workload, so it never rots: it runs, and every create succeeds.

Speed is the benchmark's business (docs/benchmarks.md), not a test's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.bench_runs import needs_database_server, run_bench

RUN_TIMEOUT_S = 180

pytestmark = needs_database_server


def test_the_api_scenario_times_the_api_and_the_raw_loops(tmp_path: Path) -> None:
    run = run_bench(
        "bench",
        "--scenarios", "api",
        "--api-creates", "300",
        "--api-clients", "10",
        "--api-batches", "3",
        "--api-batch-size", "200",
        out=tmp_path,
        timeout_s=RUN_TIMEOUT_S,
    )  # fmt: skip

    api: dict[str, Any] = run.results["api"]
    timings = {t["mode"]: t for t in api["timings"]}
    assert api["note"] == ""
    assert set(timings) == {"api single", "raw single", "api batch", "raw multi-row"}
    assert {mode: t["timers"] for mode, t in timings.items()} == {
        "api single": 300,
        "raw single": 300,
        "api batch": 600,
        "raw multi-row": 600,
    }
    assert all(t["errors"] == 0 and t["timers_per_s"] > 0 for t in timings.values())
    assert timings["api single"]["api_cpu_s"] > 0
    markdown = run.markdown
    assert "## API: creates over HTTP" in markdown
    assert "api batch creates ≥ 20,000 timers/s" in markdown
