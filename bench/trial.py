"""One trial: K pods of one mode against a freshly filled ``tasks`` table."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import db
from bench.hostile import HostileRow, check_outcomes, insert_hostile
from bench.metrics import TrialResult, summarise
from bench.procs import START_TIMEOUT_S, PodGroup, ReceiverProcess, cpu_s, process_cpu_s

log = logging.getLogger(__name__)

_TRIAL_NUMBERS = itertools.count(1)
POLL_S = 0.05  # how often the harness looks at the table while a trial runs

#: Per-mode defaults, layered over the shared env and under scenario settings.
MODE_ENV: dict[str, dict[str, str]] = {
    # The seed's fixed algorithm: 10 tasks per 0.5 s.
    "seed": {"BATCH_SIZE": "10", "POLL_INTERVAL": "0.5"},
    "raw": {"BATCH_SIZE": "500", "MAX_IN_FLIGHT": "500"},
    # Sized like raw, so the two compare like for like: raw has no
    # per-destination limit, and every trial sends to one receiver.
    "controller": {"BATCH_SIZE": "500", "MAX_IN_FLIGHT": "500", "MAX_IN_FLIGHT_PER_HOST": "500"},
    # The controller exactly as shipped (BATCH_SIZE=10, MAX_IN_FLIGHT=100).
    "defaults": {},
    # As shipped, log level included: users run INFO, two lines per timer.
    "defaults-info": {"LOG_LEVEL": "INFO"},
}


@dataclass
class Context:
    server: db.Server
    database: str
    conn: Any
    receiver: ReceiverProcess
    log_dir: Path
    #: Shared by every mode: DB_*, LOG_LEVEL, POLL_INTERVAL.
    base_env: dict[str, str]
    #: Per mode, from the command line (e.g. --controller-env BATCH_SIZE=100).
    overrides: dict[str, dict[str, str]]
    #: Upper bound on one trial's wait for its tasks, beyond the schedule itself.
    timeout_s: float
    #: The local database server's process, when it is on this machine.
    db_pid: int | None = None


@dataclass
class Plan:
    scenario: str
    mode: str
    pods: int
    #: Given "now" (naive UTC), the due_at of every task to insert.
    schedule: Callable[[datetime], list[datetime]]
    path: str = "/t"
    env: dict[str, str] = field(default_factory=dict)
    #: Stop after this many seconds even if tasks remain (seed on a burst).
    time_limit_s: float | None = None
    rate_per_s: float | None = None
    #: Poison rows and rows for hostile receivers, inserted beside the plain ones.
    hostile: list[HostileRow] = field(default_factory=list)


def run_trial(ctx: Context, plan: Plan) -> TrialResult:
    db.truncate(ctx.conn)
    ctx.receiver.reset()
    env = {**ctx.base_env, **MODE_ENV[plan.mode], **plan.env, **ctx.overrides.get(plan.mode, {})}
    result = TrialResult(plan.scenario, plan.mode, plan.pods, 0, rate_per_s=plan.rate_per_s)
    log.info("%s: %d %s pod(s)", plan.scenario, plan.pods, plan.mode)
    label = f"{next(_TRIAL_NUMBERS):02d}-{plan.scenario}-{plan.pods}p-"
    group = PodGroup(plan.mode, plan.pods, env, ctx.log_dir, label)
    try:
        group.wait_idle(START_TIMEOUT_S)
        cpu_before_s, side_before = group.cpu_s(), _side_cpu_s(ctx)
        due_ats = plan.schedule(db.utc_now())
        result.tasks = len(due_ats)
        db.insert_tasks(ctx.conn, ctx.receiver.url + plan.path, due_ats)
        hostile_ids = insert_hostile(ctx.conn, ctx.receiver.url, plan.hostile)
        result.tasks += len(hostile_ids)
        schedule_s = max(0.0, db.epoch_s(max(due_ats)) - time.time())
        result.bounded, result.note = _wait_finished(ctx, group, plan, result.tasks, schedule_s)
        problems = check_outcomes(ctx.conn, hostile_ids, plan.hostile)
        result.note = "; ".join(filter(None, [result.note, *problems]))
        pods_cpu_s = group.cpu_s() - cpu_before_s
        side = [after - before for after, before in zip(_side_cpu_s(ctx), side_before, strict=True)]
        result.peak_rss_mb = group.peak_rss_mb()
    finally:
        result.exit_codes = group.stop()
    summarise(result, db.fetch_rows(ctx.conn), ctx.receiver.records(), ctx.receiver.stats())
    wall_s, receiver_s, db_s = side
    result.receiver_cpu_pct = receiver_s / wall_s * 100
    if result.done:
        result.cpu_s_per_1k = pods_cpu_s / result.done * 1000
        result.db_cpu_s_per_1k = db_s / result.done * 1000
    return result


def _side_cpu_s(ctx: Context) -> list[float]:
    """Wall clock, receiver CPU and database CPU (NaN when the server is not local)."""
    db_s = process_cpu_s(ctx.db_pid) if ctx.db_pid is not None else math.nan
    return [time.monotonic(), cpu_s(ctx.receiver.pid), db_s]


def _wait_finished(
    ctx: Context, group: PodGroup, plan: Plan, total: int, schedule_s: float
) -> tuple[bool, str]:
    """Poll until every task is finished, the time limit, or the timeout.

    Returns (bounded, note).
    """
    started = time.monotonic()
    deadline = started + schedule_s + ctx.timeout_s
    while True:
        group.check_alive()
        if db.finished_count(ctx.conn) >= total:
            return False, ""
        now = time.monotonic()
        if plan.time_limit_s is not None and now - started >= plan.time_limit_s:
            return True, f"stopped after {plan.time_limit_s:g} s"
        if now >= deadline:
            return True, f"TIMED OUT after {now - started:.0f} s"
        time.sleep(POLL_S)  # the harness's sampling interval
