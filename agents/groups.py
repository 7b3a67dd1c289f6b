"""Who is in a channel-layer group, for layers that can forget members (channels-redis).

A Redis restart without persistence empties every group: the sockets stay
connected but no event reaches them any more. Each socket checks its
membership now and then (settings.SOCKET_REJOIN_SECONDS) and, when it was
forgotten, joins again and sends itself a fresh snapshot. The Live turns
feed asks whether anyone watches before it reads anything.
"""

from __future__ import annotations

from typing import Any

from channels.layers import InMemoryChannelLayer


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
