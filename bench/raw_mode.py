"""Raw mode: the practical limit on this machine, hand-written, no framework.

Raw MySQLdb (each connection on its own thread, so claims and outcome writes
overlap with HTTP) and one aiohttp session. Claims big batches (BATCH_SIZE,
default 500) up to MAX_IN_FLIGHT, fires each task at its due time (claims
LOOKAHEAD ahead, like the controller), and writes outcomes in grouped
UPDATEs. No retries, no leases sweep: only what throughput needs.

    python -m bench.raw_mode       (reads the controller's DB_* and loop variables)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import MySQLdb

USER_AGENT = "timer-controller/raw"
Claimed = tuple[int, str, datetime]
Outcome = tuple[int, str, int | None]  # id, status, status code


def _connect() -> Any:
    conn = MySQLdb.connect(
        host=os.environ.get("DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("DB_PORT", "3306")),
        user=os.environ.get("DB_USER", "root"),
        password=os.environ.get("DB_PASSWORD", ""),
        database=os.environ.get("DB_NAME", "timer_db"),
        autocommit=False,
    )
    cur = conn.cursor()
    cur.execute("SET time_zone = '+00:00'")
    # READ COMMITTED: SKIP LOCKED claims must not take gap locks.
    cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    return conn


def claim(conn: Any, owner: str, limit: int, horizon: datetime) -> list[Claimed]:
    cur = conn.cursor()
    cur.execute(
        "SELECT id, url, due_at FROM tasks WHERE status = 'waiting' AND due_at <= %s"
        " ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (horizon, limit),
    )
    rows: list[Claimed] = list(cur.fetchall())
    if rows:
        cur.execute(
            "UPDATE tasks SET status = 'claimed', owner = %s, attempts = attempts + 1,"
            " lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL 60 SECOND"
            f" WHERE id IN ({','.join(str(r[0]) for r in rows)})",
            (owner,),
        )
    conn.commit()
    return rows


def record(conn: Any, outcomes: list[Outcome]) -> None:
    groups: dict[tuple[str, int | None], list[int]] = defaultdict(list)
    for task_id, status, code in outcomes:
        groups[(status, code)].append(task_id)
    cur = conn.cursor()
    for (status, code), ids in groups.items():
        cur.execute(
            "UPDATE tasks SET status = %s, last_status_code = %s, owner = NULL,"
            " lease_expires_at = NULL, finished_at = UTC_TIMESTAMP(6)"
            f" WHERE id IN ({','.join(map(str, ids))})",
            (status, code),
        )
    conn.commit()


def release(conn: Any, ids: list[int]) -> None:
    if ids:
        conn.cursor().execute(
            "UPDATE tasks SET status = 'waiting', owner = NULL, lease_expires_at = NULL,"
            f" attempts = attempts - 1 WHERE id IN ({','.join(map(str, ids))})"
        )
        conn.commit()


class RawLoop:
    """Claimer -> (timer until due) -> ready queue -> MAX_IN_FLIGHT workers -> recorder.

    The claimer keeps up to BATCH_SIZE claimed-but-unstarted tasks ahead of the
    workers, so no request ever waits for a database round trip.
    """

    def __init__(self) -> None:
        self.batch = int(os.environ.get("BATCH_SIZE", "500"))
        self.max_in_flight = int(os.environ.get("MAX_IN_FLIGHT", "500"))
        self.poll_s = float(os.environ.get("POLL_INTERVAL", "0.5"))
        self.lookahead_s = float(os.environ.get("LOOKAHEAD", str(self.poll_s)))
        self.timeout_s = float(os.environ.get("WEBHOOK_TIMEOUT", "10"))
        self.owner = os.environ.get("POD_NAME", f"raw-{os.getpid()}")
        self.stop = asyncio.Event()
        self.ready: asyncio.Queue[Claimed | None] = asyncio.Queue()
        #: Claimed and not yet taken by a worker (waiting for due_at, or queued).
        self.pending: dict[int, asyncio.TimerHandle | None] = {}
        self.low = asyncio.Event()  # set when pending drops below the batch size
        self.outcomes: list[Outcome] = []
        self.have_outcomes = asyncio.Event()
        self.workers_done = False
        # One thread per connection: MySQLdb releases the GIL while it waits.
        self.claim_db = ThreadPoolExecutor(1)
        self.record_db = ThreadPoolExecutor(1)

    def schedule(self, row: Claimed) -> None:
        delay_s = row[2].replace(tzinfo=UTC).timestamp() - time.time()
        if delay_s > 0:
            handle = asyncio.get_running_loop().call_later(delay_s, self.ready.put_nowait, row)
            self.pending[row[0]] = handle
        else:
            self.pending[row[0]] = None
            self.ready.put_nowait(row)

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while (row := await self.ready.get()) is not None:
            del self.pending[row[0]]
            if len(self.pending) < self.batch:
                self.low.set()
            outcome = await self.fire(session, row)
            # Append only now: the recorder swaps self.outcomes for a new list
            # while we wait, and a list looked up before the await would be lost.
            self.outcomes.append(outcome)
            self.have_outcomes.set()

    async def fire(self, session: aiohttp.ClientSession, row: Claimed) -> Outcome:
        task_id, url, due_at = row
        headers = {
            "webhook-id": str(task_id),
            "webhook-timestamp": str(int(time.time())),
            "user-agent": USER_AGENT,
        }
        body = {"id": task_id, "due_at": due_at.isoformat()}
        try:
            async with session.post(url, json=body, headers=headers) as response:
                await response.read()
                status = "done" if 200 <= response.status < 300 else "failed"
                return task_id, status, response.status
        except (aiohttp.ClientError, TimeoutError):
            return task_id, "failed", None

    async def recorder(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        while not (self.workers_done and not self.outcomes):
            await self.have_outcomes.wait()
            self.have_outcomes.clear()
            # Outcomes that arrive during the write form the next batch.
            batch, self.outcomes = self.outcomes, []
            if batch:
                await loop.run_in_executor(self.record_db, record, conn, batch)

    async def claimer(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            wake = [asyncio.ensure_future(self.stop.wait())]
            if len(self.pending) < self.batch:
                now = datetime.now(UTC).replace(tzinfo=None)
                horizon = now + timedelta(seconds=self.lookahead_s)
                args = (conn, self.owner, self.batch, horizon)
                rows = await loop.run_in_executor(self.claim_db, claim, *args)
                for row in rows:
                    self.schedule(row)
                if len(rows) == self.batch:
                    wake[0].cancel()
                    continue  # more may be due right now
            else:
                self.low.clear()
                wake.append(asyncio.ensure_future(self.low.wait()))
            _, waiting = await asyncio.wait(
                wake, timeout=self.poll_s, return_when="FIRST_COMPLETED"
            )
            for waiter in waiting:
                waiter.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        claim_conn, record_conn = _connect(), _connect()
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            recorder = asyncio.create_task(self.recorder(record_conn))
            workers = [asyncio.create_task(self.worker(session)) for _ in range(self.max_in_flight)]
            await self.claimer(claim_conn)
            # Graceful stop: what no worker has started goes back to waiting;
            # requests already sent finish and are recorded.
            unstarted = list(self.pending)
            for handle in self.pending.values():
                if handle is not None:
                    handle.cancel()
            while not self.ready.empty():
                self.ready.get_nowait()
            for _ in workers:
                self.ready.put_nowait(None)
            await asyncio.gather(*workers)
            self.workers_done = True
            await loop.run_in_executor(self.claim_db, release, claim_conn, unstarted)
            self.have_outcomes.set()
            await recorder


if __name__ == "__main__":
    asyncio.run(RawLoop().run())
