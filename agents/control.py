"""Cancelling a turn from a socket, the admin or a command, in whichever process it runs."""

from __future__ import annotations

from channels.db import database_sync_to_async

from chat import turns

from .registry import registry


def cancel_turn(thread_id: int, turn_id: str | None = None) -> bool:
    """Stop a running turn (the thread's running one when turn_id is None); False if none runs.

    A turn of this process stops at once; one running elsewhere sees the
    database flag at its next heartbeat (settings.TURN_HEARTBEAT_SECONDS).
    """
    if registry.cancel(thread_id, turn_id):
        return True
    return turns.request_cancel(thread_id, turn_id) is not None


async def acancel_turn(thread_id: int, turn_id: str | None = None) -> bool:
    """See cancel_turn()."""
    if registry.cancel(thread_id, turn_id):
        return True
    return await database_sync_to_async(turns.request_cancel)(thread_id, turn_id) is not None
