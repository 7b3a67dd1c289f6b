"""Calls that gather while one round trip is on its way and go together in the next.

A burst of turn starts makes the same remote call many times in one loop
turn (a rate check, a dispatch to the workers). `Batcher` turns them into
one round trip per batch: the first call goes at once, the calls made
while it is on its way wait and go together next, so a burst costs a few
round trips instead of one (and a pooled connection) each. Each caller
still gets its own outcome, or the batch's exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


class Batcher[T, R]:
    """One event loop's waiting calls and the task that sends them, `limit` at most to a batch.

    `send` takes a batch's items and returns their outcomes in order; when
    it raises, every call of the batch raises it, and the next batch goes
    as usual.
    """

    def __init__(self, send: Callable[[list[T]], Awaitable[Sequence[R]]], limit: int | None = None) -> None:
        self.send = send
        self.limit = limit
        self.waiting: list[tuple[T, asyncio.Future[R]]] = []
        self.task: asyncio.Task | None = None

    async def call(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self.waiting.append((item, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._send_all(), name="batches")
        return await future

    async def _send_all(self) -> None:
        while self.waiting:
            cut = len(self.waiting) if self.limit is None else self.limit
            batch, self.waiting = self.waiting[:cut], self.waiting[cut:]
            try:
                outcomes = await self.send([item for item, _ in batch])
            except BaseException as exc:  # the round trip failed (or this task is cancelled): so did its calls
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():  # its caller stopped waiting
                    future.set_result(outcome)
