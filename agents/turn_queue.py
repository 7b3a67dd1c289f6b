"""The queue of turns for worker processes: `turn.start` messages on TURNS_CHANNEL, a burst in few of them.

A worker takes one message from a channels-redis channel at a time, each
four Redis round trips under a per-channel lock: about 200 a second, so the
last of 442 turns sent at once waited 2.5 s for a worker. Starts queued
while the previous send is on its way go together, up to BATCH to a
message (`turn.starts`), which a worker takes as one; a lone start goes
alone and waits for nothing. Each caller still learns whether its own
start reached the layer.
"""

from __future__ import annotations

import asyncio
import weakref

from channels.layers import get_channel_layer

TURNS_CHANNEL = "agent-turns"
BATCH = 50  # starts in one message at most: a burst still spreads over the workers


class TurnQueue:
    """One event loop's starts waiting for the layer, and the task that sends them."""

    def __init__(self) -> None:
        self.waiting: list[tuple[dict, asyncio.Future]] = []
        self.task: asyncio.Task | None = None

    async def send(self, start: dict) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.create_future()
        self.waiting.append((start, sent))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._send_all(), name="turn-queue")
        await sent

    async def _send_all(self) -> None:
        layer = get_channel_layer()
        while self.waiting:
            batch, self.waiting = self.waiting[:BATCH], self.waiting[BATCH:]
            message = batch[0][0] if len(batch) == 1 else {"type": "turn.starts", "turns": [s for s, _ in batch]}
            try:
                await layer.send(TURNS_CHANNEL, message)
            except Exception as exc:
                outcome: BaseException | None = exc
            else:
                outcome = None
            for _, sent in batch:
                if sent.done():  # its caller stopped waiting
                    continue
                if outcome is None:
                    sent.set_result(None)
                else:
                    sent.set_exception(outcome)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnQueue] = weakref.WeakKeyDictionary()


async def send(start: dict) -> None:
    """Send a `turn.start` message to the workers; raise when the layer refused it."""
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = TurnQueue()
    await queue.send(start)
