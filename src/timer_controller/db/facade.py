"""The async face of the synchronous repository: every thread hop is here.

The loop runs on one asyncio thread; each kind of database work has a
thread of its own, so a long purge never delays a claim or the lease
sweep, and a claim never waits behind an outcome write:

| lane     | runs                                  |
|----------|---------------------------------------|
| claims   | claim_due, renew_leases, release      |
| writes   | record_outcomes                       |
| sweeps   | the lease sweep                       |
| upkeep   | purge, backlog count                  |

The database clock is observed here, from each claim's SELECT.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from timer_controller.db.clock import DbClock
from timer_controller.db.repository import TaskRepository
from timer_controller.domain.task import ClaimBatch, Transition
from timer_controller.errors import StorageError

R = TypeVar("R")


class AsyncStorage:
    def __init__(self, repo: TaskRepository, clock: DbClock) -> None:
        self._repo = repo
        self._clock = clock
        self._claims = ThreadPoolExecutor(1, thread_name_prefix="claims")
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="writes")
        self._sweeps = ThreadPoolExecutor(1, thread_name_prefix="sweeps")
        self._upkeep = ThreadPoolExecutor(1, thread_name_prefix="upkeep")

    async def open_lanes(self) -> None:
        """Open the claims and writes lanes' kept connections before the first claim.

        Otherwise the first outcome write of a process connects (and sets up
        its session) in the middle of the first burst; a failure here is
        left for that first call to meet and retry.
        """
        with contextlib.suppress(StorageError):
            for lane in (self._claims, self._writes):
                await self._on(lane, self._repo.open_thread_connection)

    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        lease_s: float,
        lookahead_s: float,
        skip_prefixes: Collection[str] = (),
        ahead_limit: int | None = None,
    ) -> ClaimBatch:
        result = await self._on(
            self._claims,
            lambda: self._repo.claim_due(
                owner=owner,
                limit=limit,
                lease_s=lease_s,
                lookahead_s=lookahead_s,
                skip_prefixes=skip_prefixes,
                ahead_limit=ahead_limit,
            ),
        )
        if result.db_now is not None and result.local_before is not None:
            self._clock.observe(
                result.db_now, local_before=result.local_before, uncertainty_s=result.select_s
            )
        return ClaimBatch(tasks=result.tasks, selected_at=result.selected_at)

    async def renew(self, *, owner: str, task_ids: Collection[int], lease_s: float) -> int:
        return await self._on(
            self._claims,
            lambda: self._repo.renew_leases(owner=owner, task_ids=task_ids, lease_s=lease_s),
        )

    async def release(self, *, owner: str, task_ids: Collection[int]) -> int:
        return await self._on(
            self._claims, lambda: self._repo.release(owner=owner, task_ids=task_ids)
        )

    async def record(self, *, owner: str | None, transitions: Sequence[Transition]) -> int:
        # Shielded: a cancelled caller must not leave a write half-observed;
        # the thread finishes it either way.
        return await asyncio.shield(
            self._on(
                self._writes,
                lambda: self._repo.record_outcomes(owner=owner, transitions=transitions),
            )
        )

    async def sweep(self, *, default_max_attempts: int) -> int:
        return await self._on(
            self._sweeps,
            lambda: self._repo.sweep_expired_leases(default_max_attempts=default_max_attempts),
        )

    async def purge(
        self, *, older_than_s: float, batch_size: int, pause: Callable[[], bool]
    ) -> int | None:
        return await self._on(
            self._upkeep,
            lambda: self._repo.purge_finished(
                older_than_s=older_than_s, batch_size=batch_size, pause=pause
            ),
        )

    async def count_backlog(self) -> int:
        return await self._on(self._upkeep, self._repo.count_backlog)

    def close(self) -> None:
        """Let the lanes' threads end; a call still running finishes on its own.

        Calls queued behind it are dropped: at exit the interpreter waits for
        each lane's thread, and a silent database would make each queued
        call cost another DB_TIMEOUT.
        """
        # Claims and writes keep their connections between calls: each is closed
        # on its own lane's thread (dropped like any queued call if one is busy).
        for lane in (self._claims, self._writes):
            lane.submit(self._repo.close_thread_connection)
        for lane in (self._claims, self._writes, self._sweeps, self._upkeep):
            lane.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    async def _on(lane: ThreadPoolExecutor, work: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(lane, work)
