"""A graceful stop on SIGTERM under daphne: finish (or interrupt) the running turns, close the sockets, exit.

Daphne stops Twisted's reactor at once on SIGTERM and cancels every
application instance: turns stayed `streaming` until a sweeper found them,
and clients got no close frame. Instead, once the reactor runs, SIGTERM
starts `stop()`: the process's turns get TURN_DRAIN_SECONDS to finish, the
rest end `interrupted` and are announced; then every socket is closed with
4012 (service restart, see CLOSE_RESTART), so clients reconnect, to another process if there
is one; then the reactor stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from django.conf import settings

from agents import runtime
from web import consumers

logger = logging.getLogger(__name__)

# 1012 ("service restart") in the private range: daphne's WebSocket library
# (autobahn) refuses to send any code but 1000 and 3000-4999, so 1012 and
# 1001 cannot be sent from an application. Clients reconnect on it.
CLOSE_RESTART = 4012

_stopping = False


def install() -> None:
    """Under daphne, replace the reactor's SIGTERM handler with a graceful stop, once the reactor runs."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if isinstance(reactor, AsyncioSelectorReactor):
        # callLater runs inside the running loop, after Twisted installed its own handlers.
        reactor.callLater(0, _take_sigterm, reactor)


def _take_sigterm(reactor: Any) -> None:
    loop = asyncio.get_running_loop()

    def on_sigterm(signum: int, frame: object) -> None:
        reactor.callFromThread(lambda: loop.create_task(stop(reactor)))

    signal.signal(signal.SIGTERM, on_sigterm)


async def stop(reactor: Any) -> None:
    """Drain the turns, close the sockets with 4012, then stop the reactor (a second SIGTERM changes nothing)."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    logger.info("SIGTERM: draining turns for up to %.1f s", settings.TURN_DRAIN_SECONDS)
    try:
        interrupted = await runtime.drain(settings.TURN_DRAIN_SECONDS)
        if interrupted:
            logger.warning("SIGTERM: %d turn(s) ended interrupted", interrupted)
        await consumers.close_all(CLOSE_RESTART)
    except Exception:
        logger.exception("graceful stop failed; stopping anyway")
    finally:
        reactor.stop()
