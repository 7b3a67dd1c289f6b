"""How a serving process (daphne or an agent worker) is set up for many streams.

Every database call hands the GIL to Channels' database thread and back; at
Python's default 5 ms switch interval a busy event loop makes each hop wait
that long (bench/streams.py). `kill -USR1` logs the delta writer's totals,
which bench/streams.py reads to count commits.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading

from channels.consumer import get_handler_name
from django.conf import settings

from . import writer


def tune() -> None:
    """Shorten the GIL switch interval, freeze what start-up built, log the writer's totals on SIGUSR1.

    The modules, settings and app registry loaded by now live as long as
    the process: frozen, the garbage collector's full passes no longer walk
    them. Those passes had stopped every stream of a process for 70-190 ms
    at 313 streams, most of them finding nothing to free; frozen, 5-30 ms.
    A young generation of GC_GEN0_THRESHOLD objects lets a burst's
    short-lived objects die young instead of setting off full passes.
    """
    sys.setswitchinterval(settings.GIL_SWITCH_INTERVAL_MS / 1000)
    gc.freeze()
    gc.set_threshold(settings.GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, writer.log_totals)


class DirectDispatch:
    """A consumer mixin: handle each message without Channels' hop to the database thread before it.

    Channels closes obsolete connections before every message a consumer
    handles; with persistent connections each database call already does
    that on the database thread, so the extra hop only queues the message
    behind every stream's writes (a burst of turn starts waited seconds).
    """

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
