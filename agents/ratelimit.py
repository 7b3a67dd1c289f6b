"""The per-user limit on user messages, shared by all sockets (and processes, with Redis)."""

from __future__ import annotations

import math
import time
from functools import lru_cache

from django.conf import settings
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter


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
    if await limiter.hit(item, "user_message", str(user_id)):
        return None
    stats = await limiter.get_window_stats(item, "user_message", str(user_id))
    return max(1, math.ceil(stats.reset_time - time.time()))


def reset() -> None:
    """Forget all counts (tests)."""
    _limiter.cache_clear()
