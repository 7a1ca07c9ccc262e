"""Single creates that arrive together are written together ("group commit").

While one group's write is in flight, the creates that arrive queue up; the
next group is all of them: one hop to a worker thread, one transaction, one
multi-row INSERT (``TimerStore.create_each``), and each caller gets its own
row, replay or problem back. At 50 concurrent clients the hop and the
round trip, not the insert, were what a create cost; a group pays them once.

A lone create is written at once (nothing waits for company), so grouping
adds no latency when the api is quiet.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence

from starlette.concurrency import run_in_threadpool

from timer_controller.db.timers import Created, NewTimer, Outcome

log = logging.getLogger(__name__)

#: More rows than this in one group wait for the next: a bound on one transaction.
MAX_GROUP = 200

CreateEach = Callable[..., list[Outcome]]


class _Lane:
    """One event loop's queue (tests may run an app on more than one loop)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[NewTimer, asyncio.Future[Created]]] = []
        #: The task writing this lane's groups, while there is one.
        self.writer: asyncio.Task[None] | None = None


class CreateGroups:
    def __init__(self, create_each: CreateEach, *, max_group: int = MAX_GROUP) -> None:
        self._create_each = create_each
        self._max_group = max_group
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lane] = (
            weakref.WeakKeyDictionary()
        )

    async def create(self, timer: NewTimer) -> Created:
        """``store.create(timer=timer)``'s answer (or exception), written with its group."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = _Lane()
        answer: asyncio.Future[Created] = loop.create_future()
        lane.waiting.append((timer, answer))
        if lane.writer is None:
            # A task of its own: a caller that goes away does not stop its group's write.
            lane.writer = loop.create_task(self._write(lane))
        return await answer

    async def _write(self, lane: _Lane) -> None:
        try:
            while lane.waiting:
                group = lane.waiting[: self._max_group]
                del lane.waiting[: self._max_group]
                await self._write_group(group)
        finally:
            lane.writer = None

    async def _write_group(self, group: Sequence[tuple[NewTimer, asyncio.Future[Created]]]) -> None:
        timers = [timer for timer, _ in group]
        try:
            results = await run_in_threadpool(self._create_each, timers=timers)
        except BaseException as exc:  # every caller hears of it, then it goes on
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, answer), result in zip(group, results, strict=True):
            if answer.done():  # its caller went away
                continue
            if isinstance(result, Created):
                answer.set_result(result)
            else:
                answer.set_exception(result)
