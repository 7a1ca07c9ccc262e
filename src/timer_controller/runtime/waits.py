"""Small waits and formatting the loop shares: every wait with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any


async def set_when_done(stop: asyncio.Event, writer: asyncio.Task[None]) -> None:
    # A writer that gives up ends the claim loop too: there is no point firing
    # tasks whose outcomes cannot be recorded.
    await asyncio.wait([writer])
    stop.set()


async def wait_any(
    *events: asyncio.Event, timeout_s: float, also: asyncio.Future[Any] | None = None
) -> None:
    """Until one of ``events`` is set (or ``also`` is done), or ``timeout_s`` passes."""
    waiters: list[asyncio.Future[Any]] = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(
            [*waiters, *([also] if also else [])],
            timeout=timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for waiter in waiters:
            waiter.cancel()


async def not_before(moment: float) -> None:
    """Return no earlier than ``moment`` (monotonic seconds).

    uvloop's timers count whole milliseconds from a cached clock (a sleep
    under half a millisecond does not wait at all), so they may wake up to
    about a millisecond early; asyncio's own never do. Checking again keeps
    a request or a hand-off from going out before its due time on either loop.
    """
    while (left_s := moment - time.monotonic()) > 0:  # noqa: ASYNC110 - a clock, no event
        await asyncio.sleep(left_s + 0.0005)


def short_ids(ids: Iterable[int]) -> str:
    listed = sorted(ids)
    if len(listed) <= 20:
        return ",".join(map(str, listed))
    return f"{','.join(map(str, listed[:10]))},…,{listed[-1]} ({len(listed)} ids)"
