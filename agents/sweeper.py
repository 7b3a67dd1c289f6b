"""Finalizes turns whose process died: streaming messages with a stale heartbeat become `interrupted`.

Every running turn touches its heartbeat every TURN_HEARTBEAT_SECONDS, so a
heartbeat older than TURN_STALE_SECONDS means no process runs it any more.
Each server process sweeps on its event loop from the moment it serves (under
daphne, as soon as its reactor runs, whether or not anyone connects; under
another ASGI server, from its first request), then every TURN_SWEEP_SECONDS,
and announces each turn it ends to the thread's sockets. A dead turn thus ends
within TURN_STALE_SECONDS + TURN_SWEEP_SECONDS of a server running again.
`python manage.py recover_turns` sweeps once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from channels.db import database_sync_to_async
from django.conf import settings

from chat import turns

from .errors import INTERRUPTED_ERROR
from .events import announce_completed
from .registry import registry

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]

logger = logging.getLogger(__name__)

# Completed turns stay in the registry this long, for late cancels and tests.
REGISTRY_KEEP_SECONDS = 300

_task: asyncio.Task | None = None


def sweep(stale_after: float | None = None) -> list[dict]:
    """Finalize every stale streaming message as interrupted; return them as turn summaries."""
    stale_after = settings.TURN_STALE_SECONDS if stale_after is None else stale_after
    running_here = {turn.message_id for turn in registry.running()}
    finalized: list[dict] = []
    for message_id in turns.stale_turns(stale_after):
        if message_id in running_here:
            continue  # alive, only slow to beat (a blocked loop)
        result = turns.finalize_assistant_turn(message_id, "interrupted", error=INTERRUPTED_ERROR)
        if result is not None and result.closed:
            summary = turns.turn_summary(message_id)
            if summary is not None:
                finalized.append(summary)
    if finalized:
        logger.warning("finalized %d interrupted turn(s): %s", len(finalized), [t["id"] for t in finalized])
    return finalized


async def asweep(stale_after: float | None = None) -> list[dict]:
    """Sweep, then send `agent_completed` for each turn ended (its own process died before it could)."""
    finalized = await database_sync_to_async(sweep)(stale_after)
    for turn in finalized:
        await announce_completed(turn, INTERRUPTED_ERROR)
    return finalized


async def _loop() -> None:
    from .recovery import recover_unstarted  # it runs turns: agents.runtime imports this module

    while True:
        try:
            registry.cleanup_completed(REGISTRY_KEEP_SECONDS)
            await asweep()
            await recover_unstarted()
        except Exception:
            logger.exception("turn sweep failed")
        await asyncio.sleep(settings.TURN_SWEEP_SECONDS)


def ensure_started() -> None:
    """Start this process's sweeper task on the running loop, once."""
    global _task
    if _task is None or _task.done():
        _task = asyncio.get_running_loop().create_task(_loop(), name="turn-sweeper")


def start_when_serving() -> None:
    """Under daphne, start the sweeper as soon as the server runs, without waiting for a request.

    Daphne installs Twisted's asyncio reactor before it imports the
    application, so the reactor is in sys.modules here; `callLater` runs
    `ensure_started` from inside the reactor's running asyncio loop (a
    `callWhenRunning` callback would run before that loop starts). A
    reactor that never runs (a test process that imported daphne) never
    calls it. Without such a reactor (another ASGI server) this does nothing
    and SweeperMiddleware starts the sweeper with the first request.
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if isinstance(reactor, AsyncioSelectorReactor):
        reactor.callLater(0, ensure_started)


class SweeperMiddleware:
    """ASGI middleware that starts the sweeper with the server's first connection (servers other than daphne)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] in ("http", "websocket"):
            ensure_started()
        return await self.app(scope, receive, send)
