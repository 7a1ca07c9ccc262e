"""How long one dashboard overview takes with a long history, against an empty table.

    python -m bench.dashboard_overview [--finished 1000000] [--reads 50]

Both scratch databases get the same last hour: a done or failed row every
second, and 1,000 waiting rows. The "big" one also gets ``--finished`` rows
finished before that hour. ``StatsRepository.overview()`` is timed on each;
with the history behind it, it should cost what it costs without. For
contrast it also times the whole-table ``COUNT(*) GROUP BY status`` that the
overview leaves out. Prints one line per database.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import URL as SaURL
from sqlalchemy import Engine, text

from bench import db
from bench.metrics import percentile
from timer_controller.db.setup import make_engine
from timer_controller.db.stats import StatsRepository

URL = "http://127.0.0.1:9/bench"
WARMUP_READS = 3
HOUR_S = 3600


def _fill(conn: Any, *, finished: int) -> None:
    """The last hour, and ``finished`` older rows (MariaDB's sequence engine)."""
    cur = conn.cursor()
    _finished_rows(cur, count=HOUR_S, before_s=0)
    if finished:
        _finished_rows(cur, count=finished, before_s=HOUR_S + 60)
    cur.execute(
        "INSERT INTO tasks (url, due_at) SELECT %s, UTC_TIMESTAMP(6) + INTERVAL seq SECOND"
        " FROM seq_1_to_1000",
        (URL,),
    )
    cur.execute("ANALYZE TABLE tasks")
    cur.fetchall()


def _finished_rows(cur: Any, *, count: int, before_s: int) -> None:
    """``count`` rows, one a second back from ``before_s`` ago; every tenth failed, 3 ms late."""
    cur.execute(
        "INSERT INTO tasks (url, due_at, status, attempts, last_status_code, fired_at,"
        " finished_at) SELECT %s, ts - INTERVAL 3000 MICROSECOND,"
        " IF(MOD(seq, 10) = 0, 'failed', 'done'), 1, IF(MOD(seq, 10) = 0, 410, 200), ts, ts"
        f" FROM (SELECT seq, UTC_TIMESTAMP(6) - INTERVAL (seq + {before_s}) SECOND AS ts"
        f" FROM seq_1_to_{count}) s",
        (URL,),
    )


def _engine(server: db.Server, database: str) -> Engine:
    return make_engine(
        SaURL.create(
            "mysql+mysqldb",
            username=server.user,
            password=server.password,
            host=server.host,
            port=server.port,
            database=database,
            query={"charset": "utf8mb4"},
        )
    )


def _time(work: Callable[[], object], reads: int) -> list[float]:
    timings = []
    for index in range(WARMUP_READS + reads):
        started = time.perf_counter()
        work()
        if index >= WARMUP_READS:
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def _count_all(engine: Engine) -> Callable[[], object]:
    def count() -> object:
        with engine.connect() as conn:
            return conn.execute(text("SELECT status, COUNT(*) FROM tasks GROUP BY status")).all()

    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard_overview")
    parser.add_argument(
        "--db-url", default=os.environ.get("BENCH_DATABASE_URL", db.DEFAULT_SERVER_URL)
    )
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=50)
    opts = parser.parse_args(argv)
    server = db.Server.from_url(opts.db_url)
    with db.scratch_database(server) as big, db.scratch_database(server) as empty:
        engines: dict[str, Engine] = {}
        try:
            for name, rows in ((big, opts.finished), (empty, 0)):
                db.migrate(server, name)
                conn = server.connect(name)
                _fill(conn, finished=rows)
                conn.close()
                engines[name] = _engine(server, name)
            for label, name in (("last hour only", empty), (f"+ {opts.finished:,} older", big)):
                repo = StatsRepository(engines[name])
                overview = _time(repo.overview, opts.reads)
                counts = _time(_count_all(engines[name]), opts.reads)
                print(
                    f"{label:>18}: overview p50 {percentile(overview, 50):7.2f} ms,"
                    f" p99 {percentile(overview, 99):7.2f} ms;"
                    f" whole-table count p50 {percentile(counts, 50):8.2f} ms"
                )
        finally:
            for engine in engines.values():
                engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
