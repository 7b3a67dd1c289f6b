"""Database calls that share hops to Channels' database thread.

Channels runs every `database_sync_to_async` call of a process on one
thread, one hop at a time; each hop costs two thread switches and the
close-old-connections checks, whatever the call. `hop(fn)` is its batching
twin: calls made while a hop is in flight wait together and run, in the
order they were made, in the next one. Each call keeps its own result and
exception; on PostgreSQL the hop's calls also share one commit (see
_run_all). A burst of turn starts then costs a few hops and commits instead
of several per turn.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection, transaction

Call = tuple[Callable[..., Any], tuple, dict, asyncio.Future]


def _run_all(calls: list[Call]) -> list[tuple[bool, Any]]:
    """Run each call in order on the database thread; (True, result) or (False, its exception).

    On PostgreSQL the calls of a hop share one transaction, each in a
    savepoint of its own: one commit (one WAL flush) for the whole hop, and
    a call that fails rolls back alone. When the transaction itself is lost
    (a broken connection, a failed commit), every call of the hop fails with
    that error, to be retried by its caller (chat.retry).
    """
    if len(calls) == 1 or connection.vendor != "postgresql":
        return [_outcome(call) for call in calls]
    outcomes: list[tuple[bool, Any]] = []
    try:
        with transaction.atomic():
            for call in calls:
                try:
                    with transaction.atomic():
                        outcomes.append(_outcome(call, raise_errors=True))
                except Exception as exc:
                    if connection.needs_rollback:  # its savepoint could not even be rolled back
                        raise
                    outcomes.append((False, exc))
    except Exception as exc:
        return [(False, exc)] * len(calls)
    return outcomes


def _outcome(call: Call, raise_errors: bool = False) -> tuple[bool, Any]:
    fn, args, kwargs, _ = call
    if raise_errors:
        return True, fn(*args, **kwargs)
    try:
        return True, fn(*args, **kwargs)
    except Exception as exc:
        return False, exc


_run_hop = database_sync_to_async(_run_all)


class HopQueue:
    """One event loop's calls waiting for the database thread, and the task that takes them there."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.task: asyncio.Task | None = None

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.calls.append((fn, args, kwargs, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain(), name="database-hops")
        return await future

    async def _drain(self) -> None:
        while self.calls:
            batch, self.calls = self.calls, []
            try:
                outcomes = await _run_hop(batch)
            except BaseException as exc:  # the hop itself failed (or this task is cancelled): so did its calls
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                raise
            for (*_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller stopped waiting
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HopQueue] = weakref.WeakKeyDictionary()


def hop[**P, R](fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """The async twin of `fn`, run on Channels' database thread in a hop shared with other calls."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        queue = _queues.get(loop)
        if queue is None:
            queue = _queues[loop] = HopQueue()
        return await queue.call(fn, *args, **kwargs)

    call.__name__ = getattr(fn, "__name__", "hop")
    call.__doc__ = fn.__doc__
    return call
