"""Channel-layer group operations channels-redis has no call for: membership, many joins and many sends at once.

A Redis restart without persistence empties every group: the sockets stay
connected but no event reaches them any more. Each socket checks its
membership now and then (settings.SOCKET_REJOIN_SECONDS) and, when it was
forgotten, joins again and sends itself a fresh snapshot. The Live turns
feed asks whether anyone watches before it reads anything. The events
sender (agents.fanout) sends what gathered in its outbox with `send_many`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer  # type: ignore[import-untyped]


def can_forget(layer: Any) -> bool:
    """True for layers whose groups live in a server that may restart (channels-redis)."""
    return all(hasattr(layer, name) for name in ("connection", "consistent_hash", "_group_key"))


async def is_member(layer: Any, group: str, channel: str) -> bool:
    """True when the layer still lists `channel` in `group` (channels-redis: one ZSCORE)."""
    if not can_forget(layer):
        return True
    connection = layer.connection(layer.consistent_hash(group))
    return await connection.zscore(layer._group_key(group), channel) is not None


async def has_members(layer: Any, group: str) -> bool:
    """Whether any channel is in `group`: the in-memory layer's set, channels-redis's sorted set (one ZCARD).

    Another layer is assumed to have members. channels-redis keeps members
    of a dead process until they expire, so this errs on having some.
    """
    if isinstance(layer, InMemoryChannelLayer):  # asked for each event on the embedded default: keep it cheap
        return bool(layer.groups.get(group))
    if not can_forget(layer):
        return True
    connection = layer.connection(layer.consistent_hash(group))
    return bool(await connection.zcard(layer._group_key(group)))


async def join(layer: Any, names: Sequence[str], channel: str) -> None:
    """Add `channel` to each group of `names`; on channels-redis in one round trip per Redis host.

    channels-redis's group_add is two round trips (ZADD, then EXPIRE), and a
    socket joins two groups as it opens: four of its round trips were these.
    The pipeline sends the same commands, with the same score and expiry.
    """
    if not can_forget(layer):
        for name in names:
            await layer.group_add(name, channel)
        return
    for name in names:
        assert layer.require_valid_group_name(name), "Group name not valid"
    assert layer.require_valid_channel_name(channel), "Channel name not valid"
    now = time.time()
    for index, on_host in _by_host(layer, names).items():
        pipeline = layer.connection(index).pipeline(transaction=False)
        for name in on_host:
            pipeline.zadd(layer._group_key(name), {channel: now})
            pipeline.expire(layer._group_key(name), layer.group_expiry)
        await pipeline.execute()


async def leave(layer: Any, names: Sequence[str], channel: str) -> None:
    """Remove `channel` from each group of `names`; on channels-redis in one round trip per Redis host."""
    if not can_forget(layer):
        for name in names:
            await layer.group_discard(name, channel)
        return
    for index, on_host in _by_host(layer, names).items():
        pipeline = layer.connection(index).pipeline(transaction=False)
        for name in on_host:
            pipeline.zrem(layer._group_key(name), channel)
        await pipeline.execute()


def _by_host(layer: Any, names: Sequence[str]) -> dict[int, list[str]]:
    hosts: dict[int, list[str]] = {}
    for name in names:
        hosts.setdefault(layer.consistent_hash(name), []).append(name)
    return hosts


async def send_many(layer: Any, batch: Sequence[tuple[str, dict]]) -> None:
    """Send each (group, message) of `batch`, in order; on channels-redis pub/sub in one round trip per Redis host.

    One awaited PUBLISH per event cost a round trip and a socket write each,
    the worker's busiest call at 110 streams; a pipeline writes them all at
    once. Redis runs a connection's commands in order and a group always
    lives on one host, so each group's messages keep their order. Another
    layer gets one `group_send` per message.
    """
    if not isinstance(layer, RedisPubSubChannelLayer):
        for group, message in batch:
            await layer.group_send(group, message)
        return
    loop_layer = layer._get_layer()  # this event loop's connections, as group_send uses
    by_host: dict[Any, list[tuple[str, bytes]]] = {}
    for group, message in batch:
        channel = loop_layer._get_group_channel_name(group)
        by_host.setdefault(loop_layer._get_shard(channel), []).append((channel, layer.serialize(message)))
    for shard, publishes in by_host.items():
        async with shard._lock:  # as channels-redis's own publish
            shard._ensure_redis()
            pipeline = shard._redis.pipeline(transaction=False)
            for channel, data in publishes:
                pipeline.publish(channel, data)
            await pipeline.execute()
