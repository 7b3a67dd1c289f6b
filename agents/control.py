"""Cancelling a turn from a socket, the admin or a command, in whichever process it runs.

A turn of this process stops at once. For one running in another process,
the request is stored on the message and sent to the channel of the process
that runs it (`agents.inbox`), which stops it at once; the turn also reads
the stored flag with its next heartbeat (settings.TURN_HEARTBEAT_SECONDS) in
any case, so a lost message only delays the cancel.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings

from chat import selectors, turns
from chat import threads as thread_writes
from chat.models import Thread

from . import inbox
from .events import announce_thread_deleted
from .registry import registry

# How long deleting a thread waits for its cancelled turn to end first.
DELETE_WAIT_SECONDS = 5.0
DELETE_POLL_SECONDS = 0.05


class CancelTarget(NamedTuple):
    """The flagged assistant message and the channel of the process that runs its turn."""

    message_id: int
    runner: str


def request(thread_id: int, turn_id: str | None) -> CancelTarget | None:
    """Flag the turn's message to stop; None when no such turn is streaming."""
    flagged = turns.flag_running(thread_id, turn_id)
    return CancelTarget(*flagged) if flagged is not None else None


async def stop_requested(thread_id: int, target: CancelTarget | None) -> bool:
    """Stop the thread's running turn whose message `request()` already flagged; False if none runs.

    A turn of this process stops at once; another process's gets the cancel
    on its channel (the flag stays the fallback).
    """
    if registry.cancel(thread_id, None):
        return True
    if target is None:
        return False
    await inbox.send_cancel(target.runner, target.message_id)
    return True


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


def delete_thread(thread: Thread) -> None:
    """Cancel the thread's running turn and let it end (bounded), delete the thread, then tell its sockets.

    The turn ends `cancelled` with its `agent_completed` before its rows go,
    so no model call keeps running (and being paid for) into a deleted thread.
    Called from sync views, whose thread is not the one the turn writes on.
    """
    thread_id = thread.pk
    if cancel_turn(thread_id):
        deadline = time.monotonic() + DELETE_WAIT_SECONDS
        beat_within = 3 * settings.TURN_HEARTBEAT_SECONDS
        while selectors.has_live_turn(thread_id, beat_within) and time.monotonic() < deadline:
            time.sleep(DELETE_POLL_SECONDS)
    thread_writes.delete_thread(thread)
    async_to_sync(announce_thread_deleted)(thread_id)
