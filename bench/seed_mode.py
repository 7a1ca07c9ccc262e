"""Seed mode: a small, faithful re-implementation of the original algorithm.

Every POLL_INTERVAL (0.5 s): claim BATCH_SIZE (10) due waiting tasks with
FOR UPDATE SKIP LOCKED, fire them with one default-transport httpx client,
await the whole batch, then mark each done or failed. That caps it at
20 tasks/s per process; it is the baseline every ratio is measured against.

    python -m bench.seed_mode      (reads DB_* and POLL_INTERVAL/BATCH_SIZE)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import UTC, datetime

import httpx
from sqlalchemy import URL, create_engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from timer_controller.db.models import Task

USER_AGENT = "timer-controller/seed"


def _engine_url() -> URL:
    return URL.create(
        "mysql+mysqldb",
        username=os.environ.get("DB_USER", "root"),
        password=os.environ.get("DB_PASSWORD", ""),
        host=os.environ.get("DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("DB_PORT", "3306")),
        database=os.environ.get("DB_NAME", "timer_db"),
    )


def claim(session_factory: sessionmaker[Session], owner: str, limit: int) -> list[Task]:
    with session_factory.begin() as session:
        tasks = list(
            session.scalars(
                select(Task)
                .where(Task.status == "waiting", Task.due_at <= func.utc_timestamp(6))
                .order_by(Task.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for task in tasks:
            task.status = "claimed"
            task.owner = owner
            task.attempts += 1
    # expire_on_commit=False: the detached objects keep their loaded values.
    return tasks


async def fire(client: httpx.AsyncClient, task: Task) -> tuple[int, bool, int | None]:
    now = datetime.now(UTC)
    try:
        response = await client.post(
            task.url,
            json={"id": task.id, "due_at": task.due_at.isoformat()},
            headers={
                "webhook-id": str(task.id),
                "webhook-timestamp": str(int(now.timestamp())),
                "user-agent": USER_AGENT,
            },
            timeout=float(os.environ.get("WEBHOOK_TIMEOUT", "10")),
        )
    except httpx.HTTPError:
        return task.id, False, None
    return task.id, response.is_success, response.status_code


def mark(
    session_factory: sessionmaker[Session], results: list[tuple[int, bool, int | None]]
) -> None:
    # One UPDATE per task, as the seed did.
    with session_factory.begin() as session:
        for task_id, ok, code in results:
            session.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(
                    status="done" if ok else "failed",
                    last_status_code=code,
                    owner=None,
                    finished_at=func.utc_timestamp(6),
                )
            )


async def run() -> None:
    poll_interval_s = float(os.environ.get("POLL_INTERVAL", "0.5"))
    batch_size = int(os.environ.get("BATCH_SIZE", "10"))
    owner = os.environ.get("POD_NAME", f"seed-{os.getpid()}")
    engine = create_engine(_engine_url(), connect_args={"init_command": "SET time_zone = '+00:00'"})
    session_factory = sessionmaker(engine, expire_on_commit=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            tasks = claim(session_factory, owner, batch_size)
            if tasks:
                results = await asyncio.gather(*(fire(client, t) for t in tasks))
                mark(session_factory, list(results))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_interval_s)
    engine.dispose()


if __name__ == "__main__":
    asyncio.run(run())
