"""A signal that lands after start-up but before the loop's own handlers is not lost."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import pytest

from tests.support.databases import TestDatabase
from timer_controller.bootstrap import serve
from timer_controller.settings import load_settings
from timer_controller.startup import StopRequest


def test_a_stop_recorded_by_the_start_up_handlers_stops_the_loop_at_once(
    db: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(**db.env(), POLL_INTERVAL="5", SHUTDOWN_GRACE="5")
    early = StopRequest()
    early.handle(signal.SIGTERM, None)
    caplog.set_level(logging.INFO)

    started = time.monotonic()
    # The deadline only matters if the stop were lost: the loop would run on.
    code = asyncio.run(asyncio.wait_for(serve(settings, db.engine, early_stop=early), 30))

    assert code == 0
    assert time.monotonic() - started < 3  # not a poll interval, not the grace
    assert "SIGTERM received: stopping" in caplog.text
