"""Finalizes turns whose process died: streaming messages with a stale heartbeat become `interrupted`.

Every running turn touches its heartbeat every TURN_HEARTBEAT_SECONDS, so a
heartbeat older than TURN_STALE_SECONDS means no process runs it any more.
Each server process sweeps at start and then every TURN_SWEEP_SECONDS, in a
daemon thread; `python manage.py recover_turns` sweeps once.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections

from chat import turns
from chat.events import announce_interrupted

from .registry import registry

logger = logging.getLogger(__name__)

INTERRUPTED_ERROR = {
    "code": "interrupted",
    "message": "The server stopped while this turn was running; the partial answer was kept.",
    "retryable": True,
}

_started = threading.Event()


def sweep(stale_after: float | None = None) -> list[int]:
    """Finalize every stale streaming message as interrupted; return their ids."""
    stale_after = settings.TURN_STALE_SECONDS if stale_after is None else stale_after
    finalized = []
    running_here = {turn.message_id for turn in registry.running()}
    for message_id in turns.stale_turns(stale_after):
        if message_id in running_here:
            continue  # alive, only slow to beat (a blocked loop)
        if turns.finalize_assistant_turn(message_id, "interrupted", error=INTERRUPTED_ERROR) == "interrupted":
            finalized.append(message_id)
            announce_interrupted(message_id, INTERRUPTED_ERROR)
    if finalized:
        logger.warning("finalized %d interrupted turn(s): %s", len(finalized), finalized)
    return finalized


# Completed turns stay in the registry this long, for late cancels and tests.
REGISTRY_KEEP_SECONDS = 300


def _loop(stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            registry.cleanup_completed(REGISTRY_KEEP_SECONDS)
            sweep()
        except Exception:
            logger.exception("turn sweep failed")
        finally:
            close_old_connections()
        stop.wait(settings.TURN_SWEEP_SECONDS)


def start_in_background() -> threading.Event | None:
    """Start this process's sweeper thread once; return the event that stops it."""
    if _started.is_set():
        return None
    _started.set()
    stop = threading.Event()
    threading.Thread(target=_loop, args=(stop,), name="turn-sweeper", daemon=True).start()
    return stop
