"""How many not-yet-due tasks a claim may take: at most half the slots."""

from __future__ import annotations

import pytest

from timer_controller.runtime.controller import lookahead_room


@pytest.mark.parametrize(
    ("held_ahead", "max_in_flight", "room"),
    [
        (0, 100, 50),
        (49, 100, 1),
        (50, 100, 0),
        (70, 100, 0),
        (0, 4, 2),
        (2, 4, 0),
        # One slot: never held by a task that is not due yet.
        (0, 1, 0),
        (0, 3, 1),
    ],
)
def test_lookahead_room(held_ahead: int, max_in_flight: int, room: int) -> None:
    assert lookahead_room(held_ahead=held_ahead, max_in_flight=max_in_flight) == room
