"""What a client asks of a thread's turns, checked and then delegated to the runtime or to cancel.

The socket consumer parses a frame and calls one of these; a refusal is a
`Refused` carrying the contract's error code, which the consumer sends back
as an `error` frame. Checks run in the contract's order: a repeated turn_id
is answered with its stored message before any rate limit.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings

from chat import selectors, threads, turns
from chat.hops import hop

from . import ratelimit, runtime
from .control import acancel_turn
from .events import announce_switch, user_message_frame
from .registry import registry

ACTIVE_LEAF = turns.ACTIVE_LEAF


def _facts_in_one_hop(calls: list[tuple[tuple, dict]]) -> list[tuple[bool, Any]]:
    """The turn_facts() calls of one hop (chat.hops) as one selectors.turn_facts_many()."""
    asked = [(args[0], args[1], args[2]) for args, _ in calls]
    beats = {args[3] for args, _ in calls}
    if len(beats) > 1 or any(kwargs or len(args) != 4 for args, kwargs in calls):
        return [(True, selectors.turn_facts(*args, **kwargs)) for args, kwargs in calls]
    return [(True, facts) for facts in selectors.turn_facts_many(asked, beats.pop())]


aturn_facts = hop(selectors.turn_facts, batch=_facts_in_one_hop)
alive_turns_elsewhere = database_sync_to_async(selectors.live_turns_elsewhere)
aturn_exists = database_sync_to_async(selectors.turn_exists)
aanswered_message = database_sync_to_async(selectors.answered_message)
aswitch_version = database_sync_to_async(threads.switch_version)


class Refused(Exception):
    """A request the server will not carry out: an `error` code, a message, and extra fields for the frame."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


NOT_FOUND = "not_found"


async def user_message(
    user_id: int,
    thread_id: int,
    content: str,
    turn_id: str | None,
    mentioned_documents: list | None,
    parent: int | None | turns.Follow = turns.ACTIVE_LEAF,
) -> dict | None:
    """Start a turn for a user message after `parent`; return a frame for the asking socket alone, if any.

    A repeated turn_id starts nothing and is answered with the stored
    `user_message` event (a regenerate's turn_id, which has no user message,
    with nothing); a new turn's own events reach every socket of the thread
    through the group. An edit's `parent` must be a finished answer of the
    thread, or None for a new first message.
    """
    facts = await aturn_facts(user_id, thread_id, turn_id, runtime.LIVE_BEATS * settings.TURN_HEARTBEAT_SECONDS)
    if turn_id and facts.stored_user_message is not None:
        return user_message_frame(thread_id, turn_id, facts.stored_user_message)
    if facts.turn_exists:
        return None
    if isinstance(parent, int) and await aanswered_message(thread_id, parent, finished=True) is None:
        raise Refused(NOT_FOUND, "parent_id is not a finished answer of this thread.")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise Refused("message_too_large", f"A message is limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.")
    _refuse_running(facts.live_elsewhere)
    await _check_rate(user_id)
    start = await runtime.start_turn(thread_id, content, turn_id, mentioned_documents, parent=parent)
    if not start.started and start.user_message is not None:
        # A retry that raced its first send: answer this socket only, start nothing.
        return user_message_frame(thread_id, start.turn_id, start.user_message)
    return None


async def regenerate(user_id: int, thread_id: int, message_id: int, turn_id: str | None) -> None:
    """Start a new version of the answer `message_id`; a repeated turn_id starts nothing."""
    if turn_id and (registry.get(thread_id, turn_id) is not None or await aturn_exists(thread_id, turn_id)):
        return
    answer = await aanswered_message(thread_id, message_id)
    if answer is None:
        raise Refused(NOT_FOUND, "message_id is not an answer of this thread.")
    await _check_running(user_id, thread_id)
    await _check_rate(user_id)
    await runtime.start_regenerate(thread_id, answer.parent_id, turn_id)


async def switch_version(thread_id: int, message_id: int) -> None:
    """Make the active path run through `message_id`; every socket of the thread then gets a fresh snapshot."""
    if await aswitch_version(thread_id, message_id) is None:
        raise Refused(NOT_FOUND, "message_id is not a message of this thread.")
    await announce_switch(thread_id)


def switch_version_sync(thread_id: int, message_id: int) -> None:
    """See switch_version(); for the HTTP API."""
    if threads.switch_version(thread_id, message_id) is None:
        raise Refused(NOT_FOUND, "active_message_id is not a message of this thread.")
    async_to_sync(announce_switch)(thread_id)


async def _check_running(user_id: int, thread_id: int) -> None:
    beat_within = runtime.LIVE_BEATS * settings.TURN_HEARTBEAT_SECONDS
    _refuse_running(await alive_turns_elsewhere(user_id, thread_id, beat_within))


def _refuse_running(live_elsewhere: int) -> None:
    """Refuse a new turn while the user's turns running in other threads are at CHAT_MAX_RUNNING_TURNS."""
    if live_elsewhere >= settings.CHAT_MAX_RUNNING_TURNS:
        raise Refused(
            "too_many_turns",
            f"At most {settings.CHAT_MAX_RUNNING_TURNS} turns may run at once; wait for one to end or cancel it.",
        )


async def _check_rate(user_id: int) -> None:
    retry_after = await ratelimit.check_user_message(user_id)
    if retry_after is not None:
        raise Refused("rate_limited", "Too many messages; wait before sending more.", retry_after=retry_after)


async def cancel(thread_id: int, turn_id: str | None) -> None:
    """Stop the turn (the thread's running one when turn_id is None), wherever it runs."""
    if not await acancel_turn(thread_id, turn_id):
        raise Refused("turn_not_found", "No such turn is running in this thread.")
