"""How many not-yet-due tasks a claim may take: all but a tenth of the slots, and
at least the half batch a claim waits for."""

from __future__ import annotations

import pytest

from timer_controller.runtime.controller import claim_size, lookahead_room


@pytest.mark.parametrize(
    ("held_ahead", "max_in_flight", "batch_size", "room"),
    [
        (0, 100, 10, 90),  # the defaults: a tenth kept for due tasks
        (89, 100, 10, 1),
        (90, 100, 10, 0),
        (95, 100, 10, 0),
        (0, 100, 50, 75),  # half a batch kept, or a due task could never be claimed
        (0, 4, 4, 2),
        (2, 4, 4, 0),
        (0, 4, 1, 3),
        (0, 20, 10, 15),
        # One slot: never held by a task that is not due yet.
        (0, 1, 10, 0),
        (0, 3, 1, 2),
    ],
)
def test_lookahead_room(held_ahead: int, max_in_flight: int, batch_size: int, room: int) -> None:
    assert (
        lookahead_room(held_ahead=held_ahead, max_in_flight=max_in_flight, batch_size=batch_size)
        == room
    )


@pytest.mark.parametrize("max_in_flight", [1, 2, 3, 4, 7, 10, 64, 100, 1000])
@pytest.mark.parametrize("batch_size", [1, 2, 4, 10, 500])
def test_a_due_task_can_always_be_claimed_beside_a_full_look_ahead(
    max_in_flight: int, batch_size: int
) -> None:
    room = lookahead_room(held_ahead=0, max_in_flight=max_in_flight, batch_size=batch_size)
    free_beside_it = max_in_flight - room
    assert claim_size(free_slots=free_beside_it, batch_size=batch_size, max_in_flight=max_in_flight)
