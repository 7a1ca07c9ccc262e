"""DISPATCH=amqp against direct, side by side: ``python -m bench.amqp_scaling``.

Scenarios (issue 11):

- ``slow``: a receiver answering after 1 s, ``--tasks`` (10,000) due at once:
  direct at the shipped MAX_IN_FLIGHT=100 and at 2000; amqp with one
  controller and 1, 2 and 4 workers at WORKER_CONCURRENCY=500.
- ``fast``: the fast receiver, the same burst, direct against amqp.
- ``light``: a light steady load (``--light-rate`` tasks/s) through the
  broker, for its lateness percentiles.

Each trial gets a fresh table and queues of its own (a unique AMQP_PREFIX,
deleted afterwards). Statements per timer are the server's ``Questions``
counter over the trial, less the harness's own polling. Results are a
markdown table on stdout and in ``--output``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika

from bench import amqp_targets, db
from bench.metrics import TrialResult, summarise
from bench.procs import (
    START_TIMEOUT_S,
    PodGroup,
    ReceiverProcess,
    find_pid,
    process_cpu_s,
)

log = logging.getLogger("bench.amqp")

POLL_S = 0.1
SLOW_PATH = "/slow/1000"
FAST_PATH = "/t"
LIGHT_LEAD_S = 1.0
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: Every trial sends to one receiver, so the per-destination limit (a quarter
#: of MAX_IN_FLIGHT unless set) would cap direct mode at a quarter of its
#: slots while workers have no such limit: each setup lifts it to MAX_IN_FLIGHT.
SHIPPED = {"MAX_IN_FLIGHT_PER_HOST": "100"}
#: The controller in amqp mode, and direct mode at the same total concurrency.
WIDE = {"BATCH_SIZE": "500", "MAX_IN_FLIGHT": "2000", "MAX_IN_FLIGHT_PER_HOST": "2000"}
SIZED = {"BATCH_SIZE": "500", "MAX_IN_FLIGHT": "500", "MAX_IN_FLIGHT_PER_HOST": "500"}


@dataclass
class Setup:
    label: str
    mode: str  # "direct" or "amqp"
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 0
    worker_env: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    scenario: str
    setup: Setup
    result: TrialResult
    statements_per_task: float = math.nan
    workers_cpu_s_per_1k: float = math.nan
    broker_cpu_s_per_1k: float = math.nan
    #: Of the whole machine's CPU time over the trial, the share that was busy.
    machine_busy: float = math.nan


def slow_setups(counts: list[int], concurrency: int) -> Iterator[Setup]:
    yield Setup("direct, MAX_IN_FLIGHT=100 (shipped)", "direct", SHIPPED)
    yield Setup("direct, MAX_IN_FLIGHT=2000", "direct", WIDE)
    for n in counts:
        yield Setup(
            f"amqp, 1 controller + {n} worker(s) × {concurrency}",
            "amqp",
            WIDE,
            workers=n,
            worker_env={"WORKER_CONCURRENCY": str(concurrency)},
        )


def fast_setups(workers: int) -> Iterator[Setup]:
    yield Setup("direct, BATCH_SIZE=MAX_IN_FLIGHT=500", "direct", SIZED)
    yield Setup(
        f"amqp, 1 controller + {workers} worker(s) × 500",
        "amqp",
        SIZED,
        workers=workers,
        worker_env={"WORKER_CONCURRENCY": "500"},
    )


def run_one(ctx: Context, scenario: str, setup: Setup, due_in_s: list[float], path: str) -> Row:
    db.truncate(ctx.conn)
    ctx.receiver.reset()
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    env = {**ctx.base_env, **setup.env}
    if setup.mode == "amqp":
        env |= {"DISPATCH": "amqp", "AMQP_URL": AMQP_URL, "AMQP_PREFIX": prefix}
    mode = "amqp" if setup.mode == "amqp" else "controller"
    result = TrialResult(scenario, setup.label, 1 + setup.workers, len(due_in_s))
    log.info("%s: %s", scenario, setup.label)
    groups = [PodGroup(mode, 1, env, ctx.log_dir, f"{scenario}-{prefix}-")]
    if setup.workers:
        worker_env = {
            **env,
            **setup.worker_env,
            "LOG_LEVEL": "WARNING",
            "WEBHOOK_TIMEOUT": "10",
        }
        worker_env = {k: v for k, v in worker_env.items() if not k.startswith("DB_")}
        groups.append(PodGroup("worker", setup.workers, worker_env, ctx.log_dir, f"{prefix}-"))
    row = Row(scenario, setup, result)
    try:
        for group in groups:
            group.wait_idle(START_TIMEOUT_S)
        cpu_before = [g.cpu_s() for g in groups]
        db_before = process_cpu_s(ctx.db_pid) if ctx.db_pid else math.nan
        broker_before = process_cpu_s(ctx.broker_pid) if ctx.broker_pid else math.nan
        machine_before = machine_cpu()
        questions_before, wall_before = questions(ctx.conn), time.monotonic()
        now = db.utc_now()
        db.insert_tasks(
            ctx.conn, ctx.receiver.url + path, [now + timedelta(seconds=s) for s in due_in_s]
        )
        polls = wait_finished(ctx, groups, len(due_in_s), max(due_in_s))
        # Each poll is one statement, and reading the counter is one more.
        row.statements_per_task = questions(ctx.conn) - questions_before - polls - 2
        cpu_after = [g.cpu_s() for g in groups]
        wall_s = time.monotonic() - wall_before
        db_s = (process_cpu_s(ctx.db_pid) if ctx.db_pid else math.nan) - db_before
        broker_s = (process_cpu_s(ctx.broker_pid) if ctx.broker_pid else math.nan) - broker_before
        machine_after = machine_cpu()
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        row.machine_busy = busy / total if total else math.nan
    finally:
        result.exit_codes = [code for g in groups for code in g.stop()]
        if setup.mode == "amqp":
            asyncio.run(delete_queues(prefix))
    summarise(result, db.fetch_rows(ctx.conn), ctx.receiver.records(), ctx.receiver.stats())
    if result.done:
        row.statements_per_task /= result.done
        result.cpu_s_per_1k = (cpu_after[0] - cpu_before[0]) / result.done * 1000
        result.db_cpu_s_per_1k = db_s / result.done * 1000
        row.broker_cpu_s_per_1k = broker_s / result.done * 1000
        workers_cpu = sum(cpu_after[1:]) - sum(cpu_before[1:])
        if setup.workers:
            row.workers_cpu_s_per_1k = workers_cpu / result.done * 1000
            result.note = f"workers {workers_cpu / wall_s * 100:.0f}% CPU"
    return row


def wait_finished(ctx: Context, groups: list[PodGroup], total: int, schedule_s: float) -> int:
    """Poll until every task is finished or the timeout; the number of polls."""
    deadline = time.monotonic() + schedule_s + ctx.timeout_s
    polls = 0
    while time.monotonic() < deadline:
        for group in groups:
            group.check_alive()
        polls += 1
        if db.finished_count(ctx.conn) >= total:
            return polls
        time.sleep(POLL_S)  # the harness's sampling interval
    raise RuntimeError(f"timed out after {ctx.timeout_s:.0f} s")


def machine_cpu() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (/proc/stat)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def questions(conn: Any) -> int:
    cur = conn.cursor()
    cur.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
    return int(cur.fetchone()[1])


async def delete_queues(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=30)
    async with connection:
        channel = await connection.channel()
        for suffix in ("deliveries", "outcomes", "dead"):
            await channel.queue_delete(f"{prefix}.{suffix}", timeout=30)


@dataclass
class Context:
    conn: Any
    receiver: ReceiverProcess
    log_dir: Path
    base_env: dict[str, str]
    timeout_s: float
    db_pid: int | None
    broker_pid: int | None


def render(rows: list[Row], opts: argparse.Namespace) -> str:
    lines = [
        "## DISPATCH=amqp against direct (`python -m bench.amqp_scaling`)",
        "",
        f"`{' '.join(sys.argv[1:]) or '(defaults)'}` on {os.cpu_count()} CPUs; "
        f"slow receiver answers after 1 s; {opts.tasks} tasks per burst; one receiver, "
        "so every setup sets MAX_IN_FLIGHT_PER_HOST to its MAX_IN_FLIGHT.",
        "",
        "| scenario | setup | done | done/s | lateness p50 / p99 ms | duplicates "
        "| statements/task | controller CPU s/1k | workers CPU s/1k | broker CPU s/1k "
        "| DB CPU s/1k | machine busy | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        r = row.result
        late = r.lateness_ms
        lines.append(
            f"| {row.scenario} | {row.setup.label} | {r.done}/{r.tasks} | {r.done_per_s:,.0f} "
            f"| {late.get('p50', math.nan):.1f} / {late.get('p99', math.nan):.1f} "
            f"| {r.duplicates} | {row.statements_per_task:.4f} | {r.cpu_s_per_1k:.2f} "
            f"| {row.workers_cpu_s_per_1k:.2f} | {row.broker_cpu_s_per_1k:.2f} "
            f"| {r.db_cpu_s_per_1k:.2f} | {row.machine_busy:.0%} | {r.note} |"
        )
    lines += ["", "### Targets (issue 11)", "", *amqp_targets.render(rows)]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.amqp_scaling", description=__doc__)
    p.add_argument("--db-url", default=os.environ.get("BENCH_DATABASE_URL", db.DEFAULT_SERVER_URL))
    p.add_argument("--scenarios", default="slow,fast,light")
    p.add_argument("-n", "--tasks", type=int, default=10_000)
    p.add_argument("--workers", default="1,2,4", help="worker counts for the slow scenario")
    p.add_argument("--concurrency", type=int, default=500, help="WORKER_CONCURRENCY (slow)")
    p.add_argument("--fast-workers", type=int, default=2)
    p.add_argument("--light-rate", type=float, default=20.0, help="tasks/s")
    p.add_argument("--light-seconds", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=600.0, help="max wait per trial, seconds")
    p.add_argument("--output", type=Path, default=db.REPO_ROOT / "docs" / "benchmarks-amqp.md")
    p.add_argument("--json", type=Path, help="also write raw results as JSON here")
    p.add_argument("--work-dir", type=Path, default=db.REPO_ROOT / "bench" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    server = db.Server.from_url(opts.db_url)
    log_dir = opts.work_dir / f"amqp-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    scenarios = {s.strip() for s in opts.scenarios.split(",")}
    counts = [int(n) for n in opts.workers.split(",") if n.strip()]
    burst = [0.0] * opts.tasks
    light_n = max(1, round(opts.light_rate * opts.light_seconds))
    light = [LIGHT_LEAD_S + i / opts.light_rate for i in range(light_n)]
    rows: list[Row] = []
    with db.scratch_database(server) as database:
        db.migrate(server, database)
        conn = server.connect(database)
        receiver = ReceiverProcess()
        try:
            base_env = {**server.env(database), "LOG_LEVEL": "WARNING", "POLL_INTERVAL": "0.5"}
            local = server.host in ("127.0.0.1", "localhost", "::1")
            db_pid = find_pid(("mariadbd", "mysqld")) if local else None
            broker_pid = find_pid(("beam.smp",)) if local else None
            ctx = Context(conn, receiver, log_dir, base_env, opts.timeout, db_pid, broker_pid)
            if "slow" in scenarios:
                for setup in slow_setups(counts, opts.concurrency):
                    rows.append(run_one(ctx, "slow", setup, burst, SLOW_PATH))
            if "fast" in scenarios:
                for setup in fast_setups(opts.fast_workers):
                    rows.append(run_one(ctx, "fast", setup, burst, FAST_PATH))
            if "light" in scenarios:
                for setup in fast_setups(1):
                    rows.append(run_one(ctx, "light", setup, light, FAST_PATH))
        finally:
            receiver.stop()
            conn.close()
    text = render(rows, opts)
    opts.output.write_text(text)
    if opts.json:
        raw = [
            {
                "setup": r.setup.label,
                "statements_per_task": r.statements_per_task,
                "workers_cpu_s_per_1k": r.workers_cpu_s_per_1k,
                "broker_cpu_s_per_1k": r.broker_cpu_s_per_1k,
                "machine_busy": r.machine_busy,
            }
            | r.result.as_dict()
            for r in rows
        ]
        opts.json.write_text(json.dumps(raw, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
