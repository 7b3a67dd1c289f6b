"""The per-user limit on user messages, shared by all sockets (and processes, with Redis).

In one process (no Redis) the window is `MemoryWindow`: a check costs a
few dictionary and deque operations. `limits`' own MemoryStorage expired
its entries by walking every key it held, with a thread hop per key,
after any hit: in a burst of 442 turn starts, with the users of the last
minute as keys, that walk took a share of the event loop ahead of every
first delta.

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
import threading
import time
import weakref
from collections import deque
from functools import lru_cache, partial
from typing import Any

from django.conf import settings
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from .batches import Batcher

SCOPE = "user_message"


class MemoryWindow:
    """A moving window per key in this process: the times of the key's hits within the last `expiry` seconds.

    Thread-safe (the HTTP API's sync views count messages too). Keys whose
    window emptied are dropped once per `expiry`, in one pass.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}
        self._next_sweep = 0.0

    def hit(self, key: str, limit: int, expiry: float, now: float) -> float | None:
        """Take one of `limit` entries per `expiry` seconds; None when taken, else when the oldest one leaves."""
        with self._lock:
            window = self._hits.setdefault(key, deque())
            while window and window[0] <= now - expiry:
                window.popleft()
            if len(window) >= limit:
                return window[0] + expiry if window else now + expiry
            window.append(now)
            if now >= self._next_sweep:
                self._next_sweep = now + expiry
                self._hits = {k: w for k, w in self._hits.items() if w and w[-1] > now - expiry}
            return None

    def __len__(self) -> int:
        """The keys held: those hit within the last `expiry` seconds, and those not swept yet."""
        return len(self._hits)


@lru_cache(maxsize=1)
def _limiter() -> MovingWindowRateLimiter | MemoryWindow:
    if settings.REDIS_URL:
        uri = settings.REDIS_URL.replace("redis://", "async+redis://", 1)
        return MovingWindowRateLimiter(RedisStorage(uri, implementation="redispy", **settings.REDIS_OPTIONS))
    return MemoryWindow()


async def check_user_message(user_id: int) -> int | None:
    """Count one user message; None when allowed, else the seconds to wait before the next."""
    item = RateLimitItemPerMinute(settings.CHAT_MESSAGES_PER_MINUTE)
    limiter = _limiter()
    if isinstance(limiter, MemoryWindow):
        now = time.time()
        free_at = limiter.hit(str(user_id), item.amount, item.get_expiry(), now)
        return None if free_at is None else max(1, math.ceil(free_at - now))
    storage = limiter.storage
    assert isinstance(storage, RedisStorage)
    if await _hit(storage, item.key_for(SCOPE, str(user_id)), item.amount, item.get_expiry()):
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
