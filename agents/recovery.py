"""At least once: a committed user message whose turn never started gets it started again, or an explicit end.

A start can be lost between the commit of the user message and the turn's
assistant shell: the process that was to run it died, or a worker took the
queued `turn.start` and was killed before starting it. Each sweep looks for
recent user messages with no assistant message: one older than
TURN_REDISPATCH_SECONDS that is still its thread's latest message is started
again (queued for a worker, or run here without workers); one superseded by
a newer message, or older than TURN_START_DEADLINE_SECONDS, ends
`interrupted` (agent_started, then agent_completed). A repeated start is
harmless: a turn's shell is created once, and only its creator runs it.
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.conf import settings

from chat import selectors

from . import runtime
from .errors import NOT_STARTED_ERROR
from .events import TurnPublisher

logger = logging.getLogger(__name__)

# User messages older than the deadline by more than this are left alone (imports, old rows).
LOOK_BACK_SECONDS = 600.0

aunstarted_turns = database_sync_to_async(selectors.unstarted_turns)


async def recover_unstarted() -> int:
    """Start again, or end, the turns whose start was lost; return how many were handled."""
    deadline = settings.TURN_START_DEADLINE_SECONDS
    found = await aunstarted_turns(settings.TURN_REDISPATCH_SECONDS, deadline + LOOK_BACK_SECONDS)
    for turn in found:
        if turn.age < deadline and turn.latest:
            logger.warning("turn %s of thread %s had not started; starting it again", turn.turn_id, turn.thread_id)
            if settings.AGENT_WORKERS:
                await runtime.dispatch(turn.thread_id, turn.turn_id, turn.message_id)
            else:
                runtime.begin_turn(turn.thread_id, turn.turn_id, turn.message_id)
        else:
            await end_unstarted(turn.thread_id, turn.turn_id, turn.message_id)
    return len(found)


async def end_unstarted(thread_id: int, turn_id: str, parent_id: int) -> None:
    """Give a turn that will not run its explicit end: an empty `interrupted` answer, announced."""
    publisher = TurnPublisher(thread_id, turn_id)
    if await publisher.started("", "", parent_id=parent_id) is None:
        return  # it started after all
    logger.warning("turn %s of thread %s never started; ended interrupted", turn_id, thread_id)
    await publisher.completed("interrupted", None, NOT_STARTED_ERROR)
