"""The benchmark's own database work: throwaway databases, bulk inserts, polling.

Plain MySQLdb on purpose: the harness must not share code paths (or
overheads) with the controller it measures.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import MySQLdb
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER_URL = "mysql+mysqldb://root@127.0.0.1:3306/"
INSERT_CHUNK_ROWS = 5000
MIGRATE_TIMEOUT_S = 120


def utc_now() -> datetime:
    """Naive UTC, the schema's convention for due_at."""
    return datetime.now(UTC).replace(tzinfo=None)


def epoch_s(naive_utc: datetime) -> float:
    return naive_utc.replace(tzinfo=UTC).timestamp()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """Environment for a child process that can import ``bench`` and ``timer_controller``."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class Server:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> Server:
        parsed = make_url(url)
        return cls(
            host=parsed.host or "127.0.0.1",
            port=parsed.port or 3306,
            user=parsed.username or "root",
            password=parsed.password or "",
        )

    def connect(self, database: str | None = None) -> Any:
        kwargs: dict[str, Any] = {"database": database} if database else {}
        conn = MySQLdb.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            charset="utf8mb4",
            # Polling reads must see other sessions' commits: no long snapshot.
            autocommit=True,
            **kwargs,
        )
        conn.cursor().execute("SET time_zone = '+00:00'")
        return conn

    def env(self, database: str) -> dict[str, str]:
        """The controller's DB_* variables for this server and database."""
        return {
            "DB_HOST": self.host,
            "DB_PORT": str(self.port),
            "DB_USER": self.user,
            "DB_PASSWORD": self.password,
            "DB_NAME": database,
        }


@contextmanager
def scratch_database(server: Server) -> Iterator[str]:
    """A uniquely named database, dropped on exit whatever happens."""
    name = f"bench_{secrets.token_hex(4)}"
    conn = server.connect()
    try:
        yield name
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def migrate(server: Server, database: str) -> None:
    """Create the database and schema through the real entry point."""
    result = subprocess.run(
        [sys.executable, "-m", "timer_controller", "migrate"],
        env=child_env({**server.env(database), "LOG_LEVEL": "WARNING"}),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"`python -m timer_controller migrate` failed with exit code "
            f"{result.returncode}: " + " | ".join(tail)
        )


def insert_tasks(conn: Any, url: str, due_ats: Sequence[datetime]) -> None:
    """All rows in one transaction, so pods see the whole burst at once."""
    cur = conn.cursor()
    cur.execute("START TRANSACTION")
    for start in range(0, len(due_ats), INSERT_CHUNK_ROWS):
        chunk = due_ats[start : start + INSERT_CHUNK_ROWS]
        # mysqlclient rewrites executemany of INSERT ... VALUES into multi-row INSERTs.
        cur.executemany(
            "INSERT INTO tasks (url, due_at) VALUES (%s, %s)", [(url, d) for d in chunk]
        )
    cur.execute("COMMIT")


def truncate(conn: Any) -> None:
    conn.cursor().execute("TRUNCATE TABLE tasks")


def count_by_status(conn: Any) -> dict[str, int]:
    cur = conn.cursor()
    cur.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status")
    return {status: int(n) for status, n in cur.fetchall()}


def finished_count(conn: Any) -> int:
    cur = conn.cursor()
    cur.execute("SELECT COUNT(*) FROM tasks WHERE status IN ('done', 'failed')")
    return int(cur.fetchone()[0])


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    due_at: datetime
    status: str
    finished_at: datetime | None


def fetch_rows(conn: Any) -> list[Row]:
    cur = conn.cursor()
    cur.execute("SELECT id, due_at, status, finished_at FROM tasks")
    return [Row(*r) for r in cur.fetchall()]


def server_version(conn: Any) -> str:
    cur = conn.cursor()
    cur.execute("SELECT VERSION()")
    return str(cur.fetchone()[0])
