"""Pure computations on one trial's rows and receiver records (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.db import Row, epoch_s


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class TrialResult:
    scenario: str
    mode: str
    pods: int
    tasks: int
    #: True when the trial was cut off by a time bound (seed on a burst).
    bounded: bool = False
    done: int = 0
    failed: int = 0
    #: Requests the receiver got (duplicates included).
    fired: int = 0
    unique_fired: int = 0
    duplicates: int = 0
    #: Done rows the receiver never saw, and seen ids whose row is not done.
    unseen_done: int = 0
    seen_not_done: int = 0
    done_per_s: float = math.nan
    fired_per_s: float = math.nan
    lateness_ms: dict[str, float] = field(default_factory=dict)
    cpu_s_per_1k: float = math.nan
    #: CPU the database server spent during the trial, per 1,000 done tasks.
    db_cpu_s_per_1k: float = math.nan
    #: The receiver's CPU use during the trial: near 100% means it was the bottleneck.
    receiver_cpu_pct: float = math.nan
    peak_rss_mb: float = math.nan
    exit_codes: list[int] = field(default_factory=list)
    #: Steady scenario: the schedule's rate, tasks per second.
    rate_per_s: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarise(
    result: TrialResult,
    rows: Sequence[Row],
    records: Sequence[dict[str, Any]],
    stats: dict[str, int],
) -> None:
    """Fill ``result`` from the database rows and the receiver's records."""
    by_id = {row.id: row for row in rows}
    done = [row for row in rows if row.status == "done"]
    result.done = len(done)
    result.failed = sum(row.status == "failed" for row in rows)
    result.fired = stats["count"]
    result.unique_fired = stats["unique_ids"]
    result.duplicates = stats["duplicates"]

    first_seen: dict[int, float] = {}
    for rec in records:
        if rec["id"] is not None and rec["id"].isdigit():
            first_seen.setdefault(int(rec["id"]), rec["t"])
    result.unseen_done = sum(row.id not in first_seen for row in done)
    result.seen_not_done = sum(
        task_id not in by_id or by_id[task_id].status != "done" for task_id in first_seen
    )

    arrivals = sorted(rec["t"] for rec in records)
    finishes = [epoch_s(row.finished_at) for row in done if row.finished_at is not None]
    if arrivals and finishes:
        # From the first fire to the last done row, as the brief defines it.
        window_s = max(finishes) - arrivals[0]
        result.done_per_s = len(done) / window_s if window_s > 0 else math.nan
    if len(arrivals) > 1:
        result.fired_per_s = len(arrivals) / (arrivals[-1] - arrivals[0])

    lateness_ms = [
        (t - epoch_s(by_id[task_id].due_at)) * 1000
        for task_id, t in first_seen.items()
        if task_id in by_id
    ]
    if lateness_ms:
        result.lateness_ms = {
            "p50": percentile(lateness_ms, 50),
            "p99": percentile(lateness_ms, 99),
            "max": max(lateness_ms),
            # Negative means fired before due_at: a correctness problem, not speed.
            "min": min(lateness_ms),
        }
