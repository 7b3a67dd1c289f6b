"""Cancelling a turn from a socket, the admin or a command, in whichever process it runs."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from chat import turns
from chat.events import broadcast_cancel

from .registry import registry


async def acancel_turn(thread_id: int, turn_id: str | None = None) -> bool:
    """Stop a running turn (the thread's running one when turn_id is None); False if none runs.

    A turn of this process stops at once. For one running in another
    process, the request is stored on the message and sent to the thread's
    sockets: a process holding one of them stops the turn at once
    (`cancel_here`), and the turn itself reads the stored flag with its next
    heartbeat (settings.TURN_HEARTBEAT_SECONDS) in any case.
    """
    if registry.cancel(thread_id, turn_id):
        return True
    message_id = await database_sync_to_async(turns.request_cancel)(thread_id, turn_id)
    if message_id is None:
        return False
    await broadcast_cancel(thread_id, message_id)
    return True


def cancel_turn(thread_id: int, turn_id: str | None = None) -> bool:
    """See acancel_turn(); for sync callers such as the admin's views."""
    if registry.cancel(thread_id, turn_id):
        return True
    message_id = turns.request_cancel(thread_id, turn_id)
    if message_id is None:
        return False
    async_to_sync(broadcast_cancel)(thread_id, message_id)
    return True


def cancel_here(message_id: int) -> bool:
    """Stop the turn of this assistant message if it runs in this process."""
    return registry.cancel_message(message_id)
