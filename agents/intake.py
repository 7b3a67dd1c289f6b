"""What a client asks of a thread's turns, checked and then delegated to the runtime or to cancel.

The socket consumer parses a frame and calls one of these; a refusal is a
`Refused` carrying the contract's error code, which the consumer sends back
as an `error` frame. Checks run in the contract's order: a repeated turn_id
is answered with its stored message before any rate limit.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from chat import selectors

from . import ratelimit, runtime
from .control import acancel_turn
from .events import user_message_frame

astored_user_message = database_sync_to_async(selectors.turn_user_message)
alive_turns_elsewhere = database_sync_to_async(selectors.live_turns_elsewhere)


class Refused(Exception):
    """A request the server will not carry out: an `error` code, a message, and extra fields for the frame."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


async def user_message(
    user_id: int, thread_id: int, content: str, turn_id: str | None, mentioned_documents: list | None
) -> dict | None:
    """Start a turn for a user message; return a frame for the asking socket alone, if any.

    A repeated turn_id starts nothing and is answered with the stored
    `user_message` event; a new turn's own events reach every socket of the
    thread through the group.
    """
    if turn_id:
        stored = await astored_user_message(thread_id, turn_id)
        if stored is not None:
            return user_message_frame(thread_id, turn_id, stored)
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise Refused("message_too_large", f"A message is limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.")
    beat_within = runtime.LIVE_BEATS * settings.TURN_HEARTBEAT_SECONDS
    if await alive_turns_elsewhere(user_id, thread_id, beat_within) >= settings.CHAT_MAX_RUNNING_TURNS:
        raise Refused(
            "too_many_turns",
            f"At most {settings.CHAT_MAX_RUNNING_TURNS} turns may run at once; wait for one to end or cancel it.",
        )
    retry_after = await ratelimit.check_user_message(user_id)
    if retry_after is not None:
        raise Refused("rate_limited", "Too many messages; wait before sending more.", retry_after=retry_after)
    start = await runtime.start_turn(thread_id, content, turn_id, mentioned_documents)
    if not start.started:
        # A retry that raced its first send: answer this socket only, start nothing.
        return user_message_frame(thread_id, start.turn_id, start.user_message)
    return None


async def cancel(thread_id: int, turn_id: str | None) -> None:
    """Stop the turn (the thread's running one when turn_id is None), wherever it runs."""
    if not await acancel_turn(thread_id, turn_id):
        raise Refused("turn_not_found", "No such turn is running in this thread.")
