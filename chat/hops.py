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
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection, transaction

logger = logging.getLogger(__name__)

Batch = Callable[[list[tuple[tuple, dict]]], list[tuple[bool, Any]]]
Call = tuple[Callable[..., Any], tuple, dict, asyncio.Future, bool, Batch | None]  # ..., shared_commit, batch


def _run_all(calls: list[Call]) -> list[tuple[bool, Any]]:
    """Run each call on the database thread; (True, result) or (False, its exception), in call order.

    On PostgreSQL the calls made with `shared_commit` share one transaction,
    each in a savepoint of its own, after the other calls: one commit (one
    WAL flush) for all of them, in the order of their thread ids, and a
    call that fails rolls back alone. When
    that transaction itself is lost (a broken connection, a failed commit),
    each of its calls fails with the error, to be retried by its caller
    (chat.retry). Calls with a batched twin (see hop) go through it first.
    A caller awaits its call, so no caller sees its own calls reordered.
    """
    outcomes: list[tuple[bool, Any] | None] = _run_batches(calls)
    left = [i for i, outcome in enumerate(outcomes) if outcome is None]
    shared = [i for i in left if calls[i][4]] if connection.vendor == "postgresql" else []
    shared.sort(key=lambda i: calls[i][1][0])  # by thread id: every process locks thread rows in one order
    alone = set(left) - set(shared) if len(shared) >= 2 else set(left)
    for i in sorted(alone):
        outcomes[i] = _outcome(calls[i])
    if len(shared) < 2:
        return [outcome for outcome in outcomes if outcome is not None]
    try:
        with transaction.atomic():
            for i in shared:
                fn, args, kwargs, *_ = calls[i]
                outcomes[i] = in_savepoint(fn, *args, **kwargs)
    except Exception as exc:
        for i in shared:
            outcomes[i] = (False, exc)
    return [outcome for outcome in outcomes if outcome is not None]


def in_savepoint(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """Run `fn` in a savepoint of the open transaction: (True, result), or (False, exception) rolled back alone.

    Raises when the savepoint could not even be rolled back: the whole
    transaction is lost, and its caller's calls fail (or run one by one).
    """
    try:
        with transaction.atomic():
            return True, fn(*args, **kwargs)
    except Exception as exc:
        if connection.needs_rollback:
            raise
        return False, exc


def _run_batches(calls: list[Call]) -> list[tuple[bool, Any] | None]:
    """Run the calls that have a batched twin through it, in one transaction per twin; None for the others.

    When the twin fails as a whole (its transaction was lost, a concurrent
    writer broke a constraint), its calls are left to run one by one.
    """
    outcomes: list[tuple[bool, Any] | None] = [None] * len(calls)
    twins: dict[Batch, list[int]] = {}
    for i, call in enumerate(calls):
        if call[5] is not None:
            twins.setdefault(call[5], []).append(i)
    for batch, indexes in twins.items():
        if len(indexes) < 2:
            continue
        try:
            with transaction.atomic():
                results = batch([(calls[i][1], calls[i][2]) for i in indexes])
        except Exception:
            logger.warning("a batch of %d %s failed; its calls run one by one", len(indexes), calls[indexes[0]][0])
            continue
        for i, outcome in zip(indexes, results, strict=True):
            outcomes[i] = outcome
    return outcomes


def _outcome(call: Call) -> tuple[bool, Any]:
    fn, args, kwargs, *_ = call
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

    async def call(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, shared_commit: bool, batch: Batch | None
    ) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.calls.append((fn, args, kwargs, future, shared_commit, batch))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._drain(), name="database-hops")
        return await future

    async def _drain(self) -> None:
        while self.calls:
            batch, self.calls = self.calls, []
            try:
                outcomes = await _run_hop(batch)
            except BaseException as exc:  # the hop itself failed (or this task is cancelled): so did its calls
                for _, _, _, future, *_ in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                raise
            for (_, _, _, future, *_), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller stopped waiting
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HopQueue] = weakref.WeakKeyDictionary()


def hop[**P, R](
    fn: Callable[P, R], shared_commit: bool = False, batch: Batch | None = None
) -> Callable[P, Awaitable[R]]:
    """The async twin of `fn`, run on Channels' database thread in a hop shared with other calls.

    `shared_commit`: on PostgreSQL, `fn` may commit together with the hop's
    other such calls (see _run_all). Only for writes that insert rows and
    update the row of the thread named by their first argument: a hop runs
    them in thread order, so that the hops of different processes lock
    threads in one order; a shared transaction that also locked existing
    message rows could deadlock with a delta writer, which locks those in
    an order of its own.

    `batch`: the batched twin of `fn`, given the (args, kwargs) of several
    calls of one hop and returning each one's outcome, (True, result) or
    (False, exception), in that order; it runs in a transaction of its own.
    """

    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        queue = _queues.get(loop)
        if queue is None:
            queue = _queues[loop] = HopQueue()
        return await queue.call(fn, args, kwargs, shared_commit, batch)

    call.__name__ = getattr(fn, "__name__", "hop")
    call.__doc__ = fn.__doc__
    return call
