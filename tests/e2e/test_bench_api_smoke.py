"""The api benchmark on a tiny workload, so it never rots: it runs, and every create succeeds.

Speed is the benchmark's business (docs/benchmarks.md), not a test's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
RUN_TIMEOUT_S = 180

pytestmark = [
    pytest.mark.db,
    pytest.mark.skipif(
        not DATABASE_URL,
        reason="TEST_DATABASE_URL is not set; the benchmark makes and drops its own database",
    ),
]


def test_the_api_scenario_times_the_api_and_the_raw_loops(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "bench",
        "--db-url", DATABASE_URL,
        "--scenarios", "api",
        "--api-creates", "300",
        "--api-clients", "10",
        "--api-batches", "3",
        "--api-batch-size", "200",
        "--output", str(tmp_path / "benchmarks.md"),
        "--json", str(tmp_path / "results.json"),
        "--work-dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    api: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())["api"]
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
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "## API: creates over HTTP" in markdown
    assert "api batch creates ≥ 20,000 timers/s" in markdown
