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

from .batches import Batcher

TURNS_CHANNEL = "agent-turns"
BATCH = 50  # starts in one message at most: a burst still spreads over the workers


async def _send_batch(starts: list[dict]) -> list[None]:
    """One message to the workers: a lone start as it is, several as one `turn.starts`."""
    message = starts[0] if len(starts) == 1 else {"type": "turn.starts", "turns": starts}
    await get_channel_layer().send(TURNS_CHANNEL, message)
    return [None] * len(starts)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher[dict, None]] = weakref.WeakKeyDictionary()


async def send(start: dict) -> None:
    """Send a `turn.start` message to the workers; raise when the layer refused it."""
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = Batcher(_send_batch, limit=BATCH)
    await queue.call(start)
