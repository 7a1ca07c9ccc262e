"""Reconnect pauses grow with the outage, within RECONNECT_WAIT_TIME and 30 s."""

from __future__ import annotations

import pytest

from timer_controller.broker.connection import reconnect_wait_s


@pytest.mark.parametrize(
    ("base_s", "outage_s", "expected_s"),
    [
        (1.0, 0.0, 1.0),
        (1.0, 1.5, 1.0),
        (1.0, 4.0, 2.0),
        (1.0, 20.0, 10.0),
        (1.0, 600.0, 30.0),
        (0.2, 1.0, 0.5),
        (45.0, 600.0, 45.0),
    ],
)
def test_reconnect_wait(base_s: float, outage_s: float, expected_s: float) -> None:
    assert reconnect_wait_s(base_s, outage_s) == expected_s
