"""Open sockets per user, counted over every process of a cluster, as leases that expire.

Each open socket holds a lease (its channel name) in the user's set, renewed
every third of CHAT_SOCKET_LEASE_SECONDS and dropped when it closes. A
process killed without closing its sockets leaves leases that simply expire,
so no phantom socket counts for longer than one lease. With REDIS_URL the set
is a Redis sorted set scored by expiry; otherwise a dict in this process.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Protocol

from django.conf import settings
from redis.asyncio import Redis

logger = logging.getLogger(__name__)

# KEYS[1]: the user's set; ARGV: member, cap, lease seconds. Returns 1 when the lease is held.
_ACQUIRE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""


class _Store(Protocol):
    async def acquire(self, key: str, member: str, cap: int, lease: float) -> bool: ...
    async def release(self, key: str, member: str) -> None: ...


class _MemoryStore:
    def __init__(self) -> None:
        self.leases: dict[str, dict[str, float]] = {}

    async def acquire(self, key: str, member: str, cap: int, lease: float) -> bool:
        now = time.monotonic()
        held = {m: t for m, t in self.leases.get(key, {}).items() if t > now}
        if member not in held and len(held) >= cap:
            self.leases[key] = held
            return False
        held[member] = now + lease
        self.leases[key] = held
        return True

    async def release(self, key: str, member: str) -> None:
        held = self.leases.get(key, {})
        held.pop(member, None)
        if not held:
            self.leases.pop(key, None)


class _RedisStore:
    def __init__(self, url: str) -> None:
        self.redis = Redis.from_url(url, **settings.REDIS_OPTIONS)  # rides out a Redis restart
        self.script = self.redis.register_script(_ACQUIRE)

    async def acquire(self, key: str, member: str, cap: int, lease: float) -> bool:
        return bool(await self.script(keys=[key], args=[member, cap, lease]))

    async def release(self, key: str, member: str) -> None:
        await self.redis.zrem(key, member)


_memory = _MemoryStore()
# A Redis client belongs to the event loop that made it.
_redis_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _RedisStore] = weakref.WeakKeyDictionary()


def _store() -> _Store:
    if not settings.REDIS_URL:
        return _memory
    loop = asyncio.get_running_loop()
    store = _redis_stores.get(loop)
    if store is None:
        store = _redis_stores[loop] = _RedisStore(settings.REDIS_URL)
    return store


def _key(user_id: int) -> str:
    return f"chat:sockets:{user_id}"


async def acquire(user_id: int, socket: str) -> bool:
    """Take (or renew) the lease of one socket; False when the user already holds the maximum."""
    lease = settings.CHAT_SOCKET_LEASE_SECONDS
    return await _store().acquire(_key(user_id), socket, settings.CHAT_MAX_SOCKETS_PER_USER, lease)


async def hold(user_id: int, socket: str) -> None:
    """Renew the socket's lease until cancelled (run as a task while the socket is open)."""
    while True:
        await asyncio.sleep(settings.CHAT_SOCKET_LEASE_SECONDS / 3)
        try:
            await _store().acquire(_key(user_id), socket, 2**31, settings.CHAT_SOCKET_LEASE_SECONDS)
        except Exception:
            logger.exception("could not renew the lease of socket %s", socket)


async def release(user_id: int, socket: str) -> None:
    """Give the lease back when the socket closes."""
    await _store().release(_key(user_id), socket)


def reset() -> None:
    """Forget every lease of this process (tests)."""
    _memory.leases.clear()
