"""Acks folded into as few frames as is safe: a run from the low end is one multiple ack."""

from __future__ import annotations

import asyncio
from typing import cast

import aiormq.abc

from timer_controller.broker.acks import ChannelAcks


class Channel:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bool]] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.frames.append((delivery_tag, multiple))


def acks_on(channel: Channel, tags: range) -> ChannelAcks:
    acks = ChannelAcks(cast(aiormq.abc.AbstractChannel, channel))
    for tag in tags:
        acks.received(tag)
    return acks


def test_acks_asked_together_from_the_low_end_are_one_multiple_ack() -> None:
    channel = Channel()
    acks = acks_on(channel, range(1, 6))

    async def scenario() -> None:
        await asyncio.gather(*(acks.ack(tag) for tag in (3, 1, 2)))
        await asyncio.gather(acks.ack(4), acks.ack(5))

    asyncio.run(scenario())

    assert channel.frames == [(3, True), (5, True)]


def test_an_ack_beyond_a_delivery_still_open_goes_alone_at_once() -> None:
    channel = Channel()
    acks = acks_on(channel, range(1, 5))

    async def scenario() -> None:
        await asyncio.gather(acks.ack(2), acks.ack(4))
        assert channel.frames == [(2, False), (4, False)]  # 1 and 3 still running
        await acks.ack(1)
        await acks.ack(3)

    asyncio.run(scenario())

    # 1 folds in the already-acked 2; 3 then folds in 4: nothing is acked twice.
    assert channel.frames == [(2, False), (4, False), (1, True), (3, True)]


def test_a_requeued_delivery_is_skipped_not_acked() -> None:
    channel = Channel()
    acks = acks_on(channel, range(1, 4))

    async def scenario() -> None:
        acks.settled_elsewhere(1)
        await asyncio.gather(acks.ack(2), acks.ack(3))

    asyncio.run(scenario())

    assert channel.frames == [(3, True)]


def test_a_multiple_ack_never_covers_a_tag_it_has_not_seen() -> None:
    channel = Channel()
    acks = ChannelAcks(cast(aiormq.abc.AbstractChannel, channel))
    for tag in (2, 3):  # tag 1 was never handed to us
        acks.received(tag)

    async def scenario() -> None:
        await asyncio.gather(acks.ack(2), acks.ack(3))

    asyncio.run(scenario())

    assert channel.frames == [(2, False), (3, False)]


def test_a_channel_error_reaches_every_waiter() -> None:
    class Closed(Channel):
        async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
            raise RuntimeError("channel closed")

    acks = acks_on(Closed(), range(1, 3))

    async def scenario() -> list[BaseException | None]:
        return list(await asyncio.gather(acks.ack(1), acks.ack(2), return_exceptions=True))

    assert [str(e) for e in asyncio.run(scenario())] == ["channel closed"] * 2


def test_frames_go_out_in_the_order_they_were_planned() -> None:
    class SlowChannel(Channel):
        async def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
            await asyncio.sleep(0.01)  # the first flush is still writing
            self.frames.append((delivery_tag, multiple))

    channel = SlowChannel()
    acks = acks_on(channel, range(1, 6))

    async def scenario() -> None:
        first = asyncio.gather(acks.ack(1), acks.ack(3))  # (1, multiple), then 3 alone
        await asyncio.sleep(0.005)
        await asyncio.gather(acks.ack(2), acks.ack(4), first)  # 4 covers 2 and 3

    asyncio.run(scenario())

    assert channel.frames == [(1, True), (3, False), (4, True)]
