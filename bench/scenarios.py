"""The trial scenarios: burst, steady, pods and peak RSS; each yields TrialResults."""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from bench.hostile import hostile_rows
from bench.metrics import TrialResult
from bench.trial import Context, Plan, run_trial

log = logging.getLogger(__name__)

#: First steady task is due this long after the insert, so inserting never makes it late.
STEADY_LEAD_S = 1.0
#: Steady rates when no burst was measured: ~10% of a typical capacity here.
FALLBACK_STEADY_RATE = {
    "seed": 2.0,
    "raw": 300.0,
    "controller": 100.0,
    "defaults": 100.0,
    "defaults-info": 100.0,
}
#: Scaling and memory are about the engine, not its shipped sizes: those run
#: only the like-for-like modes.
SIZED_MODES = ("raw", "controller")
#: Modes whose steady lateness is a target: run --steady-runs times, worst reported.
LATENESS_MODES = ("defaults-info",)
#: Each task takes this long at the receiver, so MAX_IN_FLIGHT requests pile up.
RSS_SLOW_MS = 1000
RSS_MAX_IN_FLIGHT = 1000


def all_due_now(count: int) -> Callable[[datetime], list[datetime]]:
    return lambda now: [now] * count


def evenly_spread(count: int, rate_per_s: float) -> Callable[[datetime], list[datetime]]:
    def schedule(now: datetime) -> list[datetime]:
        first = now + timedelta(seconds=STEADY_LEAD_S)
        return [first + timedelta(seconds=i / rate_per_s) for i in range(count)]

    return schedule


def _run(ctx: Context, plan: Plan) -> TrialResult:
    """Run one trial; a failed trial becomes a row with its reason, not an abort."""
    try:
        return run_trial(ctx, plan)
    except RuntimeError as exc:
        log.error("%s/%s failed: %s", plan.scenario, plan.mode, exc)
        return TrialResult(plan.scenario, plan.mode, plan.pods, 0, note=f"ERROR: {exc}")


def burst(ctx: Context, opts: argparse.Namespace) -> Iterator[TrialResult]:
    for mode in opts.modes:
        yield _run(
            ctx,
            Plan(
                "burst",
                mode,
                opts.burst_pods,
                all_due_now(opts.tasks),
                # The seed's ~20 tasks/s would need ~17 min for 20k: sample its rate.
                time_limit_s=opts.seed_seconds if mode == "seed" else None,
            ),
        )


def steady(
    ctx: Context, opts: argparse.Namespace, capacity: dict[str, float]
) -> Iterator[TrialResult]:
    for mode in opts.modes:
        if opts.steady_rate:
            rate = opts.steady_rate
        elif math.isfinite(capacity.get(mode, math.nan)):
            rate = max(1.0, round(capacity[mode] * opts.steady_fraction, 1))
        else:
            rate = FALLBACK_STEADY_RATE[mode]
        count = max(1, round(rate * opts.steady_seconds))
        schedule = evenly_spread(count, rate)
        # The lateness target is the worst of several runs, each with a new pod.
        for _ in range(opts.steady_runs if mode in LATENESS_MODES else 1):
            plan = Plan("steady", mode, opts.burst_pods, schedule, rate_per_s=rate)
            yield _run(ctx, plan)


def pods(ctx: Context, opts: argparse.Namespace) -> Iterator[TrialResult]:
    # The seed is a single-process design capped by its sleep: scaling it says nothing.
    for mode in (m for m in opts.modes if m in SIZED_MODES):
        for count in opts.pods_list:
            yield _run(ctx, Plan("pods", mode, count, all_due_now(opts.tasks)))


def rss(ctx: Context, opts: argparse.Namespace) -> Iterator[TrialResult]:
    for mode in (m for m in opts.modes if m in SIZED_MODES):
        plan = Plan(
            "rss",
            mode,
            1,
            all_due_now(opts.rss_tasks),
            path=f"/slow/{RSS_SLOW_MS}",
            # One receiver: without lifting the per-destination limit (a
            # quarter of MAX_IN_FLIGHT) only 250 requests would be open.
            env={
                "MAX_IN_FLIGHT": str(RSS_MAX_IN_FLIGHT),
                "MAX_IN_FLIGHT_PER_HOST": str(RSS_MAX_IN_FLIGHT),
            },
        )
        yield _run(ctx, plan)


def rss_hostile(ctx: Context, opts: argparse.Namespace) -> Iterator[TrialResult]:
    """The shipped defaults (plus FOLLOW_REDIRECTS, so redirect bombs are followed)
    against plain tasks to a slow receiver mixed with hostile rows and receivers."""
    rows = hostile_rows(full_bodies=opts.rss_full_bodies, oversized_bodies=opts.rss_oversized)
    plan = Plan(
        "rss-hostile",
        "defaults",
        1,
        all_due_now(opts.rss_tasks),
        path=f"/slow/{RSS_SLOW_MS}",
        env={"FOLLOW_REDIRECTS": "true"},
        hostile=rows,
    )
    yield _run(ctx, plan)


def run_trials(ctx: Context, opts: argparse.Namespace) -> list[TrialResult]:
    results: list[TrialResult] = []
    if "burst" in opts.scenarios:
        results += burst(ctx, opts)
    if "steady" in opts.scenarios:
        capacity = {r.mode: r.done_per_s for r in results if r.scenario == "burst"}
        results += steady(ctx, opts, capacity)
    if "pods" in opts.scenarios:
        results += pods(ctx, opts)
    if "rss" in opts.scenarios:
        results += rss(ctx, opts)
    if "rss-hostile" in opts.scenarios:
        results += rss_hostile(ctx, opts)
    return results
