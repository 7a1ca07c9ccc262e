"""The benchmark's rss-hostile trial at toy size, so it never rots.

Poison rows, oversized bodies and hostile receivers against one pod at the
shipped defaults: every row ends as expected and the pod stays under the
memory promise. The real numbers come from a full run on a quiet machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.hostile import RSS_PROMISE_MB

REPO_ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
RUN_TIMEOUT_S = 240

pytestmark = [
    pytest.mark.db,
    pytest.mark.skipif(not DATABASE_URL, reason="TEST_DATABASE_URL is not set"),
]


def test_rss_hostile_trial_ends_every_row_as_expected_within_the_promise(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "bench",
        "--db-url", DATABASE_URL,
        "--scenarios", "rss-hostile",
        "--modes", "defaults",
        "--rss-tasks", "20",
        "--rss-full-bodies", "5",
        "--rss-oversized", "1",
        "--timeout", "90",
        "--output", str(tmp_path / "benchmarks.md"),
        "--json", str(tmp_path / "results.json"),
        "--work-dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    (trial,) = json.loads((tmp_path / "results.json").read_text())["results"]
    assert trial["note"] == "", trial["note"]
    assert trial["exit_codes"] == [0]
    assert 0 < trial["peak_rss_mb"] <= RSS_PROMISE_MB
    # Five poison rows and one 15 MiB body fail; every other row is done.
    assert trial["done"] == trial["tasks"] - 5
