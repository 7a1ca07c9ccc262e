"""Background chores beside the loop: retention and the backlog gauge.

Both run on their own thread so a slow delete never delays a claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError

from timer_controller.db.repository import TaskRepository
from timer_controller.ops.metrics import Metrics

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0
BACKLOG_EVERY_S = 10.0
# Between delete batches: lets claims and writes take the locks they need.
CLEANUP_PAUSE_S = 0.05


class Upkeep:
    def __init__(
        self,
        repo: TaskRepository,
        metrics: Metrics,
        *,
        retention_s: float,
        cleanup_batch: int,
        sample_backlog: bool,
    ) -> None:
        self._repo = repo
        self._metrics = metrics
        self._retention_s = retention_s
        self._cleanup_batch = cleanup_batch
        self._sample_backlog = sample_backlog
        self._stopping = threading.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="upkeep")

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_purge = time.monotonic() + RETENTION_EVERY_S / 4  # not all pods at start-up
        # A purge runs on the upkeep thread; this ends it between two batches.
        relay = asyncio.create_task(self._relay_stop(stop))
        try:
            while not stop.is_set():
                now = time.monotonic()
                if self._sample_backlog:
                    await self._safely(loop, "backlog sample", self._sample)
                if self._retention_s > 0 and now >= next_purge:
                    next_purge = now + RETENTION_EVERY_S
                    await self._safely(loop, "retention", self.purge_once)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), BACKLOG_EVERY_S)
        finally:
            self._stopping.set()
            relay.cancel()
            self._executor.shutdown(wait=False)

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    def purge_once(self) -> int | None:
        deleted = self._repo.purge_finished(
            older_than_s=self._retention_s,
            batch_size=self._cleanup_batch,
            pause=self._pause,
        )
        if deleted:
            log.info(
                "retention deleted %d finished tasks older than %gs",
                deleted,
                self._retention_s,
                extra={"event": "retention", "deleted": deleted},
            )
        return deleted

    def _pause(self) -> bool:
        return not self._stopping.wait(CLEANUP_PAUSE_S)

    def _sample(self) -> None:
        self._metrics.backlog.set(self._repo.count_backlog())

    async def _safely(self, loop: asyncio.AbstractEventLoop, what: str, job: object) -> None:
        try:
            await loop.run_in_executor(self._executor, job)  # type: ignore[arg-type]
        except DBAPIError as exc:
            log.warning("%s skipped: %s", what, str(exc.orig)[:200])
