"""Acks of one channel's deliveries in as few frames as is safe.

Acks asked for in the same turn of the event loop (a batch of outcomes
confirmed together releases many at once) go out together: the run of
settled deliveries at the low end of the channel's delivery tags as one
``basic.ack`` with ``multiple``, and any settled delivery beyond a gap
(a request still running) on its own, at once, so a slow request never
holds back the others' acks, nor the prefetch they count against.
A multiple ack covers only deliveries this object has seen settled: every
tag up to it must be known, without a gap.
"""

from __future__ import annotations

import asyncio
from enum import Enum

import aiormq.abc


class _State(Enum):
    OPEN = 0
    #: Asked to be acked, not yet sent.
    ACK = 1
    #: Settled another way (requeued, dead-lettered, or acked already).
    SETTLED = 2


class ChannelAcks:
    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._tags: dict[int, _State] = {}
        #: The lowest tag not yet settled by this object; tags start at 1.
        self._low = 1
        self._waiting: list[asyncio.Future[None]] = []
        self._flush: asyncio.Task[None] | None = None
        # Frames go out in the order they were planned: a later multiple ack
        # sent ahead of an earlier single one would ack that tag first, and
        # the broker closes the channel on an unknown tag.
        self._sending = asyncio.Lock()

    def received(self, tag: int) -> None:
        self._tags[tag] = _State.OPEN

    def settled_elsewhere(self, tag: int) -> None:
        """``tag`` was requeued or dead-lettered (its frame already queued)."""
        self._tags[tag] = _State.SETTLED
        self._advance()

    async def ack(self, tag: int) -> None:
        """Return once the ack covering ``tag`` is written; raise the channel's error."""
        self._tags[tag] = _State.ACK
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        if self._flush is None:
            self._flush = asyncio.create_task(self._send(), name="acks")
        await done

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the rest of this loop turn's acks join
        waiting, self._waiting = self._waiting, []
        self._flush = None
        frames = self._plan()
        try:
            async with self._sending:
                for tag, multiple in frames:
                    await self.channel.basic_ack(tag, multiple=multiple)
        except Exception as exc:  # the waiters decide what a failure means
            for done in waiting:
                done.set_exception(exc)
            return
        for done in waiting:
            done.set_result(None)

    def _plan(self) -> list[tuple[int, bool]]:
        """The ack frames to send now, marking their tags settled."""
        frames: list[tuple[int, bool]] = []
        top = None
        while self._tags.get(self._low) in (_State.ACK, _State.SETTLED):
            if self._tags.pop(self._low) is _State.ACK:
                top = self._low
            self._low += 1
        if top is not None:
            frames.append((top, True))
        for tag, state in list(self._tags.items()):
            if state is _State.ACK:
                frames.append((tag, False))
                self._tags[tag] = _State.SETTLED
        self._advance()
        return frames

    def _advance(self) -> None:
        while self._tags.get(self._low) is _State.SETTLED:
            del self._tags[self._low]
            self._low += 1
