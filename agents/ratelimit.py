"""The per-user limit on user messages, shared by all sockets (and processes, with Redis).

On Redis, the hits made while one round trip is on its way wait and go
together in the next: one pipeline of the moving-window script that
`limits` itself runs for a hit, on the same keys, so the counts are the
ones MovingWindowRateLimiter.hit keeps. One command per hit took a pool
connection each: a burst of 313 turn starts on two web processes spent
about 55 ms of its time to first delta (p50) in the rate check.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from functools import lru_cache
from typing import Any

from django.conf import settings
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

SCOPE = "user_message"


@lru_cache(maxsize=1)
def _limiter() -> MovingWindowRateLimiter:
    if settings.REDIS_URL:
        uri = settings.REDIS_URL.replace("redis://", "async+redis://", 1)
        return MovingWindowRateLimiter(RedisStorage(uri, implementation="redispy", **settings.REDIS_OPTIONS))
    return MovingWindowRateLimiter(MemoryStorage())


async def check_user_message(user_id: int) -> int | None:
    """Count one user message; None when allowed, else the seconds to wait before the next."""
    item = RateLimitItemPerMinute(settings.CHAT_MESSAGES_PER_MINUTE)
    limiter = _limiter()
    if isinstance(limiter.storage, RedisStorage):
        allowed = await _hits(limiter.storage).hit(item.key_for(SCOPE, str(user_id)), item.amount, item.get_expiry())
    else:
        allowed = await limiter.hit(item, SCOPE, str(user_id))
    if allowed:
        return None
    stats = await limiter.get_window_stats(item, SCOPE, str(user_id))
    return max(1, math.ceil(stats.reset_time - time.time()))


Hit = tuple[str, int, int, asyncio.Future]  # key, limit, expiry (seconds), its outcome


class RedisHits:
    """One event loop's hits waiting for Redis, and the task that sends them, a pipeline at a time."""

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        self.waiting: list[Hit] = []
        self.task: asyncio.Task | None = None

    async def hit(self, key: str, limit: int, expiry: int) -> bool:
        """Take one entry of `limit` per `expiry` seconds under `key`; whether there was one left."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((key, limit, expiry, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._send_all(), name="rate-hits")
        return await future

    async def _send_all(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, []
            try:
                outcomes = await self._acquire([(key, limit, expiry) for key, limit, expiry, _ in batch])
            except BaseException as exc:  # Redis is away (or this task is cancelled): so are these hits
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                if not isinstance(exc, Exception):
                    raise
                continue
            for (*_, future), allowed in zip(batch, outcomes, strict=True):
                if not future.done():  # its caller stopped waiting
                    future.set_result(bool(allowed))

    async def _acquire(self, hits: list[tuple[str, int, int]]) -> list[Any]:
        """limits' acquire script for each hit (its RedisStorage.acquire_entry), in one pipeline."""
        bridge: Any = self.storage.bridge
        script = bridge.lua_acquire_moving_window
        pipe = bridge.get_connection().pipeline(transaction=False)
        for key, limit, expiry in hits:
            await script([bridge.prefixed_key(key)], [time.time(), limit, expiry, 1], client=pipe)
        return await pipe.execute()


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisHits] = weakref.WeakKeyDictionary()


def _hits(storage: RedisStorage) -> RedisHits:
    """This event loop's RedisHits for `storage` (tests run many loops and swap the limiter)."""
    loop = asyncio.get_running_loop()
    found = _queues.get(loop)
    if found is None or found.storage is not storage:
        found = _queues[loop] = RedisHits(storage)
    return found


def reset() -> None:
    """Forget all counts (tests)."""
    _limiter.cache_clear()
