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
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from .hops import Batch, hop

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


def own_thread(name: str) -> ThreadPoolExecutor:
    """A thread of its own for some writes, with its own database connection (kept as CONN_MAX_AGE says).

    Channels runs every other database call of the process on one thread;
    writes given their own thread never queue behind those calls.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


def _with_old_connections_closed[**P, R](write: Callable[P, R]) -> Callable[P, R]:
    """Close obsolete connections around `write`, as Channels does around each database call."""

    @functools.wraps(write)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return write(*args, **kwargs)
        finally:
            close_old_connections()

    return call


def aretrying[**P, R](
    write: Callable[P, R],
    window: str = "DB_OUTAGE_SECONDS",
    thread: ThreadPoolExecutor | None = None,
    shared_commit: bool = False,
    batch: Batch | None = None,
) -> Callable[P, Awaitable[R]]:
    """The async twin of `write`, retried through a database outage of up to the setting named `window` (seconds).

    It runs on Channels' database thread in a shared hop (chat.hops, where
    `shared_commit` and `batch` are explained), or on `thread` (see own_thread).
    """
    if thread is None:
        call = hop(_on_fresh_connection(write), shared_commit, batch)
    else:
        attempt = _with_old_connections_closed(_on_fresh_connection(write))
        call = SyncToAsync(attempt, thread_sensitive=False, executor=thread)

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
