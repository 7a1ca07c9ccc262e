"""The benchmark's rss-hostile trial at toy size, so it never rots.

Poison rows, oversized bodies and hostile receivers against one pod at the
shipped defaults: every row ends as expected and the pod stays under the
memory promise. The real numbers come from a full run on a quiet machine.
"""

from __future__ import annotations

from pathlib import Path

from bench.hostile import RSS_PROMISE_MB
from tests.support.bench_runs import needs_database_server, run_bench

RUN_TIMEOUT_S = 240

pytestmark = needs_database_server


def test_rss_hostile_trial_ends_every_row_as_expected_within_the_promise(tmp_path: Path) -> None:
    run = run_bench(
        "bench",
        "--scenarios", "rss-hostile",
        "--modes", "defaults",
        "--rss-tasks", "20",
        "--rss-full-bodies", "5",
        "--rss-oversized", "1",
        "--timeout", "90",
        out=tmp_path,
        timeout_s=RUN_TIMEOUT_S,
    )  # fmt: skip

    (trial,) = run.results["results"]
    assert trial["note"] == "", trial["note"]
    assert trial["exit_codes"] == [0]
    assert 0 < trial["peak_rss_mb"] <= RSS_PROMISE_MB
    # Five poison rows and one 15 MiB body fail; every other row is done.
    assert trial["done"] == trial["tasks"] - 5
