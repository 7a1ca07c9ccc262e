"""big-table: does the claim slow down when the table holds a long history?

Two databases, same claimable rows: "empty" holds only the due rows the
measurement consumes; "big" adds FINISHED done rows and WAITING rows due in
the future. Claims alternate between the two, so background work (InnoDB
flushing the bulk load, anything else on the machine) hits both alike. Each
claim is timed directly, as the controller's own ``TaskRepository.claim_due``
(when importable) and as the equivalent SQL (SELECT ... FOR UPDATE SKIP
LOCKED + UPDATE + COMMIT).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import db
from bench.metrics import percentile

log = logging.getLogger(__name__)

WARMUP_CLAIMS = 5
CLAIM_SQL = (
    "SELECT id FROM tasks WHERE status = 'waiting' AND due_at <= UTC_TIMESTAMP(6)"
    " ORDER BY due_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED"
)
URL = "http://127.0.0.1:9/bench"


@dataclass
class ClaimTiming:
    variant: str
    rows: int
    method: str
    ms: list[float] = field(default_factory=list)

    def stat(self, name: str) -> float:
        if name == "mean":
            return sum(self.ms) / len(self.ms) if self.ms else float("nan")
        return percentile(self.ms, float(name.removeprefix("p")))


@dataclass
class BigTableResult:
    timings: list[ClaimTiming]
    explain: str
    note: str = ""


def _fill(conn: Any, *, finished: int, future_waiting: int, due: int) -> None:
    """Bulk-load with INSERT ... SELECT from MariaDB's sequence engine (seconds, not minutes)."""
    cur = conn.cursor()
    if finished:
        cur.execute(
            "INSERT INTO tasks (url, due_at, status, attempts, last_status_code, fired_at,"
            " finished_at) SELECT %s, ts, 'done', 1, 200, ts, ts FROM (SELECT"
            f" UTC_TIMESTAMP(6) - INTERVAL seq SECOND AS ts FROM seq_1_to_{finished}) s",
            (URL,),
        )
    if future_waiting:
        cur.execute(
            "INSERT INTO tasks (url, due_at) SELECT %s, UTC_TIMESTAMP(6) + INTERVAL seq"
            f" SECOND FROM seq_1_to_{future_waiting}",
            (URL,),
        )
    # Due rows last: the newest ids, as in a live table.
    cur.execute(
        "INSERT INTO tasks (url, due_at) SELECT %s, UTC_TIMESTAMP(6) - INTERVAL seq"
        f" MICROSECOND FROM seq_1_to_{due}",
        (URL,),
    )
    cur.execute("ANALYZE TABLE tasks")
    cur.fetchall()


def _sql_claimer(conn: Any, batch: int) -> Callable[[], None]:
    cur = conn.cursor()

    def claim() -> None:
        cur.execute("START TRANSACTION")
        cur.execute(CLAIM_SQL.format(limit=batch))
        ids = [str(r[0]) for r in cur.fetchall()]
        if ids:
            cur.execute(
                "UPDATE tasks SET status = 'claimed', owner = 'bench',"
                " attempts = attempts + 1 WHERE id IN (" + ",".join(ids) + ")"
            )
        cur.execute("COMMIT")

    return claim


def _repository_claimer(
    server: db.Server, database: str, batch: int, closers: list[Callable[[], None]]
) -> Callable[[], None]:
    # Imported here: the harness must still run when the controller's API moves.
    from sqlalchemy import URL as SaURL

    from timer_controller.db.repository import TaskRepository
    from timer_controller.db.setup import make_engine

    url = SaURL.create(
        "mysql+mysqldb",
        username=server.user,
        password=server.password,
        host=server.host,
        port=server.port,
        database=database,
        query={"charset": "utf8mb4"},
    )
    engine = make_engine(url)
    closers.append(engine.dispose)
    repo = TaskRepository(engine)

    def claim() -> None:
        repo.claim_due(owner="bench", limit=batch, lease_s=60.0, lookahead_s=0.0)

    return claim


def _interleave(claimers: dict[str, Callable[[], None]], claims: int) -> dict[str, list[float]]:
    """Time each claimer's calls, alternating which one goes first."""
    timings: dict[str, list[float]] = {name: [] for name in claimers}
    order = list(claimers)
    for index in range(WARMUP_CLAIMS + claims):
        for name in order if index % 2 else reversed(order):
            started = time.perf_counter()
            claimers[name]()
            if index >= WARMUP_CLAIMS:
                timings[name].append((time.perf_counter() - started) * 1000)
    return timings


def _unclaim(conn: Any) -> None:
    conn.cursor().execute(
        "UPDATE tasks SET status = 'waiting', owner = NULL, lease_expires_at = NULL,"
        " attempts = 0 WHERE status = 'claimed'"
    )


def _explain(conn: Any, batch: int) -> str:
    cur = conn.cursor()
    cur.execute("EXPLAIN " + CLAIM_SQL.format(limit=batch))
    names = [d[0] for d in cur.description]
    lines = [" | ".join(names)]
    lines += [" | ".join("" if v is None else str(v) for v in row) for row in cur.fetchall()]
    return "\n".join(lines)


def run(
    server: db.Server, database: str, *, finished: int, waiting: int, claims: int, batch: int
) -> BigTableResult:
    """``database`` (migrated) becomes "big"; a copy of its schema becomes "empty"."""
    due = (WARMUP_CLAIMS + claims) * batch
    future = max(0, waiting - due)
    rows = {"empty": due, "big": finished + future + due}
    with db.scratch_database(server) as empty_db:
        admin = server.connect()
        admin.cursor().execute(f"CREATE DATABASE `{empty_db}`")
        admin.cursor().execute(f"CREATE TABLE `{empty_db}`.tasks LIKE `{database}`.tasks")
        admin.close()
        conns = {"empty": server.connect(empty_db), "big": server.connect(database)}
        try:
            db.truncate(conns["big"])
            log.info("big-table: loading %d finished + %d waiting rows", finished, future + due)
            _fill(conns["big"], finished=finished, future_waiting=future, due=due)
            _fill(conns["empty"], finished=0, future_waiting=0, due=due)
            explain = _explain(conns["big"], batch)
            sql = _interleave({k: _sql_claimer(c, batch) for k, c in conns.items()}, claims)
            timings = [ClaimTiming(k, rows[k], "sql", ms) for k, ms in sql.items()]
            for conn in conns.values():
                _unclaim(conn)
            note = ""
            closers: list[Callable[[], None]] = []
            try:
                dbs = {"empty": empty_db, "big": database}
                repo = {k: _repository_claimer(server, d, batch, closers) for k, d in dbs.items()}
                by_repo = _interleave(repo, claims)
                timings += [ClaimTiming(k, rows[k], "controller", ms) for k, ms in by_repo.items()]
            except (ImportError, TypeError, AttributeError) as exc:
                note = f"controller claim not timed ({type(exc).__name__}: {exc})"
            finally:
                for close in closers:
                    close()
            db.truncate(conns["big"])
        finally:
            for conn in conns.values():
                conn.close()
    return BigTableResult(timings, explain, note)
