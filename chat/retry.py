"""Async twins of database writes that ride out a short database outage (a PostgreSQL restart).

A write that fails because the connection was lost (OperationalError,
InterfaceError) is tried again with bounded exponential backoff, on a fresh
connection, for up to settings.DB_OUTAGE_SECONDS; then the error surfaces.
The backoff waits on the event loop, never on Channels' one database
thread, so the other turns of the process are not held up by it. Only a
write that did not commit is retried: a write that is not idempotent must
say how a retry finds its first commit (see chat.turns.append_content).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

RETRIED = (OperationalError, InterfaceError)
FIRST_DELAY = 0.05
LONGEST_DELAY = 1.0


def _on_fresh_connection[**P, R](write: Callable[P, R]) -> Callable[P, R]:
    """Run `write`; when the connection failed, close it so that the next attempt opens a new one."""

    @functools.wraps(write)
    def attempt(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return write(*args, **kwargs)
        except RETRIED:
            if not connection.in_atomic_block:
                connection.close()
            raise

    return attempt


def aretrying[**P, R](write: Callable[P, R], window: str = "DB_OUTAGE_SECONDS") -> Callable[P, Awaitable[R]]:
    """The async twin of `write`, retried through a database outage of up to the setting named `window` (seconds)."""
    call = database_sync_to_async(_on_fresh_connection(write))

    @functools.wraps(write)
    async def retried(*args: P.args, **kwargs: P.kwargs) -> R:
        deadline = time.monotonic() + getattr(settings, window)
        delay = FIRST_DELAY
        while True:
            try:
                return await call(*args, **kwargs)
            except RETRIED as exc:
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning("%s failed (%s); retrying in %.2f s", write.__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, LONGEST_DELAY)

    return retried
