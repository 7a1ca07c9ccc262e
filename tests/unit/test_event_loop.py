"""Controllers and workers run on uvloop, and what must not start early never does."""

from __future__ import annotations

import asyncio
import time

import uvloop

from timer_controller.bootstrap import run_on_uvloop
from timer_controller.runtime.waits import not_before


async def loop_kind() -> int:
    return 1 if isinstance(asyncio.get_running_loop(), uvloop.Loop) else 0


def test_run_on_uvloop_runs_the_coroutine_on_uvloop() -> None:
    assert run_on_uvloop(loop_kind()) == 1


def test_asyncio_run_stays_on_the_default_loop() -> None:
    assert asyncio.run(loop_kind()) == 0


async def earliest_wake_s(deadlines_s: list[float], *, check: bool) -> float:
    """The most any wait returned ahead of its deadline (negative: none was early)."""
    earliest = -1.0
    for delay_s in deadlines_s:
        moment = time.monotonic() + delay_s
        if check:
            await not_before(moment)
        else:
            await asyncio.sleep(delay_s)
        earliest = max(earliest, moment - time.monotonic())
    return earliest


DEADLINES_S = [i / 10_000 for i in range(1, 40)]  # 0.1 to 3.9 ms


def test_a_bare_uvloop_sleep_can_wake_before_its_deadline() -> None:
    # Why not_before exists: the timers count whole milliseconds.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(earliest_wake_s(DEADLINES_S, check=False)) > 0


def test_not_before_never_returns_early_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(earliest_wake_s(DEADLINES_S, check=True)) <= 0
