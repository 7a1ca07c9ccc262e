"""DISPATCH=amqp processes run on uvloop; direct mode keeps asyncio's own loop."""

from __future__ import annotations

import asyncio

import uvloop

from timer_controller.bootstrap_amqp import run_on_uvloop


async def loop_kind() -> int:
    return 1 if isinstance(asyncio.get_running_loop(), uvloop.Loop) else 0


def test_run_on_uvloop_runs_the_coroutine_on_uvloop() -> None:
    assert run_on_uvloop(loop_kind()) == 1


def test_asyncio_run_stays_on_the_default_loop() -> None:
    assert asyncio.run(loop_kind()) == 0
