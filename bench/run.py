"""Benchmark the controller against the seed and a raw loop, side by side.

``python -m bench [options]``: makes a fresh database, runs the real
migrations, starts one receiver, runs each scenario for each mode one after
the other, writes docs/benchmarks.md (and optionally JSON), drops the database.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import api_creates, claim_latency, db
from bench.api_creates import ApiResult
from bench.claim_latency import BigTableResult
from bench.document import load_average, machine_info, render
from bench.metrics import TrialResult
from bench.procs import ReceiverProcess, find_pid
from bench.scenarios import run_trials
from bench.trial import Context

log = logging.getLogger("bench")

MODES = ("seed", "raw", "controller", "defaults", "defaults-info")
SCENARIOS = ("burst", "steady", "pods", "big-table", "rss", "rss-hostile", "api")


def _csv(choices: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return number


def _ints(value: str) -> list[int]:
    return [_positive(v) for v in value.split(",") if v.strip()]


def _env_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--db-url",
        default=os.environ.get("BENCH_DATABASE_URL", db.DEFAULT_SERVER_URL),
        help="server URL; a scratch database bench_<random> is created and dropped",
    )
    p.add_argument(
        "--scenarios", type=_csv(SCENARIOS), default=list(SCENARIOS), help=",".join(SCENARIOS)
    )
    p.add_argument("--modes", type=_csv(MODES), default=list(MODES), help=",".join(MODES))
    p.add_argument("-n", "--tasks", type=_positive, default=20_000, help="burst size")
    p.add_argument("--burst-pods", type=_positive, default=1, help="pods for burst and steady")
    p.add_argument("--pods-list", type=_ints, default=[1, 2, 4], help="pod counts for 'pods'")
    p.add_argument("--seed-seconds", type=float, default=20.0, help="time bound for seed bursts")
    p.add_argument("--steady-seconds", type=float, default=10.0)
    p.add_argument("--steady-fraction", type=float, default=0.1, help="of measured burst capacity")
    p.add_argument("--steady-rate", type=float, help="tasks/s for every mode (overrides fraction)")
    p.add_argument(
        "--steady-runs",
        type=_positive,
        default=5,
        help="steady runs of defaults-info, a new pod each (the lateness target takes the worst)",
    )
    p.add_argument("--big-finished", type=int, default=1_000_000)
    p.add_argument("--big-waiting", type=int, default=100_000)
    p.add_argument(
        "--claims", type=_positive, default=200, help="timed claims per big-table variant"
    )
    p.add_argument(
        "--claim-batch", type=_positive, default=10, help="rows per timed claim (BATCH_SIZE)"
    )
    p.add_argument("--rss-tasks", type=_positive, default=3000)
    p.add_argument(
        "--rss-full-bodies", type=int, default=300, help="rss-hostile: rows with 1 MiB bodies"
    )
    p.add_argument(
        "--rss-oversized", type=int, default=20, help="rss-hostile: rows with 15 MiB bodies"
    )
    p.add_argument("--api-creates", type=_positive, default=20_000, help="api: single creates")
    p.add_argument("--api-clients", type=_positive, default=50, help="api: concurrent clients")
    p.add_argument("--api-batches", type=_positive, default=60, help="api: batches to create")
    p.add_argument("--api-batch-size", type=_positive, default=1000, help="api: timers per batch")
    p.add_argument("--poll-interval", default="0.5")
    p.add_argument(
        "--controller-env",
        type=_env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra env for controller pods (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="max wait per trial, seconds")
    p.add_argument("--output", type=Path, default=db.REPO_ROOT / "docs" / "benchmarks.md")
    p.add_argument("--json", type=Path, help="also write raw results as JSON here")
    p.add_argument(
        "--work-dir", type=Path, default=db.REPO_ROOT / "bench" / "results", help="pod logs go here"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    # Progress from the harness only: httpx and alembic chatter would drown it.
    log.setLevel(logging.INFO)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the pods and drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = db.Server.from_url(opts.db_url)
    log_dir = opts.work_dir / f"logs-{time.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True, exist_ok=True)
    load_at_start = load_average()
    results: list[TrialResult] = []
    big: BigTableResult | None = None
    api: ApiResult | None = None
    with db.scratch_database(server) as database:
        db.migrate(server, database)
        conn = server.connect(database)
        receiver = ReceiverProcess()
        try:
            base_env = {
                **server.env(database),
                "LOG_LEVEL": "WARNING",
                "POLL_INTERVAL": opts.poll_interval,
            }
            ctx = Context(
                server,
                database,
                conn,
                receiver,
                log_dir,
                base_env,
                {"controller": dict(opts.controller_env)},
                opts.timeout,
            )
            if server.host in ("127.0.0.1", "localhost", "::1"):
                ctx.db_pid = find_pid(("mariadbd", "mysqld"))
            results = run_trials(ctx, opts)
            if "big-table" in opts.scenarios:
                big = claim_latency.run(
                    server,
                    database,
                    finished=opts.big_finished,
                    waiting=opts.big_waiting,
                    claims=opts.claims,
                    batch=opts.claim_batch,
                )
            if "api" in opts.scenarios:
                db.truncate(conn)
                api = api_creates.run(
                    server,
                    database,
                    conn,
                    log_dir,
                    creates=opts.api_creates,
                    clients=opts.api_clients,
                    batches=opts.api_batches,
                    batch_size=opts.api_batch_size,
                )
            machine = machine_info(conn, load_at_start)
        finally:
            receiver.stop()
            conn.close()
    text = render(opts, machine, results, big, argv, api)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(text)
    if opts.json:
        opts.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "results": [r.as_dict() for r in results],
                    "big_table": None if big is None else _big_dict(big),
                    "api": None
                    if api is None
                    else {"note": api.note, "timings": [t.as_dict() for t in api.timings]},
                },
                indent=1,
            )
        )
    print(text)
    log.info("wrote %s; pod logs in %s", opts.output, log_dir)
    failed = any(r.note.startswith("ERROR") for r in results)
    return 1 if failed or (api is not None and api.note) else 0


def _big_dict(big: BigTableResult) -> dict[str, Any]:
    return {
        "explain": big.explain,
        "note": big.note,
        "timings": [
            {
                "variant": t.variant,
                "rows": t.rows,
                "method": t.method,
                "p50_ms": t.stat("p50"),
                "p99_ms": t.stat("p99"),
            }
            for t in big.timings
        ],
    }
