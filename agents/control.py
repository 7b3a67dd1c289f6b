"""Cancelling a turn from a socket, the admin or a command, in whichever process it runs.

A turn of this process stops at once. For one running in another process,
the request is stored on the message and sent to the channel of the process
that runs it (`agents.inbox`), which stops it at once; the turn also reads
the stored flag with its next heartbeat (settings.TURN_HEARTBEAT_SECONDS) in
any case, so a lost message only delays the cancel.
"""

from __future__ import annotations

from typing import NamedTuple

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async

from chat import selectors, turns

from . import inbox
from .registry import registry


class CancelTarget(NamedTuple):
    """The flagged assistant message and the channel of the process that runs its turn."""

    message_id: int
    runner: str


def request(thread_id: int, turn_id: str | None) -> CancelTarget | None:
    """Flag the turn's message to stop; None when no such turn is streaming."""
    message_id = turns.request_cancel(thread_id, turn_id)
    if message_id is None:
        return None
    return CancelTarget(message_id, selectors.turn_runner(message_id))


async def acancel_turn(thread_id: int, turn_id: str | None = None) -> bool:
    """Stop a running turn (the thread's running one when turn_id is None); False if none runs."""
    if registry.cancel(thread_id, turn_id):
        return True
    target = await database_sync_to_async(request)(thread_id, turn_id)
    if target is None:
        return False
    await inbox.send_cancel(target.runner, target.message_id)
    return True


def cancel_turn(thread_id: int, turn_id: str | None = None) -> bool:
    """See acancel_turn(); for sync callers such as the admin's views, whose database work stays on their thread."""
    if registry.cancel(thread_id, turn_id):
        return True
    target = request(thread_id, turn_id)
    if target is None:
        return False
    async_to_sync(inbox.send_cancel)(target.runner, target.message_id)
    return True
